"""State-mode writer: latest version per id (version-guarded), full history, tombstones.

One batch, inside the worker's transaction (docs/sink-modes.md):

1. Record tombstones in the history as deletions of the newest version seen so far
   (the history before this batch, then this batch's updates in offset order); a
   re-delivered tombstone hits UNIQUE (kafka_partition, kafka_offset) and is skipped.
2. COPY the updates (with their Kafka partition and offset) into a staging table and
   record each in the history with its parent: the newest lower version of the same
   id recorded before it (in offset order, so batching cannot change lineage);
   re-delivered updates are skipped the same way.
   Several contents of one (id, version) are a conflict (sinkfleet.sink.state_conflicts):
   only the winner is staged; where the history already holds that version, the
   stored content is read back and the winner replaces it (history, and the latest
   row at that version) or stays; losers go to sinkfleet.state_conflicts.
3. Upsert the newest update per id into the latest table unless the stored version
   is newer or a recorded deletion covers it.
4. Delete the latest rows that the newly recorded deletions cover.

Updates cost a COPY and two set-based statements; tombstones two more round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.keys import join_key
from sinkfleet.sink.changes import RANK_FIELD, Change, Tombstone, Written, row_json
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident
from sinkfleet.sink.state_conflicts import Content, as_time, millis, rank_text, resolve

# The conflicts of every state sink, in one core table (migration 0008).
_RECORD_CONFLICTS = (
    "INSERT INTO sinkfleet.state_conflicts AS c (sink, key, version, loser_hash,"
    " loser_produced_at, loser, winner_hash, winner_produced_at, topic, kafka_partition,"
    " kafka_offset) SELECT $1, d.k, d.v, d.lh, d.lt, d.l, d.wh, d.wt, d.t, d.p, d.o"
    " FROM unnest($2::text[], $3::bigint[], $4::bytea[], $5::timestamptz[], $6::jsonb[],"
    " $7::bytea[], $8::timestamptz[], $9::text[], $10::integer[], $11::bigint[])"
    " AS d(k, v, lh, lt, l, wh, wt, t, p, o)"
    " ON CONFLICT (sink, key, version, loser_hash) DO UPDATE SET"
    " loser_produced_at = greatest(c.loser_produced_at, EXCLUDED.loser_produced_at),"
    " winner_hash = EXCLUDED.winner_hash, winner_produced_at = EXCLUDED.winner_produced_at"
    " RETURNING (xmax = 0) AS new")
# A new winner: it is no longer a loser, and the other losers lost to it.
_NEW_WINNERS = (
    "WITH d AS (SELECT * FROM unnest($2::text[], $3::bigint[], $4::bytea[],"
    " $5::timestamptz[]) AS d(k, v, wh, wt)),"
    " gone AS (DELETE FROM sinkfleet.state_conflicts c USING d WHERE c.sink = $1"
    " AND c.key = d.k AND c.version = d.v AND c.loser_hash = d.wh)"
    " UPDATE sinkfleet.state_conflicts c SET winner_hash = d.wh, winner_produced_at = d.wt"
    " FROM d WHERE c.sink = $1 AND c.key = d.k AND c.version = d.v"
    " AND c.loser_hash <> d.wh")


@dataclass
class _Plan:
    """What a batch's same-version meetings with the history call for."""

    replaced: list[Content] = field(default_factory=list)  # staged winners over stored
    touched: list[tuple[Any, ...]] = field(default_factory=list)  # id…, v, produced, hash
    winners: list[tuple[Any, ...]] = field(default_factory=list)  # key, v, hash, produced
    losers: list[tuple[Any, ...]] = field(default_factory=list)  # state_conflicts rows
    ranks: dict[tuple[Any, ...], str] = field(default_factory=dict)  # (id…, v) → rank
    new_conflicts: int = 0

    def decide(self, w: StateWriter,
               batch: dict[tuple[Any, ...], tuple[Content, list[Content]]],
               groups: dict[tuple[Any, ...], list[Content]],
               stored: dict[tuple[Any, ...], tuple[Content, bool]]) -> None:
        for key, (winner, losers) in batch.items():
            if key in stored:
                old, hashed = stored[key]
                winner, losers = resolve([old, *groups[key]])
                raised = winner.produced_ms > old.produced_ms
                if not winner.stored:
                    self.replaced.append(winner)
                elif raised or not hashed:
                    self.touched.append((*key, as_time(winner.produced_ms), winner.digest))
                if raised or not winner.stored:
                    self.winners.append((w.key_text(key), key[-1], winner.digest,
                                         as_time(winner.produced_ms)))
            self.ranks[key] = rank_text(winner.produced_ms, winner.digest)
            self.losers += [(w.key_text(key), key[-1], c.digest, as_time(c.produced_ms),
                             row_json(c.row, w.jsonb), winner.digest,
                             as_time(winner.produced_ms), *c.source) for c in losers]


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
        self.jsonb = frozenset(c.name for c in sink.columns
                               if c.pg_type == "jsonb" and c.name in self.columns)
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
            " _partition integer NOT NULL, _offset bigint NOT NULL,"
            " _produced_at timestamptz, _hash bytea NOT NULL) ON COMMIT DELETE ROWS;"
            # the parent lookup within the batch: an index scan, not a scan per row
            f" CREATE INDEX IF NOT EXISTS {q(derived_name(self.stage, 'idx'))}"
            f" ON {stage} ({id_list}, {ver})")
        self._history = (
            f"INSERT INTO {hist} ({cols}, parent_version, op, kafka_partition, kafka_offset,"
            " produced_at, content_hash)"
            f" SELECT {s_cols}, GREATEST("
            f"(SELECT max(h.{ver}) FROM {hist} h WHERE {same_id('h', 's')}"
            f" AND h.op = 'upsert' AND h.{ver} < s.{ver}),"
            f" (SELECT max(s2.{ver}) FROM {stage} s2 WHERE {same_id('s2', 's')}"
            f" AND s2.{ver} < s.{ver} AND s2._partition = s._partition"
            f" AND s2._offset < s._offset)), 'upsert', s._partition, s._offset,"
            " s._produced_at, s._hash"
            f" FROM {stage} s ORDER BY s._partition, s._offset ON CONFLICT DO NOTHING"
            f" RETURNING {id_list}, {ver}")
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

        # Same-version conflicts (sinkfleet.sink.state_conflicts): rare paths, run only
        # when the batch met a version already stored.
        content = [c for c in self.columns if c not in self.ids and c != self.version]
        by_ids = " AND ".join(f"h.{q(c)} = d.c{i}" for i, c in enumerate(self.ids))
        self._stored = (
            f"SELECT {', '.join(f'h.{q(c)}' for c in self.columns)}, h.produced_at,"
            " h.content_hash, h.kafka_partition, h.kafka_offset"
            f" FROM {hist} h JOIN unnest({unnest}, ${n + 1}::bigint[])"
            f" AS d({d_names}, v) ON {by_ids} AND h.{ver} = d.v WHERE h.op = 'upsert'")
        picked = (f"FROM {stage} s JOIN unnest($1::integer[], $2::bigint[]) AS r(p, o)"
                  " ON s._partition = r.p AND s._offset = r.o")
        set_content = ", ".join(f"{q(c)} = s.{q(c)}" for c in content)
        self._replace_history = (
            f"UPDATE {hist} h SET {set_content + ', ' if content else ''}"
            " produced_at = s._produced_at, content_hash = s._hash,"
            " kafka_partition = s._partition, kafka_offset = s._offset, recorded_at = now()"
            f" {picked} WHERE {same_id('h', 's')} AND h.{ver} = s.{ver} AND h.op = 'upsert'")
        self._replace_latest = (
            f"UPDATE {latest} l SET {set_content or f'{ver} = s.{ver}'} {picked}"
            f" WHERE {same_id('l', 's')} AND l.{ver} = s.{ver} RETURNING l.*")
        self._touch_history = (
            f"UPDATE {hist} h SET produced_at = d.t, content_hash = d.x"
            f" FROM unnest({unnest}, ${n + 1}::bigint[],"
            f" ${n + 2}::timestamptz[], ${n + 3}::bytea[])"
            f" AS d({d_names}, v, t, x) WHERE {by_ids} AND h.{ver} = d.v"
            " AND h.op = 'upsert'")

    def key_text(self, key: tuple[Any, ...]) -> str:
        """The id of an (id…, version) key as its Kafka key."""
        return join_key(key[:-1]).decode()

    async def prepare(self, conn: asyncpg.Connection) -> None:
        await conn.execute(self._create_stage)

    async def write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                    sources: Sequence[Any]) -> Written:
        """Apply updates and tombstones in offset order; say how many versions were
        recorded (new ones, and stored ones a conflict's winner replaced), what became
        the latest (for the caches) and how many conflicts were newly recorded."""
        if not rows:
            return Written()
        groups: dict[tuple[Any, ...], list[Content]] = {}  # (id…, version) → contents
        tombstones = False
        for row, msg in zip(rows, sources, strict=True):
            if isinstance(row, Tombstone):
                tombstones = True
                continue
            named = dict(zip(self.columns, row, strict=True))
            key = (*(row[i] for i in self._id_at), row[self._version_at])
            groups.setdefault(key, []).append(Content.of(
                named, self.jsonb, getattr(msg, "timestamp", None),
                (getattr(msg, "topic", self.sink.topic.name), msg.partition, msg.offset)))
        recorded = 0
        deleted: list[tuple[Any, ...]] = []
        if tombstones:  # first: the versions they delete are those before this batch
            deleted = await self._record_tombstones(conn, rows, sources)
            recorded += len(deleted)
        # Earlier writes of this transaction (isolation halves) may have filled the stage.
        await conn.execute(f"TRUNCATE {quote_ident(self.stage)}")
        upserted: list[asyncpg.Record] = []
        plan = _Plan()
        if groups:
            # One row per (id, version) goes on: the batch's winner (the rule is
            # associative, so resolving the batch first and the stored row next is
            # the same as resolving all at once).
            winners = {k: resolve(cs) for k, cs in groups.items()}
            await conn.copy_records_to_table(
                self.stage, records=[self._staged(w) for w, _ in winners.values()],
                columns=[*self.columns, "_partition", "_offset", "_produced_at", "_hash"])
            new = {tuple(r) for r in await conn.fetch(self._history)}
            recorded += len(new)
            plan.decide(self, winners, groups, await self._stored_of(
                conn, [k for k in winners if k not in new]))
            recorded += len(plan.replaced)
            upserted = await self._apply(conn, plan)
            upserted += await conn.fetch(self._upsert)
        if deleted:
            n = len(self.ids)
            await conn.execute(self._delete, *[[d[i] for d in deleted] for i in range(n)],
                               [d[n] for d in deleted])
        written = Written(recorded)
        if self._cached:
            written.changes = [Change("delete", dict(zip((*self.ids, self.version), d,
                                                         strict=True))) for d in deleted
                               ] + [self._change(r, plan.ranks) for r in upserted]
        written.conflicts = plan.new_conflicts
        return written

    def _staged(self, c: Content) -> tuple[Any, ...]:
        return (*(c.row[n] for n in self.columns), c.source[1], c.source[2],
                as_time(c.produced_ms), c.digest)

    def _change(self, row: asyncpg.Record, ranks: dict[tuple[Any, ...], str]) -> Change:
        """An upsert for the cache, with its rank (the cache decides a same-version
        write by it, as PostgreSQL did)."""
        named = dict(row)
        named[RANK_FIELD] = ranks[(*(named[c] for c in self.ids), named[self.version])]
        return Change("upsert", named)

    async def _stored_of(self, conn: asyncpg.Connection, keys: list[tuple[Any, ...]]
                         ) -> dict[tuple[Any, ...], tuple[Content, bool]]:
        """The stored content (history) of these (id…, version) keys, and whether its
        hash was stored (rows recorded before ranks have none)."""
        if not keys:
            return {}
        n = len(self.ids)
        found = await conn.fetch(self._stored, *[[k[i] for k in keys] for i in range(n + 1)])
        stored = {}
        topic = self.sink.topic.name
        for rec in found:
            named = {c: rec[c] for c in self.columns}
            key = (*(named[c] for c in self.ids), named[self.version])
            digest = rec["content_hash"]
            stored[key] = (Content.of(
                named, self.jsonb, millis(rec["produced_at"]),
                (topic, rec["kafka_partition"], rec["kafka_offset"]),
                digest=bytes(digest) if digest is not None else None, stored=True),
                digest is not None)
        return stored

    async def _apply(self, conn: asyncpg.Connection, plan: _Plan) -> list[asyncpg.Record]:
        """Replace the stored contents that lost, raise timestamps, record conflicts;
        return the latest rows replaced at their own version."""
        replaced: list[asyncpg.Record] = []
        if plan.replaced:
            picked = ([c.source[1] for c in plan.replaced], [c.source[2] for c in plan.replaced])
            await conn.execute(self._replace_history, *picked)
            replaced = await conn.fetch(self._replace_latest, *picked)
        if plan.touched:
            n = len(self.ids)
            await conn.execute(self._touch_history,
                               *[[t[i] for t in plan.touched] for i in range(n + 3)])
        if plan.winners:
            await conn.execute(_NEW_WINNERS, self.sink.spec.name,
                               *[[w[i] for w in plan.winners] for i in range(4)])
        if plan.losers:
            news = await conn.fetch(_RECORD_CONFLICTS, self.sink.spec.name,
                                    *[[r[i] for r in plan.losers] for i in range(10)])
            plan.new_conflicts = sum(1 for r in news if r["new"])
        return replaced

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
