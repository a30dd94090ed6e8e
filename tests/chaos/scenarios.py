"""The chaos scenarios, each steady → inject → heal → recover → verify, as functions of a
chaos catalogue and a size: the tests (fast and long profile) assert on their results,
``benchmarks/chaos_report.py`` prints them.

Each returns a :class:`FaultResult`: the invariants (``Tally``), the seconds from the heal
until every waiting partition was stored again, and the exit codes of the workers it
stopped (all must be 0)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sinkfleet.cache.store import redis_client
from sinkfleet.config import Settings
from sinkfleet.dev.stack import manager
from tests.chaos.invariants import Tally, cache_mismatches, tally
from tests.chaos.support import (
    ChaosCatalogue,
    Expected,
    Fleet,
    delete_cache_keys,
    stored_total,
    wait_progress,
    wait_stored_at_least,
)
from tests.support.faults import TcpProxy
from tests.support.waiting import async_wait_for

Progress = Callable[[int], None] | None


@dataclass
class FaultResult:
    fault: str
    tally: Tally
    recovery: float | None  # seconds from the (last) heal to progress; None: no outage
    codes: list[int] = field(default_factory=list)  # exit codes of stopped workers
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # beyond the tally's invariants
    logs: str = ""  # the workers' log tails, for assertion messages

    @property
    def ok(self) -> bool:
        return self.tally.ok and not self.problems and all(c == 0 for c in self.codes)

    def explain(self) -> str:
        return "\n".join([f"{self.fault}: {self.tally}", *self.problems, *self.notes,
                          self.logs])


async def _finish(name: str, cc: ChaosCatalogue, fleet: Fleet,
                  publishing: asyncio.Task[Expected], started: float, recovery: float | None,
                  codes: list[int], *, drain_timeout: float = 120, caches: bool = False
                  ) -> FaultResult:
    """Recover (everything published is stored; with ``caches``, Redis equal to
    PostgreSQL while the workers still run), stop the fleet, verify."""
    expected = await publishing
    await wait_stored_at_least(cc, expected.published, drain_timeout,
                               f"{expected.published} records stored after {name}")
    seconds = time.monotonic() - started
    notes: list[str] = []
    problems: list[str] = []
    if caches:
        await _caches_repaired(cc, notes, problems)
    codes += await fleet.stop_all()
    return FaultResult(name, await tally(cc, expected), recovery, codes, seconds, notes,
                       problems, fleet.tails())


async def kill9_storm(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float, seed: int,
                      kills: int = 5, progress: Progress = None) -> FaultResult:
    """Two workers; every 1-2 s one of them is killed with SIGKILL and restarted at once,
    in its slot (static group membership, as `sinkfleet fleet` runs them)."""
    rng = random.Random(seed)
    fleet, started = Fleet(cc, logdir, static=True), time.monotonic()
    try:
        fleet.start()
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        at_kill = []
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            fleet.kill9(rng.choice(fleet.live))
            at_kill.append(await stored_total(cc))
            fleet.start()
        recovery = await wait_progress(cc)
        result = await _finish("kill -9 storm", cc, fleet, publishing, started, recovery, [])
    finally:
        fleet.kill_all()
    result.notes.append(f"{kills} kills at stored={at_kill}")
    if not any(0 < s < n for s in at_kill):
        result.problems.append(f"no kill landed mid-run: {at_kill}")
    return result


async def rebalance_storm(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float,
                          seed: int, storm_s: float = 12.0, max_workers: int = 4,
                          progress: Progress = None) -> FaultResult:
    """Workers join or leave (SIGTERM, possibly while starting) every ~2 s; then two
    stable workers finish the job."""
    rng = random.Random(seed)
    fleet, started, codes, moves = Fleet(cc, logdir), time.monotonic(), [], []
    try:
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        storm_end = time.monotonic() + storm_s
        while time.monotonic() < storm_end:
            await asyncio.sleep(rng.uniform(1.5, 2.5))
            live = len(fleet.live)
            if live <= 1 or (live < max_workers and rng.random() < 0.5):
                fleet.start()
                moves.append("+")
            else:
                codes.append(await fleet.stop(rng.choice(fleet.live)))
                moves.append("-")
        while len(fleet.live) > 2:
            codes.append(await fleet.stop(fleet.live[0]))
        while len(fleet.live) < 2:
            fleet.start()
        recovery = await wait_progress(cc)
        result = await _finish("rebalance storm", cc, fleet, publishing, started, recovery,
                               codes)
    finally:
        fleet.kill_all()
    result.notes.append(f"moves {''.join(moves)}, {len(fleet.logs)} incarnations")
    if not ("+" in moves and "-" in moves):
        result.problems.append(f"the storm did not both add and remove: {moves}")
    return result


async def poison(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float | None, seed: int,
                 share: float = 0.01, progress: Progress = None) -> FaultResult:
    """``share`` poison records among good ones: exactly those are dead-lettered."""
    fleet, started = Fleet(cc, logdir), time.monotonic()
    try:
        fleet.start()
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, poison=share, progress=progress)
        result = await _finish("1 % poison", cc, fleet, publishing, started, None, [])
    finally:
        fleet.kill_all()
    return result


async def pg_cut(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float, seed: int,
                 cuts: int = 3, cut_s: float = 1.0, progress: Progress = None) -> FaultResult:
    """Every PostgreSQL connection of the workers cut mid-stream (mid-COPY) ``cuts`` times
    by a TCP fault proxy; new ones refused for ``cut_s``."""
    rng = random.Random(seed)
    proxy = TcpProxy(cc.settings.pg_host, cc.settings.pg_port)
    await proxy.start()
    fleet = Fleet(cc, logdir, extra_env={"SINKFLEET_PG_PORT": str(proxy.port)})
    started, recoveries = time.monotonic(), []
    try:
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        for _ in range(cuts):
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            proxy.cut()
            await asyncio.sleep(cut_s)
            proxy.heal()
            recoveries.append(await wait_progress(cc))
        result = await _finish("PostgreSQL cut mid-COPY", cc, fleet, publishing, started,
                               max(recoveries), [], drain_timeout=120)
    finally:
        fleet.kill_all()
        await proxy.stop()
    result.notes.append(f"recovered after {[round(r, 2) for r in recoveries]} s")
    if "recovered: storage" not in result.logs:
        result.problems.append("the worker never reported PostgreSQL back")
    return result


async def restart(cc: ChaosCatalogue, logdir: Path, n: int, stack: Settings, service: str, *,
                  rate: float, seed: int, down_s: float = 1.0,
                  progress: Progress = None) -> FaultResult:
    """Stop the stack's ``service`` (kafka, postgres or redis) under load, start it again
    after ``down_s``. Restarts the servers everyone on this stack uses: long profile.
    Redis has no persistence in the local stack: a restart also empties it."""
    fleet, started = Fleet(cc, logdir), time.monotonic()
    name = {"postgres": "PostgreSQL restart", "kafka": "Kafka broker restart",
            "redis": "Redis restart"}[service]
    try:
        fleet.start()
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        await asyncio.sleep(1.0)
        before = await stored_total(cc)
        await asyncio.to_thread(manager.down, stack, [service], lambda m: None)
        await asyncio.sleep(down_s)
        # stored while Redis was away (PostgreSQL cannot be asked while it is down)
        during = await stored_total(cc) - before if service == "redis" else 0
        await manager.up(stack, [service], lambda m: None)
        recovery = await wait_progress(cc, 90)
        errors = await fleet.metric("sinkfleet_cache_errors_total")
        result = await _finish(name, cc, fleet, publishing, started, recovery, [],
                               drain_timeout=180, caches=service == "redis")
    finally:
        fleet.kill_all()
    if service == "redis":
        _ingest_went_on(result, errors, during, down_s)
    return result


async def redis_flush(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float, seed: int,
                      flushall: bool, progress: Progress = None) -> FaultResult:
    """Redis loses every key under load: FLUSHALL (``flushall``, long profile: the Redis is
    the test's own) or the deletion of every key of these sinks (fast profile: the Redis
    may be shared). The caches must equal PostgreSQL again without anyone's help."""
    fleet, started = Fleet(cc, logdir), time.monotonic()
    try:
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        await asyncio.sleep(1.0)
        if flushall:
            client = redis_client(cc.settings)
            try:
                await client.flushall()
            finally:
                await client.aclose()
        else:
            await delete_cache_keys(cc)
        recovery = await wait_progress(cc)
        result = await _finish("Redis flush", cc, fleet, publishing, started, recovery, [],
                               caches=True)
    finally:
        fleet.kill_all()
    return result


async def redis_cut(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float, seed: int,
                    cut_s: float = 2.0, progress: Progress = None) -> FaultResult:
    """The workers' Redis connections cut (and refused) for ``cut_s`` by a TCP proxy: the
    fast profile's Redis outage. PostgreSQL ingest goes on; errors are counted."""
    proxy = TcpProxy(cc.settings.redis_host, cc.settings.redis_port)
    await proxy.start()
    fleet = Fleet(cc, logdir, extra_env={"SINKFLEET_REDIS_PORT": str(proxy.port)})
    started = time.monotonic()
    try:
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        await asyncio.sleep(1.0)
        proxy.cut()
        before = await stored_total(cc)
        await asyncio.sleep(cut_s)
        during = await stored_total(cc) - before
        proxy.heal()
        recovery = await wait_progress(cc)
        errors = await fleet.metric("sinkfleet_cache_errors_total")
        result = await _finish("Redis outage", cc, fleet, publishing, started, recovery, [],
                               caches=True)
    finally:
        fleet.kill_all()
        await proxy.stop()
    _ingest_went_on(result, errors, during, cut_s)
    return result


def _ingest_went_on(result: FaultResult, errors: float, during: int, down_s: float) -> None:
    result.notes.append(f"{errors:.0f} cache errors counted, {during} records stored"
                        f" during the {down_s:g} s Redis outage")
    if not errors:
        result.problems.append("no cache error counted during the Redis outage")
    if not during:
        result.problems.append("PostgreSQL ingest stopped while Redis was away")


async def _caches_repaired(cc: ChaosCatalogue, notes: list[str], problems: list[str],
                           timeout: float = 30) -> None:
    """Wait until the caches equal PostgreSQL; note how long that took after the drain."""
    started = time.monotonic()
    last: dict[str, int] = {}

    async def equal() -> bool:
        nonlocal last
        last = await cache_mismatches(cc)
        return not any(last.values())

    try:
        await async_wait_for(equal, timeout, "the caches to equal PostgreSQL", interval=0.5)
    except AssertionError:
        problems.append(f"caches differ from PostgreSQL {timeout:g} s after the drain:"
                        f" {last}")
        return
    notes.append(f"caches = PostgreSQL {time.monotonic() - started:.1f} s after the drain")
