"""What a merge sink's columns must be (pure: the catalogue's checks of docs/merge-mode.md).

Each CRDT column comes from a field of a fixed shape, so every language's producer
writes the same state and the SQL merge (migration 0011) can read it:

* ``g_counter``: an int or long, the writing replica's own count so far (never less
  than it published before);
* ``pn_counter``: a record ``{increments: long, decrements: long}``, the replica's totals;
* ``g_set``: an array of strings, elements added;
* ``or_set``: a record ``{adds: map<array<string>>, removes: array<string>}``: element →
  its add tags (unique, e.g. ``<replica>:<n>``), and the add tags observed removed;
* ``max``: any ordered scalar (a number, text, a time): the greatest value seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sinkfleet.catalogue.models import SinkSpec
from sinkfleet.errors import CatalogueError

if TYPE_CHECKING:
    from sinkfleet.catalogue.loader import Column

_COUNTS = {"smallint", "integer", "bigint"}
_ORDERED = {"smallint", "integer", "bigint", "real", "double precision", "numeric", "text",
            "uuid", "timestamptz", "timestamp", "date", "time"}
PN_FIELDS = ("increments", "decrements")
OR_SET_FIELDS = ("adds", "removes")


def _fields(avro_type: Any) -> dict[str, Any]:
    if isinstance(avro_type, dict) and avro_type.get("type") == "record":
        return {f["name"]: f["type"] for f in avro_type["fields"]}
    return {}


def _is(avro_type: Any, *kinds: str) -> bool:
    """A non-null Avro type of one of ``kinds`` (a primitive, plain or in a dict)."""
    if isinstance(avro_type, dict) and not avro_type.get("logicalType"):
        avro_type = avro_type.get("type")
    return avro_type in kinds


def _array_of_strings(avro_type: Any) -> bool:
    return (isinstance(avro_type, dict) and avro_type.get("type") == "array"
            and _is(avro_type["items"], "string"))


def _shape_ok(kind: str, col: Column) -> bool:
    assert col.source is not None
    avro = col.source.avro_type
    if kind == "g_counter":
        return col.pg_type in _COUNTS
    if kind == "pn_counter":
        fields = _fields(avro)
        return (col.pg_type == "jsonb" and set(fields) == set(PN_FIELDS)
                and all(_is(fields[f], "int", "long") for f in PN_FIELDS))
    if kind == "g_set":
        return col.pg_type == "text[]" and _array_of_strings(avro)
    if kind == "or_set":
        fields = _fields(avro)
        adds = fields.get("adds")
        return (col.pg_type == "jsonb" and set(fields) == set(OR_SET_FIELDS)
                and isinstance(adds, dict) and adds.get("type") == "map"
                and _array_of_strings(adds["values"]) and _array_of_strings(fields["removes"]))
    return col.pg_type in _ORDERED  # max


_SHAPES = {
    "g_counter": "an int or long (the replica's count so far)",
    "pn_counter": "a record {increments: long, decrements: long} stored as jsonb",
    "g_set": "an array of strings",
    "or_set": "a record {adds: map<array<string>>, removes: array<string>} stored as jsonb",
    "max": "an ordered scalar (number, text, uuid, time)",
}


def check_merge(spec: SinkSpec, columns: list[Column], where: Path) -> None:
    """Refuse a merge sink whose replica or CRDT columns have the wrong shape."""
    assert spec.merge is not None
    by_name = {c.name: c for c in columns}
    replica = by_name[spec.merge.replica]
    if replica.source is None or replica.pg_type not in ("text", "uuid") or replica.nullable:
        raise CatalogueError(f"{where}: merge.replica {replica.name!r} must come from a"
                             " non-null string or uuid field")
    for name, kind in spec.merge.crdts.items():
        col = by_name[name]
        if col.source is None or not _shape_ok(kind, col):
            raise CatalogueError(
                f"{where}: column {name!r} is a {kind}: it must come from"
                f" {_SHAPES[kind]} (it is {col.pg_type}; docs/merge-mode.md)")
