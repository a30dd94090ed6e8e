"""The worker's cache writer: Redis written after each PostgreSQL commit, never in its way.

``submit()`` only appends to a bounded queue; a background task writes it to Redis in
pipelines. When Redis fails, the task backs off (jittered, exponential) and pings until
Redis answers; meanwhile changes are not kept, only the keys they touch ("dirty"),
bounded per sink — past the bound the sink is marked for a full rebuild. A second task
repairs dirty keys and rebuilds marked sinks from PostgreSQL, the source of truth, while
live writes go on (compare-and-set and add-only writes make that safe; see rebuild.py).

Redis may also lose the caches while answering all along (FLUSHALL, a restart without
persistence, an eviction): what it holds then is right but incomplete — a ``recent`` set
would hold only the rows written since. Every write pipeline therefore first claims the
sink's ``filled`` key (SET NX with an expiry); getting it means the key was gone, and
this writer fills the sink from PostgreSQL (keeping what is there), then marks it filled.
One worker of a fleet wins the claim; if it dies filling, the claim expires. An idle
writer makes the same claim every ``FILLED_CHECK_SECONDS`` (and once at start), so a
loss is repaired even when nothing is written.

    writer = CacheWriter(settings, sinks, group="events")
    await writer.start()                       # never raises, never waits for Redis
    writer.submit("workflow_state", changes)   # after the transaction committed
    await writer.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sinkfleet.cache.layout import CacheLayout, cache_layouts
from sinkfleet.cache.rebuild import Rebuilder
from sinkfleet.cache.store import REDIS_ERRORS, CacheStore, redis_client, redis_error
from sinkfleet.catalogue import Sink
from sinkfleet.config import Settings
from sinkfleet.errors import StorageRefused
from sinkfleet.sink.changes import AppendedRows, Change
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect

log = logging.getLogger("sinkfleet.cache")

Key = tuple[Any, ...]
PIPELINE_CHANGES = 5000  # changes per Redis round trip
FILL_CLAIM_SECONDS = 600  # a writer that dies while filling a sink gives it up after this
FILLED_CHECK_SECONDS = 5.0  # an idle writer checks this often whether Redis lost the caches


class CacheState(Enum):
    """What a ``CacheWriter`` is doing with Redis; ``CacheWriter._to`` makes every move."""

    NEW = "new"  # not started: submit() only remembers the keys
    OPEN = "open"  # Redis answers: changes are queued and written
    FAILING = "failing"  # Redis failed (or no client): keys only, back off, ping
    CLOSING = "closing"  # close() called: write what is queued, repair what is dirty
    CLOSING_FAILING = "closing, Redis failing"  # both: stop at once, keys stay dirty

    @property
    def failing(self) -> bool:
        return self in (CacheState.FAILING, CacheState.CLOSING_FAILING)

    @property
    def closing(self) -> bool:
        return self in (CacheState.CLOSING, CacheState.CLOSING_FAILING)


# (state, event) → next state; a pair not listed leaves the state as it is.
_MOVES: dict[tuple[CacheState, str], CacheState] = {
    (CacheState.NEW, "start"): CacheState.OPEN,
    (CacheState.NEW, "fail"): CacheState.FAILING,  # no client: nothing will recover it
    (CacheState.OPEN, "fail"): CacheState.FAILING,
    (CacheState.CLOSING, "fail"): CacheState.CLOSING_FAILING,
    (CacheState.FAILING, "recover"): CacheState.OPEN,
    (CacheState.CLOSING_FAILING, "recover"): CacheState.CLOSING,  # repairs may run again
    (CacheState.NEW, "close"): CacheState.CLOSING,
    (CacheState.OPEN, "close"): CacheState.CLOSING,
    (CacheState.FAILING, "close"): CacheState.CLOSING_FAILING,
}


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Full-jitter exponential back-off: uniform in [cap/2 … cap] once saturated."""
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    return random.uniform(ceiling / 2, ceiling)


class _Gauges(Collector):
    def __init__(self, writer: CacheWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        w = self.writer
        pending = GaugeMetricFamily("sinkfleet_cache_pending_changes", "Changes waiting to be"
                                    " written to Redis", labels=["group"])
        pending.add_metric([w.group], w.pending)
        dirty = GaugeMetricFamily("sinkfleet_cache_dirty_keys", "Cache keys whose write failed"
                                  " or was dropped, to be repaired from PostgreSQL",
                                  labels=["group", "sink"])
        rebuild = GaugeMetricFamily("sinkfleet_cache_rebuild_pending", "1 while a sink's"
                                    " caches wait for a full rebuild", labels=["group", "sink"])
        for sink in sorted(w.layouts):
            dirty.add_metric([w.group, sink], w.dirty_count(sink))
            rebuild.add_metric([w.group, sink], float(sink in w._rebuild))
        yield from (pending, dirty, rebuild)


def _merged(parts: list[Sequence[Change]]) -> Sequence[Change]:
    """One sequence of the changes of one sink queued in ``parts``; appended row tuples
    of the same columns stay row tuples (the store's fast path)."""
    if len(parts) == 1:
        return parts[0]
    same: list[AppendedRows] = []
    for part in parts:
        if not isinstance(part, AppendedRows) or part.columns != (same or [part])[0].columns:
            break
        same.append(part)
    else:
        return AppendedRows(same[0].columns, [r for p in same for r in p.rows])
    return [c for p in parts for c in p]


class CacheWriter:
    """Writes the ``latest`` and ``recent`` caches of ``sinks`` (those without a cache
    are ignored)."""

    def __init__(self, settings: Settings, sinks: Sequence[Sink], *, group: str,
                 registry: CollectorRegistry | None = None, max_pending: int = 100_000,
                 max_dirty: int = 10_000, backoff_cap: float = 5.0) -> None:
        self.settings = settings
        self.group = group
        self.layouts: dict[str, CacheLayout] = cache_layouts(sinks)
        self._sinks = {s.spec.name: s for s in sinks if s.spec.name in self.layouts}
        self.max_pending = max_pending
        self.max_dirty = max_dirty
        self.backoff_cap = backoff_cap
        self.degraded: str | None = None
        self.pending = 0
        self._queue: deque[tuple[str, Sequence[Change]]] = deque()
        self._dirty_latest: dict[str, set[Key]] = {s: set() for s in self.layouts}
        self._dirty_recent: dict[str, set[Key]] = {s: set() for s in self.layouts}
        self._rebuild: set[str] = set()
        self._fill: set[str] = set()  # sinks whose caches Redis lost: fill from PostgreSQL
        self.state = CacheState.NEW
        # Pipelines and repair rounds under way (two tasks, so both at once): for ``idle``.
        self._in_flight = 0
        self._wake = asyncio.Event()  # queue has items / closing
        self._dirty_event = asyncio.Event()  # repair work / closing
        self._stop = asyncio.Event()  # close() was called: cut back-off sleeps short
        self._tasks: list[asyncio.Task[None]] = []
        self._client: Any = None
        self._store: CacheStore | None = None
        self._rebuilders: dict[str, Rebuilder] = {}
        self._pg: asyncpg.Connection | None = None
        r = registry or CollectorRegistry()
        self.writes = Counter("sinkfleet_cache_writes", "Cache entries written to Redis",
                              ["group", "sink", "cache"], registry=r)
        self.errors = Counter("sinkfleet_cache_errors", "Failed Redis cache writes (the keys"
                              " are repaired from PostgreSQL later)", ["group", "sink"],
                              registry=r)
        self.repairs = Counter("sinkfleet_cache_repairs", "Cache repairs from PostgreSQL:"
                               " kind=keys (dirty keys), rebuild (whole sink) or fill (whole"
                               " sink, after Redis lost it)",
                               ["group", "sink", "kind"], registry=r)
        r.register(_Gauges(self))

    # --- the caller's side: never blocks, never raises ---------------------------------
    async def start(self) -> None:
        """Start the background tasks (Redis is contacted by them, not here)."""
        if not self.layouts or self._tasks:
            return
        try:
            self._client = redis_client(self.settings)
            self._store = CacheStore(self._client)
        except Exception as exc:  # a bad TLS file, say: report, never fail the worker
            self._fail_permanently(exc)
            return
        self._rebuilders = {n: Rebuilder(self._sinks[n], lay, self._store)
                            for n, lay in self.layouts.items()}
        self._to("start")
        self._tasks = [asyncio.create_task(self._write_loop(), name="sinkfleet-cache-write"),
                       asyncio.create_task(self._repair_loop(), name="sinkfleet-cache-repair")]

    def submit(self, sink_name: str, changes: Sequence[Change]) -> None:
        """Queue ``changes`` (committed to PostgreSQL) for Redis. Over ``max_pending``
        queued changes, or while Redis fails, only the keys are remembered."""
        if not changes or sink_name not in self.layouts:
            return
        if self.state is not CacheState.OPEN or self.pending + len(changes) > self.max_pending:
            self._mark_dirty(sink_name, changes)
            return
        if not isinstance(changes, AppendedRows):  # immutable; a list may be reused
            changes = list(changes)
        self._queue.append((sink_name, changes))
        self.pending += len(changes)
        self._wake.set()

    def dirty_count(self, sink: str) -> int:
        return len(self._dirty_latest[sink]) + len(self._dirty_recent[sink])

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing to repair, Redis answering."""
        return (not self._queue and not self._in_flight and not self.state.failing
                and not self._has_repairs())

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait (at most ``timeout``) until everything submitted is in Redis or repaired.
        Call it before handing partitions over, to keep writes of two workers apart."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            if self.idle:
                return True
            await asyncio.sleep(0.01)
        return self.idle

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and repair what is dirty, for at most ``timeout``."""
        self._to("close")
        self._stop.set()
        self._wake.set()
        self._dirty_event.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        lost = {s: self.dirty_count(s) + sum(len(c) for n, c in self._queue if n == s)
                for s in self.layouts}
        lost = {s: n for s, n in lost.items() if n} | {
            s: -1 for s in self._rebuild | self._fill}
        if lost:
            log.warning("cache: stopping with stale Redis entries (%s); run `sinkfleet cache"
                        " rebuild --sink SINK` if they matter before their next write",
                        ", ".join(f"{s}: {'all' if n < 0 else n}" for s, n in lost.items()))
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        await self._close_pg()

    # --- bookkeeping --------------------------------------------------------------------
    def _to(self, event: str) -> None:
        """Move on ``event`` (start, fail, recover, close): the only place that does."""
        self.state = _MOVES.get((self.state, event), self.state)

    def _mark_dirty(self, sink: str, changes: Sequence[Change]) -> None:
        if sink in self._rebuild:
            return
        lay = self.layouts[sink]
        latest, recent = self._dirty_latest[sink], self._dirty_recent[sink]
        for change in changes:
            if change.op == "append":
                if lay.recent is not None:
                    recent.add(lay.by_of(change.row))
            elif lay.latest:
                latest.add(lay.id_of(change.row))
        if len(latest) + len(recent) > self.max_dirty:
            self._rebuild.add(sink)
            latest.clear()
            recent.clear()
        self._dirty_event.set()

    def _fail(self, exc: BaseException, sinks: Sequence[str] = ()) -> None:
        for sink in sinks:
            self.errors.labels(self.group, sink).inc()
        message = f"cache: {redis_error(self.settings, exc)}"
        if not self.state.failing:
            log.warning("%s; backing off, the keys are repaired from PostgreSQL later",
                        message)
        self._to("fail")
        self.degraded = message
        self._wake.set()

    def _fail_permanently(self, exc: BaseException) -> None:
        self._to("fail")
        self.degraded = f"cache: cannot build a Redis client: {exc}"
        log.error("%s; caches are not written", self.degraded)

    # --- background: live writes --------------------------------------------------------
    async def _write_loop(self) -> None:
        attempt = 0
        await self._check_filled()
        while True:
            if self.state.failing:
                self._queue_to_dirty()
                if self.state.closing:
                    return
                await self._sleep(backoff(attempt, cap=self.backoff_cap))
                attempt += 1
                await self._ping()
                continue
            attempt = 0
            if self._queue:
                self._in_flight += 1
                try:
                    await self._write_some()
                finally:
                    self._in_flight -= 1
                continue
            if self.state.closing:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FILLED_CHECK_SECONDS)
            if not self._wake.is_set():
                await self._check_filled()

    async def _check_filled(self) -> None:
        """Claim the ``filled`` key of every sink (see the module's docstring)."""
        sinks = sorted(self.layouts)
        self._in_flight += 1  # for ``idle``: a fill may be about to start
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for sink in sinks:
                    self._claim_filled(pipe, sink)
                self._claimed(sinks, await pipe.execute())
        except REDIS_ERRORS as exc:
            self._fail(exc)
        finally:
            self._in_flight -= 1

    def _claim_filled(self, pipe: Any, sink: str) -> None:
        pipe.set(self.layouts[sink].filled_key(), "filling", nx=True, ex=FILL_CLAIM_SECONDS)

    def _claimed(self, sinks: Sequence[str], results: Sequence[Any]) -> None:
        for sink, lost in zip(sinks, results, strict=True):
            if lost:
                log.warning("cache: Redis does not hold the caches of %s (new, flushed,"
                            " restarted or evicted); filling them from PostgreSQL", sink)
                self._fill.add(sink)
                self._dirty_event.set()

    async def _write_some(self) -> None:
        assert self._store is not None
        size = 0
        chunks: dict[str, list[Sequence[Change]]] = {}
        while self._queue and size < PIPELINE_CHANGES:
            sink, changes = self._queue.popleft()
            chunks.setdefault(sink, []).append(changes)
            size += len(changes)
        self.pending -= size
        by_sink = {sink: _merged(parts) for sink, parts in chunks.items()}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for sink in by_sink:  # first: did Redis lose this sink's caches?
                    self._claim_filled(pipe, sink)
                counts = {s: await self._store.queue_changes(pipe, self.layouts[s], c)
                          for s, c in by_sink.items()}
                claimed = (await pipe.execute())[:len(by_sink)]
        except REDIS_ERRORS as exc:
            for sink, changes in by_sink.items():
                self._mark_dirty(sink, changes)
            self._fail(exc, list(by_sink))
            return
        except Exception:  # a bug, not an outage: do not retry it forever
            log.exception("cache: writing %d change(s) failed; dropped", size)
            for sink in by_sink:
                self.errors.labels(self.group, sink).inc()
            return
        for sink, per_cache in counts.items():
            for cache, n in per_cache.items():
                if n:
                    self.writes.labels(self.group, sink, cache).inc(n)
        self._claimed(list(by_sink), claimed)

    def _queue_to_dirty(self) -> None:
        while self._queue:
            sink, changes = self._queue.popleft()
            self.pending -= len(changes)
            self._mark_dirty(sink, changes)

    async def _ping(self) -> None:
        try:
            await self._client.ping()
        except REDIS_ERRORS as exc:
            self.degraded = f"cache: {redis_error(self.settings, exc)}"
            return
        log.info("cache: Redis is back; repairing the keys written meanwhile")
        self._to("recover")
        self._dirty_event.set()
        if not self._has_repairs():
            self.degraded = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # --- background: repairs from PostgreSQL --------------------------------------------
    def _has_repairs(self) -> bool:
        return bool(self._rebuild or self._fill) or any(self.dirty_count(s)
                                                        for s in self.layouts)

    async def _repair_loop(self) -> None:
        attempt = 0
        while True:
            if self.state.closing and (self.state.failing or not self._has_repairs()):
                return
            if self.state.failing or not self._has_repairs():
                if not self.state.failing:
                    self.degraded = None
                self._dirty_event.clear()
                await self._dirty_event.wait()
                continue
            self._in_flight += 1
            try:
                await self._repair_once()
                attempt = 0
                if not self.state.failing and not self._has_repairs():
                    self.degraded = None
            except REDIS_ERRORS as exc:
                self._fail(exc)
            except RETRIABLE_STORAGE as exc:
                self.degraded = f"cache repair: PostgreSQL unavailable: {exc}"
                await self._close_pg()
                await self._sleep(backoff(attempt, cap=self.backoff_cap))
                attempt += 1
            except StorageRefused as exc:
                self.degraded = f"cache repair: {exc}"
                await self._sleep(backoff(attempt, cap=self.backoff_cap))
                attempt += 1
            except Exception:
                log.exception("cache: repair failed")
                await self._sleep(backoff(attempt, cap=self.backoff_cap))
                attempt += 1
            finally:
                self._in_flight -= 1

    async def _repair_once(self) -> None:
        """One round: rebuild the marked sinks, then repair the dirty keys. What fails is
        put back (and what became dirty meanwhile stays dirty)."""
        if self._pg is None:
            self._pg = await connect(self.settings)
        for sink in sorted(self._rebuild):
            self._rebuild.discard(sink)
            self._fill.discard(sink)  # the rebuild covers it, and the dirty keys
            self._dirty_latest[sink].clear()
            self._dirty_recent[sink].clear()
            try:
                result = await self._rebuilders[sink].rebuild(self._pg)
            except BaseException:
                self._rebuild.add(sink)
                raise
            self.repairs.labels(self.group, sink, "rebuild").inc()
            log.info("cache: rebuilt %s from PostgreSQL (%d latest, %d recent keys)", sink,
                     result.latest_keys, result.recent_keys)
        for sink in sorted(self._fill):
            self._fill.discard(sink)
            try:
                result = await self._rebuilders[sink].rebuild(self._pg, delete=False)
            except BaseException:
                self._fill.add(sink)
                raise
            self.repairs.labels(self.group, sink, "fill").inc()
            log.info("cache: filled %s from PostgreSQL (%d latest, %d recent keys)", sink,
                     result.latest_keys, result.recent_keys)
        for sink, rebuilder in self._rebuilders.items():
            latest, self._dirty_latest[sink] = self._dirty_latest[sink], set()
            recent, self._dirty_recent[sink] = self._dirty_recent[sink], set()
            if not latest and not recent:
                continue
            try:
                if latest:
                    await rebuilder.repair_latest(self._pg, sorted(latest, key=repr))
                if recent:
                    await rebuilder.repair_recent(self._pg, sorted(recent, key=repr))
            except BaseException:
                if sink not in self._rebuild:
                    self._dirty_latest[sink] |= latest
                    self._dirty_recent[sink] |= recent
                    if self.dirty_count(sink) > self.max_dirty:
                        self._rebuild.add(sink)
                raise
            self.repairs.labels(self.group, sink, "keys").inc()
            log.info("cache: repaired %d key(s) of %s from PostgreSQL",
                     len(latest) + len(recent), sink)

    async def _close_pg(self) -> None:
        if self._pg is not None:
            conn, self._pg = self._pg, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()
