"""Shared set-up of the chaos scenarios (the fast and long profiles, and
``benchmarks/chaos_report.py``): an isolated catalogue of three families carried by one
worker group, worker processes, a rate-limited mixed publisher that records what the
acknowledged records must leave behind, and progress probes."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient

from sinkfleet.cache import CacheLayout
from sinkfleet.cache.store import delete_prefix, redis_client
from sinkfleet.catalogue import Catalogue, Sink, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.produce import Pacing
from sinkfleet.dev.synthetic.base import Tombstone
from sinkfleet.dev.synthetic.loads import ExperienceLoad, MixedLoad
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from tests.support.catalogue import RunsWorkers
from tests.support.endpoints import get, samples
from tests.support.kafka import end_offsets as kafka_end_offsets
from tests.support.waiting import async_wait_for
from tests.support.worker import catches

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6
# family → (its sink in sinks/, short table prefix): one family of each sink mode.
FAMILIES = {"experience_event": ("experience_events", "ev"),
            "workflow_state": ("workflow_states", "wf"),
            "audit_entry": ("audit_entries", "au")}
MIX = {"experience_event": 7, "workflow_state": 2, "audit_entry": 1}
RECENT_KEEP = 20  # small, so that the recent cache is trimmed during a run

Tp = tuple[str, int]  # (topic, partition)


@dataclass
class ChaosCatalogue(RunsWorkers):
    """The project's events, workflow-state and audit families under unique topic, table
    and group names, carried by one worker spec (``chaos``)."""

    root: Path
    suffix: str
    settings: Settings
    catalogue: Catalogue
    group: str
    topics: dict[str, str]  # family → topic
    sinks: dict[str, str]  # family → sink (and table) name
    worker_spec: str = "chaos"

    def sink(self, family: str) -> Sink:
        return self.catalogue.sinks[self.sinks[family]]


def make_chaos_catalogue(tmp: Path, stack: Settings, *, max_records: int = 200,
                         max_age_ms: int = 50, partitions: int = PARTITIONS) -> ChaosCatalogue:
    suffix = uuid.uuid4().hex[:10]
    root = tmp / f"chaos-{suffix}"
    for sub in ("schemas", "topics", "sinks", "workers"):
        (root / sub).mkdir(parents=True)
    topics: dict[str, str] = {}
    sinks: dict[str, str] = {}
    for family, (sink_file, short) in FAMILIES.items():
        shutil.copy(ROOT / "schemas" / f"{family}.avsc", root / "schemas")
        sink = yaml.safe_load((ROOT / "sinks" / f"{sink_file}.yaml").read_text())
        topic = next(t for t in (yaml.safe_load(p.read_text())
                                 for p in sorted((ROOT / "topics").glob("*.yaml")))
                     if t["name"] == sink["topic"])
        topics[family] = f"test.chaos-{short}-{suffix}"
        sinks[family] = f"{short}_{suffix}"
        (root / "topics" / f"{short}.yaml").write_text(yaml.safe_dump(
            {**topic, "name": topics[family], "partitions": partitions}))
        sink |= {"name": sinks[family], "topic": topics[family], "table": sinks[family]}
        if sink.get("cache", {}).get("recent"):
            sink["cache"]["recent"]["keep"] = RECENT_KEEP
        (root / "sinks" / f"{short}.yaml").write_text(yaml.safe_dump(sink))
    group = f"test-chaos-{suffix}"
    (root / "workers" / "chaos.yaml").write_text(yaml.safe_dump(
        {"name": "chaos", "group": group, "sinks": list(sinks.values()),
         "batch": {"max_records": max_records, "max_age_ms": max_age_ms}}))
    settings = load_settings(home=root, state_dir=stack.state)
    return ChaosCatalogue(root, suffix, settings, load_catalogue(root), group, topics, sinks)


async def open_chaos_catalogue(tmp: Path, stack: Settings, **kwargs: Any) -> ChaosCatalogue:
    """A chaos catalogue with its topics created and its tables migrated."""
    cc = make_chaos_catalogue(tmp, stack, **kwargs)
    await apply_topics(cc.settings, cc.catalogue, say=lambda m: None)
    await migrate(cc.settings, cc.catalogue, lambda m: None)
    return cc


async def drop_chaos_catalogue(cc: ChaosCatalogue) -> None:
    """Drop its tables, bookkeeping rows, Redis keys and topics."""
    async with pg(cc.settings) as conn:
        for table in cc.sinks.values():
            await conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_history" CASCADE')
            await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                               f"sink:{table}:%")
        for bookkeeping in ("consumer_offsets", "workers"):
            await conn.execute(f"DELETE FROM sinkfleet.{bookkeeping} WHERE group_id = $1",
                               cc.group)
    await delete_cache_keys(cc)
    admin = AIOKafkaAdminClient(bootstrap_servers=cc.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([n for t in cc.topics.values() for n in (t, f"{t}.dlq")])
    finally:
        await admin.close()


async def delete_cache_keys(cc: ChaosCatalogue) -> int:
    """Every Redis key of the catalogue's sinks: FLUSHALL as far as these sinks can tell,
    without touching the keys of anyone else sharing the Redis."""
    client = redis_client(cc.settings)
    try:
        markers = [CacheLayout.of(cc.catalogue.sinks[s]).filled_key()
                   for s in cc.sinks.values()]
        return (sum([await delete_prefix(client, f"sinkfleet:{s}:") for s in cc.sinks.values()])
                + int(await client.delete(*markers)))
    finally:
        await client.aclose()


# --- worker processes ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """Worker processes of one group; every incarnation logs to its own file and serves
    its metrics on its own port. ``static``: each worker takes the lowest free slot and
    that slot's group instance id, as `sinkfleet fleet` does, so a worker started after
    a kill -9 gets the dead one's partitions back at once."""

    def __init__(self, cc: ChaosCatalogue, logdir: Path,
                 extra_env: dict[str, str] | None = None, *, static: bool = False) -> None:
        self.cc = cc
        self.logdir = logdir
        self.extra_env = extra_env or {}
        self.static = static
        self.slot_of: dict[int, int] = {}  # pid -> slot (static only)
        self.live: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.log_of: dict[int, Path] = {}
        self.port_of: dict[int, int] = {}
        self.tasks: list[asyncio.Task[Any]] = []

    def publish(self, n: int, seed: int, *, rate: float | None = None, poison: float = 0.0,
                progress: Callable[[int], None] | None = None,
                sent: Sent | None = None) -> asyncio.Task[Expected]:
        """``publish_mixed`` in the background; cancelled by :meth:`kill_all`."""
        task = start_publishing(self.cc, n, seed, rate=rate, poison=poison, progress=progress,
                                sent=sent)
        self.tasks.append(task)
        return task

    def start(self) -> subprocess.Popen[bytes]:
        log = self.logdir / f"worker-{len(self.logs):02d}.log"
        self.logs.append(log)
        port = free_port()
        env = {**self.extra_env, "SINKFLEET_METRICS_PORT": str(port)}
        slot = None
        if self.static:
            taken = {self.slot_of[p.pid] for p in self.live}
            slot = min(set(range(len(taken) + 1)) - taken)
            env["SINKFLEET_WORKER_INSTANCE_ID"] = f"{self.cc.group}-slot-{slot}"
        proc = self.cc.start_worker(log, extra_env=env)
        if slot is not None:
            self.slot_of[proc.pid] = slot
        self.live.append(proc)
        self.log_of[proc.pid] = log
        self.port_of[proc.pid] = port
        return proc

    async def wait_up(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Until the worker handles SIGTERM itself (the first thing `sinkfleet worker`
        does); a SIGTERM before that ends the interpreter with -15."""
        async def up() -> bool:
            return proc.poll() is not None or catches(proc.pid, signal.SIGTERM)

        await async_wait_for(up, timeout, f"worker {proc.pid} to start", interval=0.01)

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        self.live.remove(proc)

    async def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        """SIGTERM and wait without blocking the event loop (publisher, proxy)."""
        await self.wait_up(proc)
        self.live.remove(proc)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise AssertionError(f"worker {proc.pid} ignored SIGTERM for {timeout}s")
            await asyncio.sleep(0.05)
        return proc.returncode

    async def stop_all(self) -> list[int]:
        return [await self.stop(p) for p in list(self.live)]

    def kill_all(self) -> None:
        """The clean-up after a run, or after a failure: nothing of it keeps running."""
        for task in self.tasks:
            task.cancel()
        for proc in list(self.live):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.live.clear()

    async def metric(self, name: str) -> float:
        """``name`` summed over every label set and every live worker."""
        total = 0.0
        for proc in self.live:
            status, text = await asyncio.to_thread(
                get, f"http://127.0.0.1:{self.port_of[proc.pid]}/metrics")
            if status == 200:
                total += sum(v for (n, _), v in samples(text).items() if n == name)
        return total

    def tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-chars:]}"
                         for log in self.logs if log.exists())


# --- publishing --------------------------------------------------------------------------
@dataclass
class Expected:
    """What the acknowledged records must leave behind."""

    events: set[bytes] = field(default_factory=set)
    states: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)  # [max, deleted]
    history: set[tuple[Any, ...]] = field(default_factory=set)  # (*id, version, op)
    audit: set[str] = field(default_factory=set)
    poison: Counter[str] = field(default_factory=Counter)  # dead-letter stage → count
    published: int = 0  # Kafka records, every topic, poison included

    def add(self, family: str, item: Any) -> None:
        self.published += 1
        if family == "experience_event":
            self.events.add(item["event_id"])
        elif family == "audit_entry":
            self.audit.add(str(item["entry_id"]))
        elif isinstance(item, Tombstone):  # deletes the newest version seen so far
            entry = self.states[item.key]
            entry[1] = entry[0]
            self.history.add((*item.key, entry[0], "delete"))
        else:  # a re-published (stale) version is recognised, not recorded twice
            ident = (item["tenant_id"], item["workflow_id"])
            entry = self.states.setdefault(ident, [0, None])
            entry[0] = max(entry[0], item["version"])
            self.history.add((*ident, item["version"], "upsert"))

    def latest_versions(self) -> dict[tuple[Any, ...], int]:
        """Per id, the version the latest table must hold (ids deleted for good absent)."""
        return {i: v for i, (v, deleted) in self.states.items()
                if deleted is None or v > deleted}



Sent = Callable[[asyncio.Future[Any], str, Any], None]  # (delivery, family, record)


async def publish_mixed(cc: ChaosCatalogue, n: int, seed: int, *, rate: float | None = None,
                        poison: float = 0.0, progress: Callable[[int], None] | None = None,
                        sent: Sent | None = None) -> Expected:
    """Publish ``n`` records of the three families (``MIX``), at ``rate`` per second, plus a
    ``poison`` share of bad records on the events topic (half undecodable bytes, half
    valid Avro that no smallint column takes); wait until Kafka acknowledged all.
    ``sent`` hears each good record's delivery future (tests/chaos/history.py)."""
    rng = random.Random(f"poison:{seed}")
    load = MixedLoad(seed, agents=16, prefix=f"c{cc.suffix}-", mix=MIX)
    too_wide = ExperienceLoad(seed=seed, agents=4, agent_prefix=f"c{cc.suffix}-poison")
    expected = Expected()
    pacing = Pacing(rate, progress)
    async with Publisher(cc.settings, catalogue=cc.catalogue) as pub:
        for i in range(n):
            family, item = next(load)
            if isinstance(item, Tombstone):
                fut = await pub.delete(family, *item.key)
            else:
                fut = await pub.publish(family, item)
            if sent is not None:
                sent(fut, family, item)
            expected.add(family, item)
            if poison and rng.random() < poison:
                expected.published += 1
                if rng.random() < 0.5:
                    expected.poison["decode"] += 1
                    await pub.send_raw(cc.topics["experience_event"],
                                       b"garbage-" + rng.randbytes(16), key=rng.randbytes(8))
                else:
                    expected.poison["validate"] += 1
                    await pub.publish("experience_event",
                                      next(too_wide) | {"event_type": 70_000})
            await pacing.after(i + 1)
        await pub.flush()
    pacing.finish(n)
    return expected


def start_publishing(cc: ChaosCatalogue, n: int, seed: int, *, rate: float | None = None,
                     poison: float = 0.0, progress: Callable[[int], None] | None = None,
                     sent: Sent | None = None) -> asyncio.Task[Expected]:
    return asyncio.create_task(publish_mixed(cc, n, seed, rate=rate, poison=poison,
                                             progress=progress, sent=sent))


# --- progress ------------------------------------------------------------------------------
async def stored_offsets(cc: ChaosCatalogue) -> dict[Tp, int]:
    """The group's position as PostgreSQL holds it (the source of truth)."""
    async with pg(cc.settings) as conn:
        rows = await conn.fetch("SELECT topic, partition, next_offset FROM"
                                " sinkfleet.consumer_offsets WHERE group_id = $1", cc.group)
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def stored_total(cc: ChaosCatalogue) -> int:
    return sum((await stored_offsets(cc)).values())


async def end_offsets(settings: Settings, topics: list[str]) -> dict[Tp, int]:
    """Log end offsets of the partitions of ``topics`` that hold records."""
    ends = await kafka_end_offsets(settings, topics)
    return {(tp.topic, tp.partition): off for tp, off in ends.items() if off}


async def wait_stored_at_least(cc: ChaosCatalogue, n: int, timeout: float, what: str) -> None:
    async def enough() -> bool:
        return await stored_total(cc) >= n

    await async_wait_for(enough, timeout, what, interval=0.1)


async def wait_progress(cc: ChaosCatalogue, timeout: float = 60, *,
                        whole: bool = True) -> float:
    """Seconds from now (a heal) until the group stores again: every partition that had
    records waiting has moved (``whole``), or the total has (``whole=False``). 0 when
    nothing was waiting."""
    healed = time.monotonic()
    before = await stored_offsets(cc)
    ends = await end_offsets(cc.settings, list(cc.topics.values()))
    waiting = {tp for tp, end in ends.items() if before.get(tp, 0) < end}
    if not waiting:
        return 0.0

    async def moved() -> bool:
        now = await stored_offsets(cc)
        if not whole:
            return sum(now.values()) > sum(before.values())
        return all(now.get(tp, 0) > before.get(tp, 0) for tp in waiting)

    await async_wait_for(moved, timeout, "the group to store again after healing",
                         interval=0.05)
    return time.monotonic() - healed
