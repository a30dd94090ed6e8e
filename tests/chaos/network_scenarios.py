"""Network faults of a three-broker cluster (tests/chaos/network_cluster.py), each
steady → inject → heal → recover → verify like tests/chaos/scenarios.py, and returning
the same :class:`FaultResult`:

* ``zombie_worker``: a worker cut off from every broker but not from PostgreSQL, holding
  a batch; its partitions move to the other worker, which stores them; the zombie's late
  batch must be refused by the offsets fence in PostgreSQL (rolled back, nothing of it
  written), and nothing is lost or doubled.
* ``isolated_broker``: one broker (the leader of most partitions) cut off from the other
  brokers, controllers included, while an acks=all publisher and two workers run, until
  it has left every ISR; then healed, until it is back in every ISR.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.stack import manager
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from tests.chaos.cluster_scenarios import ClusterFaultResult, verify_history
from tests.chaos.history import AckLog
from tests.chaos.network_cluster import NetCluster
from tests.chaos.scenarios import FaultResult, Progress, _finish
from tests.chaos.support import (
    PARTITIONS,
    ChaosCatalogue,
    Fleet,
    make_chaos_catalogue,
    wait_progress,
    wait_stored_at_least,
)
from tests.support.endpoints import get, samples
from tests.support.waiting import async_wait_for

# The zombie's batches wait this long: longer than its Kafka session (6 s) plus the
# rebalance and the new owner's first stores, so the batch it holds when cut is written
# after its partitions have moved.
ZOMBIE_BATCH_AGE_MS = 15_000
FENCED = re.compile(r"^(\S+ \S+) WARNING sinkfleet\.worker: fenced: .*; the batch held"
                    r" (.*)$", re.M)


async def open_net_catalogue(tmp: Path, stack: Settings, cluster: NetCluster,
                             **kwargs: object) -> ChaosCatalogue:
    """A chaos catalogue (tests/chaos/support.py) on the cluster's Kafka and the stack's
    PostgreSQL and Redis: topics created (3 replicas, 2 in sync), tables migrated."""
    cc = make_chaos_catalogue(tmp, stack, **kwargs)  # type: ignore[arg-type]
    cc.settings = load_settings(home=cc.root, state_dir=stack.state,
                                kafka_bootstrap=cluster.settings.kafka_bootstrap,
                                kafka_brokers=3)
    await apply_topics(cc.settings, cc.catalogue, say=lambda m: None)
    await migrate(cc.settings, cc.catalogue, lambda m: None)
    return cc


def _fleet(cc: ChaosCatalogue, logdir: Path) -> Fleet:
    return Fleet(cc, logdir, extra_env={"SINKFLEET_KAFKA_BOOTSTRAP": cc.settings.kafka_bootstrap})


async def worker_metric(fleet: Fleet, proc: subprocess.Popen[bytes], name: str) -> float:
    """``name`` summed over its label sets, from one worker (0 until it serves them)."""
    try:
        status, text = await asyncio.to_thread(
            get, f"http://127.0.0.1:{fleet.port_of[proc.pid]}/metrics")
    except OSError:
        return 0.0
    if status != 200:
        return 0.0
    return sum(v for (n, _), v in samples(text).items() if n == name)


def _slow_copy(cc: ChaosCatalogue, tmp: Path) -> Path:
    """The catalogue again, its worker spec holding batches ZOMBIE_BATCH_AGE_MS (same
    group, topics and tables)."""
    root = tmp / "zombie-catalogue"
    shutil.copytree(cc.root, root)
    spec_file = root / "workers" / "chaos.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["batch"] = {"max_records": 1_000_000, "max_age_ms": ZOMBIE_BATCH_AGE_MS}
    spec_file.write_text(yaml.safe_dump(spec))
    return root


async def _history_rows_in(cc: ChaosCatalogue, ranges: dict[tuple[str, int], tuple[int, int]]
                           ) -> list[tuple[int, int, dt.datetime]]:
    """(partition, offset, recorded_at) of the workflow-state history rows whose Kafka
    offsets lie in ``ranges`` (of the workflow-state topic)."""
    topic, table = cc.topics["workflow_state"], cc.sinks["workflow_state"]
    rows: list[tuple[int, int, dt.datetime]] = []
    async with pg(cc.settings) as conn:
        for (t, p), (first, nxt) in ranges.items():
            if t != topic:
                continue
            rows += [(r[0], r[1], r[2]) for r in await conn.fetch(
                f'SELECT kafka_partition, kafka_offset, recorded_at FROM "{table}_history"'
                " WHERE kafka_partition = $1 AND kafka_offset >= $2 AND kafka_offset < $3",
                p, first, nxt)]
    return rows


def parse_fenced(log: str) -> list[tuple[dt.datetime, dict[tuple[str, int], tuple[int, int]]]]:
    """Each "fenced" line of a worker log: its time and the batch's offset ranges."""
    found = []
    for stamp, ranges in FENCED.findall(log):
        when = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone()
        parsed = {}
        for topic, part, first, nxt in re.findall(r"(\S+)\[(\d+)\]@(\d+)\.\.(\d+)", ranges):
            parsed[(topic, int(part))] = (int(first), int(nxt))
        found.append((when, parsed))
    return found


async def zombie_worker(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float, seed: int,
                        cluster: NetCluster, progress: Progress = None) -> FaultResult:
    """The owner runs; the zombie (on the VIA listener, batches held 15 s) joins and gets
    half the partitions; it is cut off from every broker 1 s later, holding a batch;
    after its session (6 s) the owner gets everything and stores it; the zombie then
    writes its held batch, which the fence must refuse; healed, it rejoins."""
    fleet, started = _fleet(cc, logdir), time.monotonic()
    try:
        owner = fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress)
        await wait_stored_at_least(cc, 1, 60, "the owner's first batches")
        direct = fleet.extra_env
        fleet.extra_env = {"SINKFLEET_KAFKA_BOOTSTRAP": cluster.via_bootstrap,
                           "SINKFLEET_HOME": str(_slow_copy(cc, logdir))}
        zombie = fleet.start()
        fleet.extra_env = direct
        zombie_log = fleet.log_of[zombie.pid]

        async def zombie_assigned() -> bool:
            return await worker_metric(fleet, zombie, "sinkfleet_assigned_partitions") > 0
        await async_wait_for(zombie_assigned, 60, "the zombie's share of the partitions")
        await asyncio.sleep(1.0)  # it holds a batch now (15 s to go)
        cut_at = time.monotonic()
        cluster.cut_via()

        async def owner_has_all() -> bool:
            return await worker_metric(fleet, owner, "sinkfleet_assigned_partitions") == (
                PARTITIONS * len(cc.topics))
        await async_wait_for(owner_has_all, 30, "the owner to get the zombie's partitions")
        moved_s = time.monotonic() - cut_at

        async def zombie_fenced() -> bool:
            return "fenced:" in zombie_log.read_text()
        # its batch is due 15 s after it began, ~14 s after the cut; if it never comes,
        # that is said below, after the invariants
        with contextlib.suppress(AssertionError):
            await async_wait_for(zombie_fenced, ZOMBIE_BATCH_AGE_MS / 1000 + 10,
                                 "the zombie's late batch to be fenced")
        fenced_metric = await worker_metric(fleet, zombie, "sinkfleet_fenced_batches_total")
        zombie_stored = await worker_metric(fleet, zombie, "sinkfleet_records_stored_total")
        cluster.heal_via()
        recovery = await wait_progress(cc)
        result = await _finish("worker cut off from Kafka (zombie)", cc, fleet, publishing,
                               started, recovery, [])
    finally:
        fleet.kill_all()
        cluster.heal_via()
    fenced = parse_fenced(zombie_log.read_text())
    result.notes.append(f"partitions moved {moved_s:.1f} s after the cut; zombie: fenced"
                        f" batches {fenced_metric:.0f}, rows stored {zombie_stored:.0f}")
    if not fenced or not fenced_metric:
        result.problems.append("the zombie's late batch was not refused by the fence"
                               f" (fenced batches {fenced_metric:.0f}, log lines {len(fenced)})")
    if zombie_stored:
        result.problems.append(f"the zombie stored {zombie_stored:.0f} row(s) while cut off")
    for when, ranges in fenced[:1]:
        # the fenced batch's records are stored once (the tally), and by the owner: every
        # history row of them was written before the zombie tried
        rows = await _history_rows_in(cc, ranges)
        late = [r for r in rows if r[2] >= when]
        result.notes.append(f"fenced batch: {sum(b - a for a, b in ranges.values())} records"
                            f" of {len(ranges)} partitions, {len(rows)} state-history rows"
                            f" of it, {len(rows) - len(late)} written before the fence")
        if late or not rows:
            result.problems.append(f"history rows of the fenced batch written at or after"
                                   f" the fence ({when}): {late[:5]} of {len(rows)}")
    return result


async def _describe(settings: Settings, topics: list[str] | None = None
                    ) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=5_000)
    try:
        await admin.start()
        return list(await admin.describe_topics(topics))
    finally:
        await admin.close()


async def _out_of_every_isr(cluster: NetCluster, node: int, topics: list[str],
                            seen: dict[int, int]) -> bool:
    """No partition (internal ones included) has ``node`` as leader or in its ISR; then
    ``seen`` holds the run's partitions led per broker in that same answer. The isolated
    broker's own answer is stale (it hears no controller and still names itself leader):
    ask until another broker answers, and never count leaders from a second, maybe stale,
    answer."""
    try:
        described = await _describe(cluster.settings)
    except KafkaError:
        return False
    parts = [p for t in described for p in t["partitions"]]
    if not parts or any(node in p["isr"] or p["leader"] == node for p in parts):
        return False
    seen.clear()
    seen.update(_count_leaders([t for t in described if t["topic"] in topics]))
    return True


def _count_leaders(described: list[dict[str, Any]]) -> dict[int, int]:
    count: dict[int, int] = {}
    for t in described:
        for p in t["partitions"]:
            count[p["leader"]] = count.get(p["leader"], 0) + 1
    return count


async def _leaders(settings: Settings, topics: list[str]) -> dict[int, int]:
    """Partitions led, per broker."""
    return _count_leaders(await _describe(settings, topics))


async def isolated_broker(cc: ChaosCatalogue, logdir: Path, n: int, *, rate: float,
                          seed: int, cluster: NetCluster, progress: Progress = None
                          ) -> ClusterFaultResult:
    """Two workers and an acks=all publisher (every acknowledgement logged for the
    independent history check, tests/chaos/history.py); the broker leading most of the run's
    partitions is isolated from the other two (black-holed both ways) until no ISR holds
    it, then healed until it is back in every ISR."""
    fleet, started = _fleet(cc, logdir), time.monotonic()
    victim: int | None = None
    topics = [t for top in cc.topics.values() for t in (top, f"{top}.dlq")]
    log = AckLog(logdir / f"acks-{cc.suffix}.log")  # for the independent history check
    try:
        fleet.start()
        fleet.start()
        publishing = fleet.publish(n, seed, rate=rate, progress=progress, sent=log.track_item)
        await wait_stored_at_least(cc, 1, 60, "the first batches")
        await asyncio.sleep(1.0)
        leaders = await _leaders(cc.settings, topics)
        victim = max(leaders, key=lambda b: leaders[b])
        cut_at = time.monotonic()
        cluster.isolate(victim)
        node, moved = victim, {}
        await async_wait_for(lambda: _out_of_every_isr(cluster, node, topics, moved), 60,
                             f"broker {victim} out of every ISR", interval=0.5)
        out_s = time.monotonic() - cut_at
        refused = sum(cluster.proxies.proxies[p].refused for p in cluster.paths_of(victim))
        cluster.reconnect(victim)
        healed_at = time.monotonic()

        async def in_sync() -> float:
            await manager.wait_in_sync(cluster.settings, timeout=120)
            return time.monotonic() - healed_at
        recovery, in_sync_s = await asyncio.gather(wait_progress(cc), in_sync())
        result = await _finish(f"broker isolated from the others (ISR {out_s:.0f} s)", cc,
                               fleet, publishing, started, recovery, [])
    finally:
        fleet.kill_all()
        log.close()
        if victim is not None:
            cluster.reconnect(victim)
    result.fault = "broker isolated from the other brokers"
    result.notes.append(f"broker {victim} led {leaders[victim]} of {sum(leaders.values())}"
                        f" partitions; out of every ISR {out_s:.1f} s after the cut (then"
                        f" leading {moved.get(victim, 0)}); back in every ISR {in_sync_s:.1f}"
                        " s after the heal")
    result.notes.append(f"{refused} connection(s) from or to broker {victim} black-holed")
    if not refused:
        result.problems.append(f"nothing tried to reach broker {victim} while isolated:"
                               " the paths between the brokers bypass the proxies")
    if moved.get(victim, 0):
        result.problems.append(f"broker {victim} still led {moved[victim]} partition(s)"
                               " while isolated")
    return await verify_history(result, cc, log)
