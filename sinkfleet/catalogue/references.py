"""References between sinks (``references:`` in a sink spec): checked when the catalogue
loads — the target sink exists, and the columns match its id in number and type.

The rows themselves are checked after the fact (``sinkfleet/ops/stats/references.py``):
records of different topics arrive in any order, so a child may be stored before its
parent and must not be refused (docs/references.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sinkfleet.errors import CatalogueError

if TYPE_CHECKING:
    from sinkfleet.catalogue.loader import Catalogue


def check_references(cat: Catalogue) -> None:
    for name, sink in cat.sinks.items():
        types = {c.name: c.pg_type for c in sink.columns}
        for ref in sink.spec.references:
            where = f"sink {name!r}: references {ref.columns} → {ref.sink!r}"
            target = cat.sinks.get(ref.sink)
            if target is None:
                raise CatalogueError(f"{where}: no sink {ref.sink!r} in sinks/ (known:"
                                     f" {', '.join(sorted(cat.sinks))})")
            ids = list(target.spec.id)
            if len(ids) != len(ref.columns):
                raise CatalogueError(
                    f"{where}: {ref.sink!r} is identified by {ids}; name as many columns,"
                    " in that order")
            target_types = {c.name: c.pg_type for c in target.columns}
            for col, id_col in zip(ref.columns, ids, strict=True):
                if types[col] != target_types[id_col]:
                    raise CatalogueError(
                        f"{where}: column {col!r} is {types[col]} but {ref.sink}.{id_col}"
                        f" is {target_types[id_col]}; a reference holds the same type")
