"""Redis I/O of the caches: the client, the compare-and-set script, pipelined writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError

from sinkfleet.cache.layout import FUTURE_SKEW, PREFIX, TIME_TYPES, CacheLayout, score
from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError, StorageRefused, StorageUnavailable
from sinkfleet.sink.changes import AppendedRows, Change, row_json

# Everything that means "Redis did not do it"; OSError covers refused/reset sockets.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS: latest keys; ARGV: per key, 'set' | 'del', version, row JSON, rank (in that order,
# so one call applies a whole chunk, a key appearing twice included).
# 'set' writes only if the version is newer than the cached one, or equal with a greater
# rank (a same-version conflict's winner, docs/sink-modes.md); 'del' deletes only if
# the cached version is not newer than the deleted one. Versions are decimal integers,
# compared as strings: Lua numbers are doubles and a bigint would lose digits.
CAS_SCRIPT = """
local function newer(a, b)
  if a == b then return false end
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return nb end
  local gt
  if #a ~= #b then gt = #a > #b else gt = a > b end
  if na then return not gt end
  return gt
end
local applied = 0
for i = 1, #KEYS do
  local op, v, r = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i]
  local cur = redis.call('HGET', KEYS[i], 'v')
  if op == 'set' then
    local take = not cur or newer(v, cur)
    if not take and v == cur then
      take = r > (redis.call('HGET', KEYS[i], 'r') or '')
    end
    if take then
      redis.call('HSET', KEYS[i], 'v', v, 'd', ARGV[4 * i - 1], 'r', r)
      applied = applied + 1
    end
  elseif not cur or not newer(cur, v) then
    applied = applied + redis.call('DEL', KEYS[i])
  end
end
return applied
"""
CAS_CHUNK = 200  # keys per script call: one round of parsing instead of 200



def redis_client(settings: Settings, *, timeout: float = 2.0) -> aioredis.Redis:
    """A client that fails fast (no retries of its own: callers back off or fall back)."""
    return aioredis.Redis(**settings.redis_kwargs(), decode_responses=True,
                          socket_timeout=timeout, socket_connect_timeout=timeout,
                          retry=Retry(NoBackoff(), 0))


def redis_error(settings: Settings, exc: BaseException) -> SinkfleetError:
    """A Redis failure as an error that says what to do."""
    where = f"Redis at {settings.redis_host}:{settings.redis_port}"
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return StorageRefused(f"{where} refused us: {exc}; check SINKFLEET_REDIS_USERNAME"
                              " and SINKFLEET_REDIS_PASSWORD")
    return StorageUnavailable(f"cannot use {where}: {type(exc).__name__}: {exc}; is it"
                              " running (sinkfleet stack status)?")


@dataclass(frozen=True)
class _TuplePlan:
    """How to read a recent cache's key, score and member from an appended row tuple."""

    columns: tuple[str, ...]
    by: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    order: int | None  # index of the order_by column (None: not among the columns)
    capped: bool  # order_by is a time: scores are capped at now + FUTURE_SKEW


def _tuple_plan(lay: CacheLayout, columns: tuple[str, ...]) -> _TuplePlan | None:
    """The plan for rows of ``columns``; None unless they are exactly the cached columns
    (then ``project`` would change nothing, so a member is the row's JSON as is)."""
    recent = lay.recent
    if recent is None or set(columns) != set(lay.recent_columns) \
            or len(columns) != len(lay.recent_columns):
        return None
    index = {c: i for i, c in enumerate(columns)}
    picks = [index.get(c) for c in recent.by]

    def by(row: tuple[Any, ...]) -> tuple[Any, ...]:  # row.get(c) for each: None if absent
        return tuple(None if i is None else row[i] for i in picks)
    return _TuplePlan(columns, by, index.get(recent.order_by),
                      recent.order_type in TIME_TYPES)


class CacheStore:
    """Writes of every cache kind, queued on a pipeline the caller executes."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.cas = client.register_script(CAS_SCRIPT)
        self._plans: dict[tuple[str, tuple[str, ...]], _TuplePlan | None] = {}

    async def write_latest(self, pipe: Pipeline, lay: CacheLayout,
                           ops: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Queue compare-and-set writes: ``("set", row)`` or ``("del", row)`` (a tombstone:
        the id and the deleted version). Returns how many were queued."""
        assert lay.version is not None
        keys: list[str] = []
        args: list[str] = []
        for op, row in ops:
            keys.append(lay.latest_key(lay.id_of(row)))
            args += [op, str(int(row[lay.version])),
                     lay.row_json(row, "latest") if op == "set" else "",
                     lay.rank(row) if op == "set" else ""]
        for i in range(0, len(keys), CAS_CHUNK):
            await self.cas(keys=keys[i:i + CAS_CHUNK],
                           args=args[4 * i:4 * (i + CAS_CHUNK)], client=pipe)
        return len(keys)

    @staticmethod
    def add_recent(pipe: Pipeline, lay: CacheLayout, key: str,
                   rows: Iterable[dict[str, Any]]) -> None:
        """Add rows to one recent key, keep the newest ``keep``, restart its TTL."""
        assert lay.recent is not None
        members = {lay.row_json(r, "recent"): lay.score(r) for r in rows}
        if not members:
            return
        pipe.zadd(key, members)
        pipe.zremrangebyrank(key, 0, -(lay.recent.keep + 1))
        pipe.expire(key, lay.recent.ttl_seconds)

    def _plan(self, lay: CacheLayout, columns: tuple[str, ...]) -> _TuplePlan | None:
        key = (lay.sink, columns)
        if key not in self._plans:
            self._plans[key] = _tuple_plan(lay, columns)
        return self._plans[key]

    def queue_appended(self, pipe: Pipeline, lay: CacheLayout, plan: _TuplePlan,
                       rows: list[tuple[Any, ...]]) -> int:
        """``add_recent`` for appended row tuples, grouped by key, without a dict per row
        that cannot stay: per key only the rows that can be among the newest ``keep``
        are sent (the others would be trimmed by ZREMRANGEBYRANK at once). Same members,
        scores and result as ``add_recent`` of every row; returns the rows queued."""
        assert lay.recent is not None
        keys: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        by = plan.by
        for row in rows:
            k = by(row)
            group = keys.get(k)
            if group is None:
                keys[k] = [row]
            else:
                group.append(row)
        order, keep = plan.order, lay.recent.keep
        cap = score(dt.datetime.now(dt.UTC) + FUTURE_SKEW) if plan.capped else None
        columns, jsonb = plan.columns, lay.jsonb
        for k, group in keys.items():
            if order is None:
                scored = [(0.0, row) for row in group]
            elif cap is None:
                scored = [(score(row[order]), row) for row in group]
            else:
                scored = [(min(score(row[order]), cap), row) for row in group]
            if len(scored) > keep:
                scored.sort(key=_first, reverse=True)
            members: dict[str, float] = {}
            last = None
            for s, row in scored:
                # Stop once `keep` distinct members are in and the rest score lower: those
                # could never be among the newest `keep` (equal JSON means equal score).
                if len(members) >= keep and s != last:
                    break
                members[row_json(dict(zip(columns, row, strict=True)), jsonb)] = s
                last = s
            pipe.zadd(lay.recent_key(k), members)
            pipe.zremrangebyrank(lay.recent_key(k), 0, -(keep + 1))
            pipe.expire(lay.recent_key(k), lay.recent.ttl_seconds)
        return len(rows)

    async def queue_changes(self, pipe: Pipeline, lay: CacheLayout,
                            changes: Sequence[Change]) -> dict[str, int]:
        """Queue ``changes`` of one sink; return how many writes per cache."""
        counts = {"latest": 0, "recent": 0}
        if isinstance(changes, AppendedRows) and lay.recent is not None:
            plan = self._plan(lay, changes.columns)
            if plan is not None:
                counts["recent"] = self.queue_appended(pipe, lay, plan, changes.rows)
                return counts
        recent: dict[str, list[dict[str, Any]]] = {}
        latest: list[tuple[str, dict[str, Any]]] = []
        for change in changes:
            if change.op == "append":
                if lay.recent is not None:
                    recent.setdefault(lay.recent_key(lay.by_of(change.row)), []
                                      ).append(change.row)
            elif lay.latest:
                latest.append(("set" if change.op == "upsert" else "del", change.row))
        if latest:
            counts["latest"] = await self.write_latest(pipe, lay, latest)
        for key, rows in recent.items():
            self.add_recent(pipe, lay, key, rows)
            counts["recent"] += len(rows)
        return counts


def _first(item: tuple[float, Any]) -> float:
    return item[0]


async def scan_keys(client: aioredis.Redis, prefix: str, count: int = 1000
                    ) -> AsyncIterator[list[str]]:
    """The keys under ``prefix``, in chunks (SCAN: never blocks the server)."""
    chunk: list[str] = []
    async for key in client.scan_iter(match=prefix + "*", count=count):
        chunk.append(key)
        if len(chunk) >= count:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (sink names are identifiers: no glob characters)."""
    deleted = 0
    async for chunk in scan_keys(client, prefix):
        deleted += int(await client.unlink(*chunk))
    return deleted


async def forget_sink(client: aioredis.Redis, sink: str) -> int:
    """Delete every cache key of ``sink`` and its ``filled`` marker (a dropped sink)."""
    deleted = await delete_prefix(client, f"{PREFIX}:{sink}:")
    return deleted + int(await client.unlink(f"{PREFIX}:-filled:{sink}"))
