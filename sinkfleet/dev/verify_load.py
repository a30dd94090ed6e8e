"""Did a published load land as each sink mode promises? (the demo's and the chaos
suite's final check)

* append: every published id stored exactly once;
* state: for every id, the latest row is the newest version published and not deleted
  afterwards, and deleted ids are gone (publication order is offset order: an id
  lives on one partition);
* audit: every entry stored once, and every chain verifies;
* merge: one row per id, each CRDT column equal to the join of every replica's
  published state, computed here in Python (docs/merge-mode.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.hashing import content_hash
from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.catalogue.audit import hash_field
from sinkfleet.config import Settings
from sinkfleet.dev.synthetic.base import Tombstone
from sinkfleet.keys import join_key
from sinkfleet.ops.audit.verify import verify
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import quote_ident
from sinkfleet.worker.rows import RowBuilder


@dataclass
class FamilyCheck:
    family: str
    sink: str
    mode: str
    published: int
    tombstones: int
    expected: int  # rows that must exist for this load
    stored: int  # of those, found
    missing: int
    duplicates: int
    wrong: int  # state: a stale or deleted version; audit: broken chains
    note: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.wrong)


def expected_state(items: Iterable[tuple[tuple[Any, ...], int] | Tombstone]
                   ) -> tuple[dict[tuple[Any, ...], int], set[tuple[Any, ...]]]:
    """(id → version the latest row must have, ids that must be absent) from updates
    ``(id, version)`` and tombstones in offset order (docs/sink-modes.md)."""
    newest: dict[tuple[Any, ...], int] = {}
    deleted: dict[tuple[Any, ...], int] = {}
    latest: dict[tuple[Any, ...], int] = {}
    for item in items:
        if isinstance(item, Tombstone):
            key = tuple(item.key)
            latest.pop(key, None)
            deleted[key] = newest.get(key, 0)
            continue
        key, version = item
        newest[key] = max(newest.get(key, 0), version)
        if version > deleted.get(key, -1) and version > latest.get(key, -1):
            latest[key] = version
    gone = {k for k in deleted if k not in latest}
    return latest, gone


class _Ids:
    """The id (and version) a record has in a sink, as PostgreSQL returns them."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.codec = Codec(sink.schema, SchemaStore())
        self.build = RowBuilder(sink)
        names = self.build.names
        self.at = [names.index(c) for c in sink.spec.id]
        self.version_at = (names.index(sink.spec.state.version)
                           if sink.spec.state is not None else None)
        types = {c.name: c.pg_type for c in sink.columns}
        self.types = [types[c] for c in sink.spec.id]
        self.hash_field = hash_field(sink) if sink.spec.audit is not None else None

    def of(self, record: dict[str, Any]) -> tuple[tuple[Any, ...], int | None]:
        if self.hash_field is not None and record.get(self.hash_field) is None:
            # as the publisher sent it (it fills audit hashes on a copy)
            record = {**record, self.hash_field: content_hash(record, self.sink.schema,
                                                              self.hash_field)}
        row = self.build(self.codec.decode(self.codec.encode(record)))  # as stored
        version = None if self.version_at is None else row[self.version_at]
        return tuple(row[i] for i in self.at), version

    def tombstone(self, item: Tombstone) -> Tombstone:
        """The tombstone with its id typed as the worker parses it from the key."""
        return Tombstone(tuple(self.build.tombstone(join_key(item.key))))


async def _found(settings: Settings, ids: _Ids, keys: list[tuple[Any, ...]]
                 ) -> dict[tuple[Any, ...], tuple[int, Any]]:
    """id → (rows with it, version of the latest row or None) for ``keys``."""
    spec = ids.sink.spec
    q = quote_ident
    cols = [q(c) for c in spec.id]
    params = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(ids.types))
    on = " AND ".join(f"t.{c} = k.c{i}" for i, c in enumerate(cols))
    version = f"max(t.{q(spec.state.version)})" if spec.state is not None else "NULL"
    sql = (f"SELECT {', '.join(f'k.c{i}' for i in range(len(cols)))}, count(*) AS n,"
           f" {version} AS v FROM unnest({params}) AS k("
           + ", ".join(f"c{i}" for i in range(len(cols)))
           + f") JOIN {spec.qualified_table} t ON {on} GROUP BY "
           + ", ".join(f"k.c{i}" for i in range(len(cols))))
    async with pg(settings) as conn:
        rows = await conn.fetch(sql, *[[k[i] for k in keys] for i in range(len(cols))])
    n = len(cols)
    return {tuple(r)[:n]: (r["n"], r["v"]) for r in rows}


def joined(kind: str, values: list[Any]) -> Any:
    """The value a merge sink's CRDT column holds after joining ``values`` — the
    ``(replica, value)`` pairs published for one id (a Python model of the SQL joins)."""
    present = [(r, v) for r, v in values if v is not None]
    if kind == "g_counter":
        best: dict[Any, int] = {}
        for r, v in present:
            best[r] = max(best.get(r, 0), v)
        return sum(best.values())
    if kind == "pn_counter":
        pn: dict[Any, tuple[int, int]] = {}
        for r, v in present:
            p, n = pn.get(r, (0, 0))
            pn[r] = (max(p, v["increments"]), max(n, v["decrements"]))
        return sum(p - n for p, n in pn.values())
    if kind == "g_set":
        return sorted({e for _, v in present for e in v})
    if kind == "or_set":
        removed = {t for _, v in present for t in v["removes"]}
        return sorted({e for _, v in present for e, tags in v["adds"].items()
                       for t in tags if t not in removed})
    if kind == "max":
        return max((v for _, v in present), default=None)
    raise ValueError(f"no model of CRDT kind {kind!r}")


async def _check_merge(settings: Settings, ids: _Ids, records: list[dict[str, Any]],
                       check: FamilyCheck) -> None:
    sink = ids.sink
    merge = sink.spec.merge
    assert merge is not None
    source = {c.name: c.source.path[0] for c in sink.columns if c.source is not None}
    inputs: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in records:
        key, _ = ids.of(record)
        inputs.setdefault(key, []).append(ids.codec.decode(ids.codec.encode(record)))
    expected = {key: {col: joined(kind, [(r[source[merge.replica]], r[source[col]])
                                         for r in rs])
                      for col, kind in merge.crdts.items()}
                for key, rs in inputs.items()}
    q = quote_ident
    cols = [q(c) for c in sink.spec.id]
    params = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(ids.types))
    on = " AND ".join(f"t.{c} = k.c{i}" for i, c in enumerate(cols))
    keys = list(expected)
    sql = (f"SELECT {', '.join(f't.{c}' for c in cols)}, "
           + ", ".join(f"t.{q(c)}" for c in merge.crdts)
           + f" FROM unnest({params}) AS k({', '.join(f'c{i}' for i in range(len(cols)))})"
           f" JOIN {sink.spec.qualified_table} t ON {on}")
    async with pg(settings) as conn:
        rows = await conn.fetch(sql, *[[k[i] for k in keys] for i in range(len(cols))])
    n = len(cols)
    found = {tuple(r)[:n]: {c: r[c] for c in merge.crdts} for r in rows}
    check.expected = len(expected)
    check.stored = sum(1 for k in expected if k in found)
    check.missing = check.expected - check.stored
    check.wrong = sum(1 for k, v in expected.items() if k in found and found[k] != v)
    check.note = "joins ok" if not check.wrong else "rows differ from the join"


async def check_load(settings: Settings, catalogue: Catalogue,
                     published: Iterable[tuple[str, Any]]) -> list[FamilyCheck]:
    """Check ``(family, record or Tombstone)`` items against every sink they feed."""
    by_family: dict[str, list[Any]] = {}
    for family, item in published:
        by_family.setdefault(family, []).append(item)
    checks = []
    tenants_checked = False
    for family, items in sorted(by_family.items()):
        topic = catalogue.topic_for_family(family)
        for sink in (s for s in catalogue.sinks.values() if s.topic.name == topic.name):
            ids = _Ids(sink)
            tombstones = [ids.tombstone(i) for i in items if isinstance(i, Tombstone)]
            updates = [ids.of(i) for i in items if not isinstance(i, Tombstone)]
            check = FamilyCheck(family, sink.spec.name, sink.spec.mode, len(items),
                                len(tombstones), 0, 0, 0, 0, 0)
            if sink.spec.merge is not None:
                await _check_merge(settings, ids, [i for i in items
                                                   if not isinstance(i, Tombstone)], check)
            elif sink.spec.state is not None:
                stream: list[Any] = []
                it = iter(updates)
                for item in items:  # keep offset order between updates and tombstones
                    stream.append(ids.tombstone(item) if isinstance(item, Tombstone)
                                  else next(it))
                latest, gone = expected_state(stream)
                found = await _found(settings, ids, [*latest, *gone])
                check.expected = len(latest)
                check.stored = sum(1 for k in latest if k in found)
                check.missing = check.expected - check.stored
                check.wrong = (sum(1 for k, v in latest.items() if k in found
                                   and found[k][1] != v) + sum(1 for k in gone if k in found))
                check.note = "versions ok" if not check.wrong else "stale rows"
            else:
                keys = list(dict.fromkeys(k for k, _ in updates))
                found = await _found(settings, ids, keys)
                check.expected = len(keys)
                check.stored = sum(1 for k in keys if k in found)
                check.missing = check.expected - check.stored
                check.duplicates = sum(n - 1 for n, _ in found.values())
            if sink.spec.audit is not None and not tenants_checked:
                result = await verify(settings, catalogue, sink=sink.spec.name)
                check.wrong = len(result.broken)
                check.note = (f"{result.tenants} chains ok" if result.ok else
                              f"{len(result.broken)} broken link(s) in"
                              f" {result.broken_tenants} chain(s)")
                tenants_checked = True
            checks.append(check)
    return checks
