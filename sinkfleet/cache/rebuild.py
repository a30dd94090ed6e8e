"""Restore caches from PostgreSQL, the source of truth: a whole sink, or single keys.

Both are safe while workers keep writing. ``latest`` entries go through the same
compare-and-set script as live writes (a rebuild never puts an older version over a
newer one), and each chunk is checked against PostgreSQL *after* it is written: an id
deleted meanwhile is deleted again, so a rebuild cannot resurrect it. ``recent`` keys
are only ever added to (every cached member is a stored row), then trimmed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from sinkfleet.cache.layout import HASH_FIELD, PRODUCED_FIELD, CacheLayout
from sinkfleet.cache.store import REDIS_ERRORS, CacheStore, delete_prefix, redis_client, redis_error
from sinkfleet.catalogue import Sink
from sinkfleet.config import Settings
from sinkfleet.errors import MigrationError
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import quote_ident as q

CHUNK = 1000
_TIME_TYPES = ("timestamptz", "date")


@dataclass
class RebuildResult:
    sink: str
    deleted_keys: int = 0
    latest_keys: int = 0
    recent_keys: int = 0
    recent_rows: int = 0


class PgSource:
    """The SQL that reads what a sink's caches should hold (identifiers from the
    catalogue, quoted; values bound)."""

    def __init__(self, sink: Sink, lay: CacheLayout) -> None:
        spec = sink.spec
        self.lay = lay
        table = spec.qualified_table
        nullable = {c.name for c in sink.columns if c.nullable}

        def match(names: Sequence[str], first: int, alias: str = "") -> str:
            return " AND ".join(
                f"{alias}{q(c)} {'IS NOT DISTINCT FROM' if c in nullable else '='} ${i}"
                for i, c in enumerate(names, first))

        if lay.latest:
            ids = lay.ids
            types = ", ".join(f"${i + 1}::{lay.types[c]}[]" for i, c in enumerate(ids))
            k_names = ", ".join(f"k{i}" for i in range(len(ids)))
            joined = " AND ".join(f"t.{q(c)} = k.k{i}" for i, c in enumerate(ids))
            assert spec.state is not None
            # the rank of each latest row: its history row's (same-version conflicts)
            hist = f"{q(spec.db_schema)}.{q(spec.history_table)}"
            ver = q(spec.state.version)
            ranked = (f"SELECT {', '.join(f't.{q(c)}' for c in lay.latest_columns)},"
                      f" h.produced_at AS {PRODUCED_FIELD}, h.content_hash AS {HASH_FIELD}"
                      f" FROM {table} t LEFT JOIN {hist} h ON "
                      + " AND ".join(f"h.{q(c)} = t.{q(c)}" for c in ids)
                      + f" AND h.{ver} = t.{ver} AND h.op = 'upsert'")
            self.latest_all = ranked
            self.latest_some = (f"{ranked} JOIN unnest({types}) AS k({k_names})"
                                f" ON {joined}")
        if lay.recent is not None:
            rec = lay.recent
            by = ", ".join(q(c) for c in rec.by)
            order = q(rec.order_by)
            cols = ", ".join(q(c) for c in lay.recent_columns)
            self.recent_one = (f"SELECT {cols} FROM {table} WHERE {match(rec.by, 1)}"
                               f" ORDER BY {order} DESC LIMIT {int(rec.keep)}")
            inner = " AND ".join(
                f"t.{q(c)} {'IS NOT DISTINCT FROM' if c in nullable else '='} k.{q(c)}"
                for c in rec.by)
            t_cols = ", ".join(f"t.{q(c)}" for c in lay.recent_columns)
            live = f" WHERE {order} >= $1" if rec.order_type in _TIME_TYPES else ""
            k_cols = ", ".join(f"k.{q(c)} AS _sinkfleet_k{i}" for i, c in enumerate(rec.by))
            self.recent_all = (
                f"SELECT {k_cols}, r.* FROM (SELECT DISTINCT {by} FROM {table}{live}) k"
                f" CROSS JOIN LATERAL (SELECT {t_cols} FROM {table} t WHERE {inner}"
                f" ORDER BY t.{order} DESC LIMIT {int(rec.keep)}) r")

    def cutoff(self, ttl_seconds: int) -> Any:
        """The oldest ``order_by`` value a live recent key can have as its newest row."""
        assert self.lay.recent is not None
        now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ttl_seconds)
        kind = self.lay.recent.order_type
        if kind not in _TIME_TYPES:
            return None  # a numeric order: every key is rebuilt
        return now if kind == "timestamptz" else now.date()


async def _stream(conn: asyncpg.Connection, sql: str, *args: Any
                  ) -> AsyncIterator[list[asyncpg.Record]]:
    # Read committed: the cursor keeps its snapshot, while the checks made between its
    # chunks (Rebuilder._write_latest) see what is committed now.
    async with conn.transaction(readonly=True):
        chunk = []
        async for rec in conn.cursor(sql, *args, prefetch=CHUNK):
            chunk.append(rec)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


class Rebuilder:
    """Rebuild or repair one sink's caches from its tables."""

    def __init__(self, sink: Sink, lay: CacheLayout, store: CacheStore) -> None:
        self.lay = lay
        self.src = PgSource(sink, lay)
        self.store = store

    @property
    def client(self) -> aioredis.Redis:
        return self.store.client

    async def rebuild(self, conn: asyncpg.Connection, *, delete: bool = True
                      ) -> RebuildResult:
        """Delete the sink's keys (SCAN by prefix) and write them again from PostgreSQL.

        Without ``delete`` (a fill, after Redis lost the caches) the keys written since
        are kept: they are right, only incomplete, and readers see no gap meanwhile."""
        lay = self.lay
        result = RebuildResult(lay.sink)
        if lay.latest:
            if delete:
                result.deleted_keys += await delete_prefix(self.client, lay.prefix("latest"))
            async for chunk in _stream(conn, self.src.latest_all):
                rows = [dict(r) for r in chunk]
                await self._write_latest(conn, rows)
                result.latest_keys += len(rows)
        if lay.recent is not None:
            rec = lay.recent
            if delete:
                result.deleted_keys += await delete_prefix(self.client, lay.prefix("recent"))
            cutoff = self.src.cutoff(rec.ttl_seconds)
            args = () if cutoff is None else (cutoff,)
            seen: set[tuple[Any, ...]] = set()
            async for chunk in _stream(conn, self.src.recent_all, *args):
                groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
                for r in chunk:
                    by = tuple(r[f"_sinkfleet_k{i}"] for i in range(len(rec.by)))
                    groups.setdefault(by, []).append({c: r[c] for c in lay.recent_columns})
                async with self.client.pipeline(transaction=False) as pipe:
                    for by, rows in groups.items():
                        self.store.add_recent(pipe, lay, lay.recent_key(by), rows)
                        result.recent_rows += len(rows)
                    await pipe.execute()
                seen.update(groups)
            result.recent_keys = len(seen)
        await self.client.set(lay.filled_key(), "1")  # complete: no fill needed
        return result

    async def repair_latest(self, conn: asyncpg.Connection, ids: Sequence[tuple[Any, ...]]
                            ) -> None:
        """Make these ids' entries what PostgreSQL holds now (absent: no entry)."""
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            rows = [dict(r) for r in await conn.fetch(self.src.latest_some, *_columns(chunk))]
            found = {self.lay.id_of(r) for r in rows}
            gone = [self.lay.latest_key(i) for i in chunk if tuple(i) not in found]
            if gone:  # a miss is always safe: readers fall back to PostgreSQL
                await self.client.delete(*gone)
            await self._write_latest(conn, rows)

    async def repair_recent(self, conn: asyncpg.Connection, keys: Sequence[tuple[Any, ...]]
                            ) -> None:
        """Add these keys' newest rows from PostgreSQL (the key stays a superset of what
        a concurrent live write adds; trimmed to ``keep``)."""
        rec = self.lay.recent
        assert rec is not None
        cutoff = self.src.cutoff(rec.ttl_seconds)
        async with self.client.pipeline(transaction=False) as pipe:
            for n, by in enumerate(keys, 1):
                rows = [dict(r) for r in await conn.fetch(self.src.recent_one, *by)]
                if not rows or (cutoff is not None
                                and _newest(rows[0][rec.order_by]) < cutoff):
                    continue  # not live any more: the key expires (or never was)
                self.store.add_recent(pipe, self.lay, self.lay.recent_key(by), rows)
                if n % CHUNK == 0:
                    await pipe.execute()
            await pipe.execute()

    async def _write_latest(self, conn: asyncpg.Connection, rows: list[dict[str, Any]]
                            ) -> None:
        """CAS-write rows, then delete those whose id PostgreSQL no longer has (a
        tombstone committed while we read), at the version we wrote."""
        if not rows:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            await self.store.write_latest(pipe, self.lay, [("set", r) for r in rows])
            await pipe.execute()
        ids = [self.lay.id_of(r) for r in rows]
        still = {self.lay.id_of(dict(r)) for r in
                 await conn.fetch(self.src.latest_some, *_columns(ids))}
        gone = [r for r in rows if self.lay.id_of(r) not in still]
        if gone:
            async with self.client.pipeline(transaction=False) as pipe:
                await self.store.write_latest(pipe, self.lay, [("del", r) for r in gone])
                await pipe.execute()


def _columns(ids: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Id tuples → one list per id column (for ``unnest``)."""
    width = len(ids[0]) if ids else 0
    return [[i[k] for i in ids] for k in range(width)]


def _newest(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


async def rebuild_caches(settings: Settings, sinks: Sequence[Sink],
                         say: Callable[[str], None] = lambda m: None) -> list[RebuildResult]:
    """``sinkfleet cache rebuild``: every cache of ``sinks`` from PostgreSQL."""

    client = redis_client(settings, timeout=10.0)
    try:
        try:
            await client.ping()
        except REDIS_ERRORS as exc:
            raise redis_error(settings, exc) from None
        store = CacheStore(client)
        async with pg(settings) as conn:
            results = []
            for sink in sinks:
                say(f"rebuilding {sink.spec.name} …")
                rebuilder = Rebuilder(sink, CacheLayout.of(sink), store)
                try:
                    results.append(await rebuilder.rebuild(conn))
                except REDIS_ERRORS as exc:
                    raise redis_error(settings, exc) from None
                except asyncpg.UndefinedTableError as exc:
                    raise MigrationError(f"sink {sink.spec.name}: {exc}; run `sinkfleet db"
                                         " migrate` first") from None
            return results
    finally:
        await client.aclose()
