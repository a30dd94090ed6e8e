"""State-mode writer: latest version per id (version-guarded), full history, tombstones.

One batch, inside the worker's transaction (docs/sink-modes.md):

1. Record tombstones in the history as deletions of the newest version seen so far
   (the history before this batch, then this batch's updates in offset order); a
   re-delivered tombstone hits UNIQUE (kafka_partition, kafka_offset) and is skipped.
2. COPY the updates (with their Kafka partition and offset) into a staging table and
   record each in the history with its parent: the newest lower version of the same
   id recorded before it (in offset order, so batching cannot change lineage);
   re-delivered updates are skipped the same way.
3. Upsert the newest update per id into the latest table unless the stored version
   is newer or a recorded deletion covers it.
4. Delete the latest rows that the newly recorded deletions cover.

Updates cost a COPY and two set-based statements; tombstones two more round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.sink.changes import Change, Written
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident
from sinkfleet.worker.rows import Tombstone


class StateWriter:
    def __init__(self, sink: Sink, columns: Sequence[str]) -> None:
        spec = sink.spec
        assert spec.state is not None
        self.sink = sink
        self.columns = list(columns)
        self._cached = spec.cache is not None and spec.cache.latest
        self.ids = list(spec.id)
        self.version = spec.state.version
        self._version_at = self.columns.index(self.version)
        self._id_at = [self.columns.index(c) for c in self.ids]
        types = {c.name: c.pg_type for c in sink.columns}
        self._id_types = [types[c] for c in self.ids]
        self.stage = derived_name("sinkfleet_stage", spec.name)
        q = quote_ident
        latest = spec.qualified_table
        hist = f"{q(spec.db_schema)}.{q(spec.history_table)}"
        stage = q(self.stage)
        cols = ", ".join(q(c) for c in self.columns)
        s_cols = ", ".join(f"s.{q(c)}" for c in self.columns)
        ver = q(self.version)
        id_list = ", ".join(q(c) for c in self.ids)

        def same_id(a: str, b: str) -> str:
            return " AND ".join(f"{a}.{q(c)} = {b}.{q(c)}" for c in self.ids)

        self._create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {latest} INCLUDING DEFAULTS,"
            " _partition integer NOT NULL, _offset bigint NOT NULL) ON COMMIT DELETE ROWS;"
            # the parent lookup within the batch: an index scan, not a scan per row
            f" CREATE INDEX IF NOT EXISTS {q(derived_name(self.stage, 'idx'))}"
            f" ON {stage} ({id_list}, {ver})")
        self._history = (
            f"INSERT INTO {hist} ({cols}, parent_version, op, kafka_partition, kafka_offset)"
            f" SELECT {s_cols}, GREATEST("
            f"(SELECT max(h.{ver}) FROM {hist} h WHERE {same_id('h', 's')}"
            f" AND h.op = 'upsert' AND h.{ver} < s.{ver}),"
            f" (SELECT max(s2.{ver}) FROM {stage} s2 WHERE {same_id('s2', 's')}"
            f" AND s2.{ver} < s.{ver} AND s2._partition = s._partition"
            f" AND s2._offset < s._offset)), 'upsert', s._partition, s._offset"
            f" FROM {stage} s ORDER BY s._partition, s._offset ON CONFLICT DO NOTHING")
        updates = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in self.columns
                            if c not in self.ids)
        self._upsert = (
            f"INSERT INTO {latest} AS l ({cols})"
            f" SELECT DISTINCT ON ({id_list}) {s_cols} FROM {stage} s"
            f" WHERE NOT EXISTS (SELECT 1 FROM {hist} h WHERE {same_id('h', 's')}"
            f" AND h.op = 'delete' AND h.{ver} >= s.{ver})"
            f" ORDER BY {', '.join(f's.{q(c)}' for c in self.ids)}, s.{ver} DESC,"
            f" s._offset DESC"
            f" ON CONFLICT ({id_list}) DO UPDATE SET {updates} WHERE l.{ver} < EXCLUDED.{ver}"
            " RETURNING *")
        unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(self._id_types))
        n = len(self.ids)
        d_cols = ", ".join(f"d.c{i}" for i in range(n))
        d_names = ", ".join(f"c{i}" for i in range(n))
        self._max_versions = (
            f"SELECT {d_cols}, (SELECT max(h.{ver}) FROM {hist} h WHERE "
            + " AND ".join(f"h.{q(c)} = d.c{i}" for i, c in enumerate(self.ids))
            + f") FROM unnest({unnest}) AS d({d_names})")
        self._record_deletes = (
            f"INSERT INTO {hist} ({id_list}, {ver}, parent_version, op, kafka_partition,"
            f" kafka_offset) SELECT {d_cols}, d.v, d.v, 'delete', d.p, d.o"
            f" FROM unnest({unnest}, ${n + 1}::bigint[], ${n + 2}::integer[],"
            f" ${n + 3}::bigint[]) AS d({d_names}, v, p, o)"
            f" ON CONFLICT DO NOTHING RETURNING {id_list}, {ver}")
        self._delete = (
            f"DELETE FROM {latest} l USING unnest({unnest}, ${n + 1}::bigint[])"
            f" AS d({d_names}, v) WHERE "
            + " AND ".join(f"l.{q(c)} = d.c{i}" for i, c in enumerate(self.ids))
            + f" AND l.{ver} <= d.v")

    async def prepare(self, conn: asyncpg.Connection) -> None:
        await conn.execute(self._create_stage)

    async def write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                    sources: Sequence[Any]) -> Written:
        """Apply updates and tombstones in offset order; say how many versions were
        recorded, and what became the latest (for the caches)."""
        if not rows:
            return Written()
        updates, tombstones = [], []
        for row, msg in zip(rows, sources, strict=True):
            if isinstance(row, Tombstone):
                tombstones.append((row, msg))
            else:
                updates.append((*row, msg.partition, msg.offset))
        recorded = 0
        deleted: list[tuple[Any, ...]] = []
        if tombstones:  # first: the versions they delete are those before this batch
            deleted = await self._record_tombstones(conn, rows, sources)
            recorded += len(deleted)
        # Earlier writes of this transaction (isolation halves) may have filled the stage.
        await conn.execute(f"TRUNCATE {quote_ident(self.stage)}")
        if updates:
            await conn.copy_records_to_table(
                self.stage, records=updates, columns=[*self.columns, "_partition", "_offset"])
            recorded += int((await conn.execute(self._history)).rsplit(" ", 1)[1])
        upserted = await conn.fetch(self._upsert) if updates else []
        if deleted:
            n = len(self.ids)
            await conn.execute(self._delete, *[[d[i] for d in deleted] for i in range(n)],
                               [d[n] for d in deleted])
        written = Written(recorded)
        if self._cached:
            written.changes = [Change("delete", dict(zip((*self.ids, self.version), d,
                                                         strict=True))) for d in deleted]
            written.changes += [Change("upsert", dict(r)) for r in upserted]
        return written

    async def _record_tombstones(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                                 sources: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Deletions recorded now (re-delivered tombstones are not): (id…, version)."""
        ids = list({tuple(r) for r in rows if isinstance(r, Tombstone)})
        n = len(self.ids)
        known = {tuple(rec)[:n]: rec[n] for rec in await conn.fetch(
            self._max_versions, *[[i[k] for i in ids] for k in range(n)])}
        newest: dict[tuple[Any, ...], int] = {}
        deletions = []
        for row, msg in zip(rows, sources, strict=True):  # offset order
            if isinstance(row, Tombstone):
                key = tuple(row)
                version = max(newest.get(key, 0), known.get(key) or 0)
                deletions.append((*key, version, msg.partition, msg.offset))
            else:
                key = tuple(row[i] for i in self._id_at)
                newest[key] = max(newest.get(key, 0), row[self._version_at])
        args = [[d[k] for d in deletions] for k in range(n + 3)]
        return [tuple(r) for r in await conn.fetch(self._record_deletes, *args)]
