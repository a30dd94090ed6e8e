"""The read API: recent events and current state from Redis (hot), everything else —
and every cache miss — from PostgreSQL.

    async with Reader() as r:
        rows = await r.events("experience_events", start=t0, end=t1,
                              where={"agent_id": "agent-7", "episode_id": "ep-3"})
        last = await r.recent("experience_events", agent_id="agent-7", episode_id="ep-3")
        state = await r.state("workflow_state", "tenant-1", "wf-42")   # dict or None
        versions = await r.state_history("workflow_state", "tenant-1", "wf-42")
        trail = await r.audit_trail("audit_entries", tenant="tenant-1", actor="agent-7")
        page = await r.query("policies", order_by="avg_reward", newest_first=True)
        more = await r.query("policies", order_by="avg_reward", newest_first=True,
                             cursor=page.next_cursor)
        print(r.cache_stats.hit_rate)

    async with Reader(tenant="tenant-1") as r:   # only tenant-1's rows of tenant sinks
        failed = await r.query("workflow_states", ["status=failed"])

A Redis failure is never an error for a reader: it reads PostgreSQL instead (and skips
Redis for a few seconds, so an outage costs one timeout, not one per read). The reader
never writes a cache: a read-through fill could race a tombstone and resurrect a row.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import asyncpg
import orjson

from sinkfleet.cache.layout import CacheLayout
from sinkfleet.cache.rebuild import PgSource
from sinkfleet.cache.store import REDIS_ERRORS, redis_client
from sinkfleet.catalogue import Catalogue, Sink, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.errors import ConfigError, MigrationError, StorageUnavailable
from sinkfleet.read.query import MAX_LIMIT, Filter, Page, Query, QueryError, SinkQuery, parse_filter
from sinkfleet.read.sql import SinkSql, coerce, decode_cached, find_sink
from sinkfleet.read.summary import SinkSummary
from sinkfleet.read.windows import SinkWindows
from sinkfleet.sink.postgres.connect import RETRIABLE_PG_ERRORS, create_pool
from sinkfleet.sink.postgres.merge_sql import merge_columns
from sinkfleet.sink.postgres.tenancy import SET_TENANT_SQL

REDIS_PAUSE_SECONDS = 5.0  # after a Redis error, read PostgreSQL only for this long


@dataclass
class CacheStats:
    """Cache reads of this reader: a hit is served by Redis; a miss (absent key, or
    Redis unavailable) by PostgreSQL; errors count the Redis failures among the misses."""

    hits: int = 0
    misses: int = 0
    errors: int = 0

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate}


async def _json_codecs(conn: asyncpg.Connection) -> None:
    """jsonb arrives parsed (orjson, in asyncpg's decode loop): rows need no second pass."""
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=_dumps,
                              decoder=orjson.loads, format="text")


def _dumps(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class Reader:
    """Async reads over the catalogue's sinks. Rows are plain dicts (column → value).

    With ``tenant``, every read of a tenant sink goes through its tenant view with the
    transaction's ``sinkfleet.tenant`` set: PostgreSQL returns that tenant's rows only,
    whatever the filters, cursors or ids (docs/reads.md)."""

    def __init__(self, settings: Settings | None = None, catalogue: Catalogue | None = None,
                 *, tenant: str | None = None, redis_timeout: float = 0.5,
                 pool_size: int = 4) -> None:
        self.settings = settings or load_settings()
        self.catalogue = catalogue or load_catalogue(self.settings.home)
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise ConfigError(f"tenant must be a non-empty string, got {tenant!r}")
        self.tenant = tenant
        self.cache_stats = CacheStats()
        self._redis_timeout = redis_timeout
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._redis: Any = None
        self._redis_paused_until = 0.0
        self._sql: dict[str, SinkSql] = {}
        self._layouts: dict[str, CacheLayout] = {}
        self._borrowed = False  # as_tenant(): the pool and Redis client are another's

    def as_tenant(self, tenant: str) -> Reader:
        """A Reader reading as ``tenant`` over this open Reader's pool and Redis client:
        one pool serves many tenants (the HTTP service); closing it closes neither."""
        if self._pool is None:
            raise ConfigError("the Reader is not open: use `async with Reader() as r:`")
        other = Reader(self.settings, self.catalogue, tenant=tenant,
                       redis_timeout=self._redis_timeout, pool_size=self._pool_size)
        if self._redis is None:
            self._redis = redis_client(self.settings, timeout=self._redis_timeout)
        other._pool, other._redis, other._borrowed = self._pool, self._redis, True
        return other

    @property
    def pool(self) -> asyncpg.Pool:
        """The open connection pool (for a service's own small queries)."""
        if self._pool is None:
            raise ConfigError("the Reader is not open: use `async with Reader() as r:`")
        return self._pool

    async def __aenter__(self) -> Reader:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(self.settings, size=self._pool_size,
                                           init=_json_codecs)

    async def close(self) -> None:
        if self._borrowed:
            self._pool = self._redis = None
            return
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # --- the API ------------------------------------------------------------------------
    async def query(self, sink: str | Query, filters: Sequence[Filter | str] = (), *,
                    order_by: str | None = None, newest_first: bool = False,
                    limit: int = 100, cursor: str | None = None,
                    columns: Sequence[str] | None = None) -> Page:
        """One page of ``sink``'s rows matching every filter (``Filter`` or its text form,
        e.g. ``"avg_reward>0.5"``), ordered by an indexed column, id as tie-breaker;
        ``page.next_cursor`` reads the next page (None after the last).

        E.g. ``await r.query("policies", order_by="avg_reward", newest_first=True)``."""
        if isinstance(filters, (str, Filter)):
            filters = [filters]
        if isinstance(sink, Query):
            q = sink
        else:
            q = Query(sink, [f if isinstance(f, Filter) else parse_filter(f) for f in filters],
                      order_by=order_by, newest_first=newest_first, limit=limit,
                      cursor=cursor, columns=columns)
        planner = SinkQuery(find_sink(self.catalogue, q.sink), self.tenant)
        sql, args, keyset = planner.plan(q)
        return keyset.page(await self._fetch(sql, args))

    async def summary(self, sink: str, filters: Sequence[Filter | str] = (), *,
                      of: Sequence[str] = ()) -> dict[str, Any]:
        """How many rows of ``sink`` match every filter (``rows``), and for each numeric
        column of ``of`` its ``sum_``, ``min_``, ``max_`` and ``avg_`` over them (None when
        no row matches), e.g. a node's out-degree and weight sum::

            await r.summary("graph_connections", ["source_id=" + node], of=["weight"])
        """
        if isinstance(filters, (str, Filter)):
            filters = [filters]
        parsed = [f if isinstance(f, Filter) else parse_filter(f) for f in filters]
        planner = SinkQuery(find_sink(self.catalogue, sink), self.tenant)
        sql, args = SinkSummary(planner).plan(parsed, of)
        [row] = await self._fetch(sql, args)
        return dict(row)

    async def windows(self, sink: str, filters: Sequence[Filter | str] = (), *,
                      start: Any, end: Any = None) -> list[dict[str, Any]]:
        """Per window of the sink's summary grain and group of its ``by`` columns, from
        ``start`` to ``end`` (default now; widened to whole windows, oldest first):
        ``rows`` and count/sum/min/max/avg of each summed column — the detail still kept
        and the summary of detail already dropped, as one answer (sinks with a
        ``retention.summary`` tier; filters on its ``by`` columns), e.g. a year of daily
        judgement scores per verdict::

            await r.windows("judgement_snapshots", ["verdict=pass"], start="2026-01-01")
        """
        if isinstance(filters, (str, Filter)):
            filters = [filters]
        parsed = [f if isinstance(f, Filter) else parse_filter(f) for f in filters]
        planner = SinkWindows(SinkQuery(find_sink(self.catalogue, sink), self.tenant))
        sql, args = planner.plan(parsed, start=start,
                                 end=dt.datetime.now(dt.UTC) if end is None else end)
        rows = await self._fetch(sql, args, exact_floats=True)
        if len(rows) > MAX_LIMIT:
            raise QueryError(f"more than {MAX_LIMIT:,} windows and groups from {sink}: ask"
                             " for a shorter range or filter on its by columns")
        return [dict(r) for r in rows]

    async def events(self, sink: str, *, start: Any = None, end: Any = None,
                     where: dict[str, Any] | None = None, limit: int = 1000
                     ) -> list[dict[str, Any]]:
        """Rows of ``sink`` with ``start <= time_column < end`` (either may be omitted)
        and ``column = value`` for each of ``where``, oldest first, at most ``limit``
        (a ``query`` of one page)."""
        s = find_sink(self.catalogue, sink)
        column = s.spec.time_column
        if column is None:
            raise ConfigError(f"sink {sink!r} has no time_column; events() reads"
                              " time-ordered sinks (query() orders any indexed column)")
        filters = [Filter(k, "=", v) for k, v in (where or {}).items()]
        if start is not None:
            filters.append(Filter(column, ">=", start))
        if end is not None:
            filters.append(Filter(column, "<", end))
        page = await self.query(sink, filters, order_by=column, limit=limit)
        return page.rows

    async def recent(self, sink: str, /, **by: Any) -> list[dict[str, Any]]:
        """The newest rows (at most the cache's ``keep``) for one ``by`` key, newest first:
        from Redis, or from PostgreSQL when the key is not cached."""
        s = find_sink(self.catalogue, sink)
        lay = self._layout(s)
        if self._scoped(s):
            raise ConfigError(f"sink {sink!r} is per tenant: read it with query() (recent()"
                              " reads the cache, which holds every tenant's rows)")
        if lay.recent is None:
            raise ConfigError(f"sink {sink!r} has no recent cache (cache.recent in its spec);"
                              " use events()")
        rec = lay.recent
        if set(by) != set(rec.by):
            raise ConfigError(f"recent({sink!r}) is keyed by {', '.join(rec.by)}; got"
                              f" {', '.join(by) or 'nothing'}")
        sql = self._sink_sql(s)
        values = [sql.value(c, by[c], "recent") for c in rec.by]
        members = await self._cached(lambda r: r.zrange(lay.recent_key(values), 0,
                                                         rec.keep - 1, desc=True))
        if members:
            return [decode_cached(lay.types, json.loads(m)) for m in members]
        rows = await self._fetch(PgSource(s, lay).recent_one, values)
        return [dict(r) for r in rows]

    async def state(self, sink: str, *id: Any) -> dict[str, Any] | None:
        """The latest version of one id of a state sink (None if absent or deleted)."""
        s = find_sink(self.catalogue, sink, "state")
        sql = self._sink_sql(s)
        values = sql.id_values(id)
        lay = self._layout(s)
        if lay.latest:
            data = await self._cached(lambda r: r.hget(lay.latest_key(values), "d"))
            if data is not None:
                row = decode_cached(lay.types, json.loads(data))
                return row if self._own(s, row) else None
        query, args = sql.latest(values, lay.latest_columns)
        rows = await self._fetch(query, args)
        return dict(rows[0]) if rows else None

    async def state_history(self, sink: str, *id: Any) -> list[dict[str, Any]]:
        """Every recorded version of one id, by version: the sink's columns and
        ``parent_version``, ``op`` (upsert or delete), ``kafka_partition``,
        ``kafka_offset``, ``recorded_at``."""
        sql = self._sink_sql(find_sink(self.catalogue, sink, "state"))
        query, args = sql.history(id)
        return [dict(r) for r in await self._fetch(query, args)]

    async def nearest(self, sink: str, column: str, vector: Any, *, k: int = 10,
                      where: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The ``k`` rows of ``sink`` whose vector ``column`` is nearest ``vector``
        (Euclidean), nearest first, each with its ``distance``; ``where``: equality
        filters. A ``cube`` index on the column makes it an index scan."""
        sql = self._sink_sql(find_sink(self.catalogue, sink))
        query, args = sql.nearest(column, vector, k, where)
        return [dict(r) for r in await self._fetch(query, args)]

    async def region(self, sink: str, column: str, low: Any, high: Any, *,
                     where: dict[str, Any] | None = None, limit: int = 1000
                     ) -> list[dict[str, Any]]:
        """Rows of ``sink`` whose vector ``column`` lies within [low, high] on every
        axis, by id (seed 001's "tokens in a region": where={"level": 2})."""
        sql = self._sink_sql(find_sink(self.catalogue, sink))
        query, args = sql.region(column, low, high, where, limit)
        return [dict(r) for r in await self._fetch(query, args)]

    async def merged(self, sink: str, *id: Any) -> dict[str, Any] | None:
        """The joined row of one id of a merge sink (None before its first record): the
        ids, each CRDT's value (counters as integers, sets as sorted lists) and, beside
        a counter or an or_set, its state ``<column>_state`` (docs/merge-mode.md)."""
        s = find_sink(self.catalogue, sink, "merge")
        sql = self._sink_sql(s)
        query, args = sql.latest(sql.id_values(id), merge_columns(s))
        rows = await self._fetch(query, args)
        return dict(rows[0]) if rows else None

    async def audit_trail(self, sink: str, *, tenant: Any, actor: Any = None,
                          start: Any = None, end: Any = None,
                          where: dict[str, Any] | None = None, limit: int = 1000
                          ) -> list[dict[str, Any]]:
        """A tenant's audit entries in chain order (``chain_seq``), optionally by actor
        and time range, with ``chain_seq``, ``prev_hash`` and ``chain_hash``."""
        sql = self._sink_sql(find_sink(self.catalogue, sink, "audit"))
        query, args = sql.audit_trail(tenant=tenant, actor=actor, start=start, end=end,
                                      where=where, limit=limit)
        return [dict(r) for r in await self._fetch(query, args)]

    async def active(self, sink: str, *id: Any) -> dict[str, Any] | None:
        """The active version of a policy or configuration entry: its state sink's
        latest row (the primary key makes it the only one per id)."""
        return await self.state(sink, *id)

    async def history(self, sink: str, *id: Any) -> list[dict[str, Any]]:
        """Every version of a policy or configuration entry, with its lineage
        (``parent_version``); the last upsert not followed by a delete is active."""
        return await self.state_history(sink, *id)

    # --- plumbing -----------------------------------------------------------------------
    def _sink_sql(self, sink: Sink) -> SinkSql:
        name = sink.spec.name
        if name not in self._sql:
            self._sql[name] = SinkSql(sink, tenant_scoped=self.tenant is not None)
        return self._sql[name]

    def _scoped(self, sink: Sink) -> bool:
        return self.tenant is not None and sink.spec.tenant_column is not None

    def _own(self, sink: Sink, row: dict[str, Any]) -> bool:
        """A cached row may be read by this reader: the cache holds every tenant's rows,
        so a tenant reader checks the row's tenant (PostgreSQL's views do it there)."""
        column = sink.spec.tenant_column
        if not self._scoped(sink) or column is None:
            return True
        kind = next(c.pg_type for c in sink.columns if c.name == column)
        return bool(row.get(column) == coerce(kind, self.tenant, "tenant"))

    def _layout(self, sink: Sink) -> CacheLayout:
        name = sink.spec.name
        if name not in self._layouts:
            self._layouts[name] = CacheLayout.of(sink)
        return self._layouts[name]

    async def _fetch(self, query: str, args: list[Any], *, exact_floats: bool = False
                     ) -> list[asyncpg.Record]:
        """Rows of one query; ``exact_floats``: floats as their shortest exact text when
        cast to text (sums of them equal retention's, digit for digit)."""
        if self._pool is None:
            raise ConfigError("the Reader is not open: use `async with Reader() as r:`")
        try:
            if self.tenant is None and not exact_floats:
                return list(await self._pool.fetch(query, *args))
            async with self._pool.acquire() as conn, conn.transaction(readonly=True):
                if exact_floats:
                    await conn.execute("SET LOCAL extra_float_digits = 1")
                if self.tenant is not None:
                    await conn.execute(SET_TENANT_SQL, self.tenant)
                return list(await conn.fetch(query, *args))
        except RETRIABLE_PG_ERRORS as exc:
            raise StorageUnavailable(f"cannot read PostgreSQL at {self.settings.pg_host}:"
                                     f"{self.settings.pg_port}: {type(exc).__name__}: {exc}"
                                     ) from None
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
            raise MigrationError(f"{exc}: the database does not match the catalogue; run"
                                 " `sinkfleet db migrate`") from None
        except asyncpg.DataError as exc:  # a value PostgreSQL refuses (bad encoding …)
            raise ConfigError(f"PostgreSQL refused a value of the query: {exc}") from None
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ConfigError(f"{exc} (PostgreSQL user {self.settings.pg_user}): a reader"
                              " sees a tenant sink only as one tenant; give the tenant"
                              " (Reader(tenant=…), --tenant)") from None

    async def _cached(self, command: Any) -> Any:
        """Run a Redis read; None/empty on a miss, an error, or while Redis is paused."""
        if time.monotonic() < self._redis_paused_until:
            self.cache_stats.misses += 1
            return None
        if self._redis is None:
            self._redis = redis_client(self.settings, timeout=self._redis_timeout)
        try:
            value = await command(self._redis)
        except REDIS_ERRORS:
            self.cache_stats.errors += 1
            self.cache_stats.misses += 1
            self._redis_paused_until = time.monotonic() + REDIS_PAUSE_SECONDS
            return None
        if value:
            self.cache_stats.hits += 1
        else:
            self.cache_stats.misses += 1
        return value
