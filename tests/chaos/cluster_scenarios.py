"""The cluster faults: real Kafka processes of a private three-broker cluster
(tests/chaos/cluster.py) killed, restarted or rolled while the Publisher (acks=all,
idempotent) and two worker processes run. Each run also logs every acknowledgement
(tests/chaos/history.py) and ends with the independent history check beside the usual
invariants (tests/chaos/invariants.py).

Recovery, for a fault the cluster heals by itself (a killed leader or controller): the
seconds from the kill until every partition with records waiting was stored again (the
fail-over); for the rolling restart the longest such wait after a node came back; for
ISR < min.insync the seconds from the node's return until the group stored again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiokafka.errors import KafkaError

from sinkfleet.config import Settings
from sinkfleet.dev.produce import Pacing
from sinkfleet.dev.stack import manager
from sinkfleet.dev.synthetic.base import Tombstone
from sinkfleet.dev.synthetic.loads import MixedLoad
from sinkfleet.errors import PublishError
from sinkfleet.producer import Publisher
from tests.chaos.cluster import (
    ClusterCatalogue,
    active_controller,
    describe,
    kill9,
    node_ids,
    partition_leader,
    set_min_insync,
    start_node,
    stop_node,
)
from tests.chaos.history import AckLog, HistoryReport, chaos_tables, check_history
from tests.chaos.scenarios import FaultResult, _finish
from tests.chaos.support import (
    MIX,
    ChaosCatalogue,
    Expected,
    Fleet,
    stored_total,
    wait_progress,
    wait_stored_at_least,
)
from tests.support.waiting import async_wait_for

Progress = Callable[[int], None] | None
Mark = Callable[[], Awaitable[None]]  # called at the moment of the fault
Inject = Callable[[Mark], Awaitable[tuple[float | None, list[str]]]]


@dataclass
class ClusterFaultResult(FaultResult):
    history: HistoryReport | None = None  # the independent check (tests/chaos/history.py)
    acknowledged: int = 0  # acknowledgements the publisher logged


def pg_dsn(settings: Settings) -> str:
    """A libpq URL for the history checker's own connection."""
    kw = settings.pg_connect_kwargs
    auth = quote(kw["user"], safe="") + (f":{quote(kw['password'], safe='')}"
                                         if "password" in kw else "")
    return f"postgresql://{auth}@{kw['host']}:{kw['port']}/{quote(kw['database'], safe='')}"


def assert_exact(result: ClusterFaultResult, n: int) -> None:
    """Nothing lost, nothing twice, and as many rows as acknowledgements."""
    assert result.ok, result.explain()
    h = result.history
    assert h is not None and h.ok, result.explain()
    assert result.acknowledged == h.lines == result.tally.records == n, result.explain()
    assert h.total("lost") == h.total("duplicated") == h.total("unacknowledged") == 0
    assert h.total("acknowledged") == h.total("stored"), result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")


async def _cluster(cc: ClusterCatalogue) -> Settings:
    assert cc.cluster is not None, "a cluster fault needs a catalogue on the cluster"
    return cc.cluster


async def progress_after(cc: ClusterCatalogue, timeout: float = 120) -> float:
    """``wait_progress`` from now, asking again while Kafka's metadata still names a dead
    leader (the end offsets are read from the partitions' leaders)."""
    started = time.monotonic()
    while True:
        try:
            waited = await wait_progress(cc, timeout)
            return 0.0 if waited == 0 else time.monotonic() - started
        except KafkaError:
            if time.monotonic() - started > timeout:
                raise
            await asyncio.sleep(0.2)


async def verify_history(result: FaultResult, cc: ChaosCatalogue, log: AckLog, *,
                         failures_ok: bool = False) -> ClusterFaultResult:
    """``result`` with the independent history check of what ``log`` acknowledged (also
    used by the broker isolation of tests/chaos/network_scenarios.py)."""
    report = await check_history(log.path, pg_dsn(cc.settings), chaos_tables(cc.sinks))
    out = ClusterFaultResult(**vars(result), history=report, acknowledged=log.acked)
    out.notes.append(str(report))
    if not report.ok:
        out.problems.append(f"independent history check failed: {report}")
    if log.failed and not failures_ok:
        out.problems.append(f"{log.failed} deliveries failed (the publisher raised)")
    return out


async def _under_load(name: str, cc: ClusterCatalogue, logdir: Path, n: int, *, rate: float,
                      seed: int, progress: Progress, inject: Inject) -> ClusterFaultResult:
    """Two workers and the logged mixed publisher; ``inject`` once the first batches are
    stored; then drain, verify, and check the history."""
    log = AckLog(logdir / f"acks-{cc.suffix}.log")
    fleet, started = Fleet(cc, logdir, static=True), time.monotonic()
    try:
        fleet.start()
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress, sent=log.track_item)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        at = -1

        async def mark() -> None:
            nonlocal at
            at = await stored_total(cc)

        recovery, notes = await inject(mark)
        result = await _finish(name, cc, fleet, publishing, started, recovery, [],
                               drain_timeout=180)
    finally:
        fleet.kill_all()
        log.close()
    result.notes[:0] = [f"injected at stored={at}", *notes]
    if not 0 < at < n:
        result.problems.append(f"the fault did not land while records flowed: stored={at}")
    return await verify_history(result, cc, log)


async def leader_kill(cc: ClusterCatalogue, logdir: Path, n: int, *, rate: float, seed: int,
                      progress: Progress = None, spread_s: float = 0) -> ClusterFaultResult:
    """The broker leading partition 0 of the events topic killed (SIGKILL); once the
    group stores again it is restarted and waited for until every replica is in sync.
    ``spread_s``: publish for at least that long."""
    cluster = await _cluster(cc)
    rate = min(rate, n / spread_s) if spread_s else rate

    async def inject(mark: Mark) -> tuple[float | None, list[str]]:
        victim = await partition_leader(cc.settings, cc.topics["experience_event"], 0)
        await mark()
        await kill9(cluster, victim)
        recovery = await progress_after(cc)
        back = time.monotonic()
        await start_node(cluster, victim)
        await manager.wait_in_sync(cluster, 180)
        return recovery, [f"kafka-{victim} (leader of the events' partition 0) killed -9;"
                          f" restarted and in sync {time.monotonic() - back:.1f} s later"]

    return await _under_load("partition leader kill -9", cc, logdir, n, rate=rate, seed=seed,
                             progress=progress, inject=inject)


async def controller_kill(cc: ClusterCatalogue, logdir: Path, n: int, *, rate: float,
                          seed: int, progress: Progress = None, spread_s: float = 0
                          ) -> ClusterFaultResult:
    """The active KRaft controller (the quorum's leader) killed (SIGKILL): another
    controller takes over; the node is restarted once the group stores again.
    ``spread_s``: publish for at least that long."""
    cluster = await _cluster(cc)
    rate = min(rate, n / spread_s) if spread_s else rate

    async def inject(mark: Mark) -> tuple[float | None, list[str]]:
        victim = await active_controller(cluster)
        await mark()
        await kill9(cluster, victim)
        recovery = await progress_after(cc)
        successor = await active_controller(cluster)
        back = time.monotonic()
        await start_node(cluster, victim)
        await manager.wait_in_sync(cluster, 180)
        notes = [f"kafka-{victim} (active controller) killed -9; kafka-{successor} took"
                 f" over; restarted and in sync {time.monotonic() - back:.1f} s later"]
        if successor == victim:
            raise AssertionError(f"the killed controller kafka-{victim} is still the leader")
        return recovery, notes

    return await _under_load("active controller kill -9", cc, logdir, n, rate=rate,
                             seed=seed, progress=progress, inject=inject)


async def rolling_restart(cc: ClusterCatalogue, logdir: Path, n: int, *, rate: float,
                          seed: int, progress: Progress = None, spread_s: float = 0
                          ) -> ClusterFaultResult:
    """Every broker in turn stopped (SIGTERM: a controlled shutdown) and started, the next
    one only once every replica is back in sync. ``spread_s``: publish for at least that
    long (the three restarts take tens of seconds)."""
    cluster = await _cluster(cc)
    if spread_s:
        rate = min(rate, n / spread_s)

    async def inject(mark: Mark) -> tuple[float | None, list[str]]:
        waits, took = [], []
        await mark()
        for node_id in node_ids(cluster):
            began = time.monotonic()
            await stop_node(cluster, node_id)
            await start_node(cluster, node_id)
            await manager.wait_in_sync(cluster, 180)
            took.append(time.monotonic() - began)
            waits.append(await progress_after(cc))
        return max(waits), [f"each node stopped, started and back in sync in"
                            f" {[round(t, 1) for t in took]} s; stored again"
                            f" {[round(w, 1) for w in waits]} s after each"]

    return await _under_load("rolling restart (3 brokers)", cc, logdir, n, rate=rate,
                             seed=seed, progress=progress, inject=inject)


# --- acks=all while ISR < min.insync.replicas ----------------------------------------------
class _Refusals(logging.Handler):
    """Counts aiokafka's produce retries the broker refused for too few in-sync replicas
    (the sender logs each; the Publisher only sees its futures wait)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "NotEnoughReplicas" in record.getMessage():
            self.count += 1


@dataclass
class _Blocked:
    timeouts: list[str]  # publish() raised PublishTimeout
    failures: list[str]  # flush() raised: deliveries failed
    expected: Expected


async def _publish_through(cc: ClusterCatalogue, n: int, seed: int, rate: float, log: AckLog,
                           blocked: _Blocked, progress: Progress) -> Expected:
    """The mixed load as an agent publishes it when Kafka stops acknowledging: a small
    buffer, ``publish()`` raising ``PublishTimeout`` once it is full (the record was never
    handed to Kafka: it is tried again at once), and each record whose delivery failed
    (e.g. queued behind a blocked batch for longer than the request timeout) published
    again at the end, until every record is acknowledged."""
    load = MixedLoad(seed, agents=16, prefix=f"c{cc.suffix}-", mix=MIX)
    pacing = Pacing(rate, progress)
    sent: list[tuple[asyncio.Future[Any], str, Any]] = []

    async def send(pub: Publisher, family: str, item: Any) -> None:
        while True:
            try:
                if isinstance(item, Tombstone):
                    fut = await pub.delete(family, *item.key)
                else:
                    fut = await pub.publish(family, item)
                break
            except PublishError as exc:  # PublishTimeout, or a send refused: never sent
                if not exc.retriable:  # as an agent would: only an outage is tried again
                    raise
                blocked.timeouts.append(str(exc))
        log.track_item(fut, family, item)
        sent.append((fut, family, item))

    async with Publisher(cc.settings, catalogue=cc.catalogue, max_buffered=200,
                         max_block_ms=2000) as pub:
        for i in range(n):
            family, item = next(load)
            await send(pub, family, item)
            blocked.expected.add(family, item)
            await pacing.after(i + 1)
        while True:
            try:
                await pub.flush()
            except PublishError as exc:
                if not exc.retriable:
                    raise
                blocked.failures.append(str(exc))
            failed = [(f, i) for fut, f, i in sent if fut.exception() is not None]
            for fut, _, _ in sent:  # each failed delivery says so itself, too
                error = fut.exception()
                if error is not None and not getattr(error, "retriable", False):
                    raise error
            if not failed:
                break
            sent.clear()
            for family, item in failed:
                # not counted again: a delivery that failed was never handed over (a
                # sent batch is retried until acknowledged: the producer is idempotent)
                await send(pub, family, item)
    pacing.finish(n)
    return blocked.expected


async def isr_below_min(cc: ClusterCatalogue, logdir: Path, n: int, *, rate: float,
                        seed: int, progress: Progress = None, outage_s: float = 6.0,
                        spread_s: float = 0) -> ClusterFaultResult:
    """``min.insync.replicas`` of the topics raised to 3 (= their replicas) and one
    broker killed (SIGKILL): the controller takes it out of every ISR, leaving 2 < 3, and
    the leaders refuse acks=all writes (NotEnoughReplicas). The broker stays down at
    least ``outage_s`` and until Kafka has refused a write and ``publish()`` has blocked
    and raised ``PublishTimeout``; meanwhile nothing may be acknowledged. After the
    broker is back every record is acknowledged and stored once.

    Why not two brokers killed at min.insync.replicas 2: these nodes are combined
    broker/controllers, so two of three down is also the controller quorum down; the ISR
    can then never shrink and the leader only times out (no NotEnoughReplicas).

    ``spread_s``: publish for at least that long (the ISR shrinks only once the
    controller fences the killed broker, ``broker.session.timeout.ms``: 9 s)."""
    cluster = await _cluster(cc)
    if spread_s:
        rate = min(rate, n / spread_s)
    log = AckLog(logdir / f"acks-{cc.suffix}.log")
    refusals = _Refusals()
    sender = logging.getLogger("aiokafka.producer.sender")
    saved = (sender.level, sender.propagate)
    sender.setLevel(logging.WARNING)
    sender.propagate = False  # counted, not printed (the report's progress display)
    sender.addHandler(refusals)
    blocked = _Blocked([], [], Expected())
    fleet, started = Fleet(cc, logdir, static=True), time.monotonic()
    await set_min_insync(cc, 3)
    try:
        fleet.start()
        fleet.start()
        publishing = asyncio.create_task(_publish_through(cc, n, seed, rate, log, blocked,
                                                          progress))
        fleet.tasks.append(publishing)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        await asyncio.sleep(1.0)
        at = await stored_total(cc)
        controller = await active_controller(cluster)
        victim = next(i for i in node_ids(cluster) if i != controller)
        await kill9(cluster, victim)
        topics = list(cc.topics.values())

        async def shrunk() -> bool:
            try:
                parts = await describe(cc.settings, topics)
            except KafkaError:
                return False
            return all(victim not in p["isr"] and len(p["isr"]) == 2 for p in parts.values())

        await async_wait_for(shrunk, 60, f"kafka-{victim} out of every ISR", interval=0.2)
        await asyncio.sleep(1.0)  # responses already on their way
        acked_before, timeouts_before, failed_before = (log.acked, len(blocked.timeouts),
                                                        log.failed)
        publishing_during = not publishing.done()
        outage = time.monotonic()

        async def refused_and_blocked() -> bool:
            # Requests already waiting for the dead replica end only at their timeout
            # (30 s); the retries after it are refused at once. The publisher raises
            # either way: publish() once its buffer stays full, or a delivery fails (a
            # batch queued behind a refused one for longer than the request timeout).
            raised = (len(blocked.timeouts) > timeouts_before or log.failed > failed_before)
            return refusals.count > 0 and raised and time.monotonic() - outage >= outage_s

        with contextlib.suppress(AssertionError):  # reported below, with the counts
            await async_wait_for(refused_and_blocked, 90, "NotEnoughReplicas and a blocked"
                                 " publish()", interval=0.2)
        outage_s = time.monotonic() - outage
        acked_during = log.acked - acked_before
        timeouts_during = len(blocked.timeouts) - timeouts_before
        failed_during = log.failed - failed_before
        refused = refusals.count
        await start_node(cluster, victim)
        healed = time.monotonic()
        recovery = await progress_after(cc)
        await manager.wait_in_sync(cluster, 180)
        in_sync = time.monotonic() - healed
        result = await _finish("acks=all while ISR < min.insync", cc, fleet, publishing,
                               started, recovery, [], drain_timeout=180)
    finally:
        fleet.kill_all()
        log.close()
        sender.removeHandler(refusals)
        sender.setLevel(saved[0])
        sender.propagate = saved[1]
    result.notes[:0] = [
        f"injected at stored={at}; kafka-{victim} killed -9, ISR 2 < min.insync 3 on every"
        f" partition; in {outage_s:.1f} s: {acked_during} acknowledged, {timeouts_during}"
        f" PublishTimeout, {failed_during} failed deliveries, {refused} NotEnoughReplicas"
        f" refusals retried; {log.failed} failed deliveries published again; back in sync"
        f" {in_sync:.1f} s after the restart",
        *(f"publish() raised: {t}" for t in blocked.timeouts[:1]),
        *(f"flush() raised (published again): {t}" for t in blocked.failures)]
    if not 0 < at < n:
        result.problems.append(f"the fault did not land while records flowed: stored={at}")
    if not publishing_during:
        result.problems.append("the publisher had finished before ISR < min.insync:"
                               " publish for longer (spread_s)")
    if acked_during:
        result.problems.append(f"{acked_during} records acknowledged while ISR < min.insync")
    if not (timeouts_during or failed_during):
        result.problems.append("the publisher never raised while ISR < min.insync")
    if not refused:
        result.problems.append("Kafka never answered NotEnoughReplicas")
    return await verify_history(result, cc, log, failures_ok=True)


__all__ = ["ClusterFaultResult", "controller_kill", "isr_below_min", "leader_kill",
           "pg_dsn", "progress_after", "rolling_restart"]
