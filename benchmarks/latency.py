"""End-to-end latency: publish → row committed in PostgreSQL → visible in Redis.

One worker process (``sinkfleet worker``, the project's events batch policy unless
``--max-age-ms`` says otherwise) consumes a topic of the project's ``experience_events``
shape (copied into the throwaway ``bench_latency`` schema, its ``recent`` cache
included). First the worker's maximum rate is measured: it drains a backlog of
``--calibrate`` events (steady events/s, after its first stored batch). Then, for each
``--levels`` fraction of that rate, a Publisher in this process publishes at that rate
for ``--seconds``; each event's ``timestamp`` is the moment ``publish()`` is called.

* **Committed**: PostgreSQL's own commit time of the row's transaction
  (``pg_xact_commit_timestamp(xmin)``, needs ``track_commit_timestamp = on``; the local
  stack starts PostgreSQL with it) minus the event's timestamp. Exact, every row.
* **Visible in Redis**: a poller reads the newest score of every recent-cache key every
  ``--poll-ms``; an event is visible when its key's newest score reaches its timestamp
  (the cache is scored by that timestamp). Late by at most one poll.

Prints p50/p99/max per level and writes JSON (``--json``). The publisher shares the two
cores with the worker, as it would not in production: figures are an upper bound.

    .venv/bin/python benchmarks/latency.py                       # 10 % and 50 %, 60 s each
    .venv/bin/python benchmarks/latency.py --max-age-ms 50,100,250 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _common import (  # benchmarks/ is on sys.path as a script
    StoredOffsets,
    make_records,
    report_console,
)
from redis.exceptions import RedisError
from rich.table import Table

from sinkfleet.cache.layout import CacheLayout
from sinkfleet.cache.store import forget_sink, redis_client
from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "bench_latency"  # names of its own: other benchmarks may run at the same time
PREFIX = "bench-latency."
SINK = "latency_events"
SOURCE_SINK = "experience_events"  # the project's sink whose shape this copies
WORKER = "latency"
console = report_console()


@dataclass
class Level:
    label: str
    max_age_ms: int
    fraction: float
    rate: float  # events/s asked for
    events: int = 0
    seconds: float = 0.0  # publishing
    drain_seconds: float = 0.0  # after the last publish until all stored
    committed_ms: dict[str, float] = field(default_factory=dict)
    redis_ms: dict[str, float] = field(default_factory=dict)
    redis_seen: int = 0

    @property
    def achieved(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": round(at(0.50), 1), "p99": round(at(0.99), 1),
            "max": round(values[-1], 1), "n": len(values)}


# --- the catalogue and the worker --------------------------------------------------------
def _dump(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def build_catalogue(root: Path, project: Catalogue, topic: str, group: str,
                    max_age_ms: int) -> Catalogue:
    source = project.sinks[SOURCE_SINK]
    if not (root / "schemas").exists():
        shutil.copytree(project.root / "schemas", root / "schemas")
    for sub in ("topics", "sinks", "workers"):
        (root / sub).mkdir(exist_ok=True)
    _dump(root / "topics" / "latency.yaml",
          source.topic.model_dump(by_alias=True, exclude_none=True, mode="json")
          | {"name": topic})
    _dump(root / "sinks" / f"{SINK}.yaml",
          source.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
          | {"name": SINK, "topic": topic, "table": SINK, "schema": SCHEMA})
    events = next(w for w in project.workers.values() if SOURCE_SINK in w.sinks)
    spec = events.model_dump(by_alias=True, exclude_none=True, mode="json")
    spec["batch"] = spec.get("batch", {}) | {"max_age_ms": max_age_ms}
    _dump(root / "workers" / f"{WORKER}.yaml",
          spec | {"name": WORKER, "group": group, "sinks": [SINK]})
    return load_catalogue(root)


def project_max_age(project: Catalogue) -> int:
    return next(w for w in project.workers.values() if SOURCE_SINK in w.sinks).batch.max_age_ms


def start_worker(root: Path, settings: Settings) -> subprocess.Popen[bytes]:
    # the stack's state dir: its generated passwords live there, not under the copy's home
    env = dict(os.environ, SINKFLEET_HOME=str(root), SINKFLEET_STATE_DIR=str(settings.state))
    log = open(root / "worker.log", "wb")  # noqa: SIM115 - the process owns it
    return subprocess.Popen([sys.executable, "-m", "sinkfleet", "worker", "--spec", WORKER,
                             "--log-level", "WARNING"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_stored(stored: StoredOffsets, count: int, proc: subprocess.Popen[bytes],
                      timeout: float, root: Path) -> tuple[float, float | None]:
    """Until ``count`` offsets are stored: (monotonic time done, time of first store)."""
    deadline, first = time.monotonic() + timeout, None
    while True:
        done, now = await stored(), time.monotonic()
        if done and first is None:
            first = now
        if done >= count:
            return now, first
        if proc.poll() is not None:
            tail = (root / "worker.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"the worker exited (code {proc.returncode}):\n{tail}")
        if now > deadline:
            raise SystemExit(f"only {done} of {count} events stored after {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def reset(settings: Settings, catalogue: Catalogue | None = None) -> None:
    async with pg(settings) as conn:
        if catalogue is None:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
            # a fresh database has no sinkfleet tables yet: migrate() makes them next
            if await conn.fetchval("SELECT to_regclass('sinkfleet.schema_migrations')"):
                await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                                   f"sink:{SINK}:%")
                await conn.execute(
                    "DELETE FROM sinkfleet.consumer_offsets WHERE group_id LIKE $1",
                    PREFIX + "%")
        else:
            await conn.execute(f'TRUNCATE "{SCHEMA}"."{SINK}"')
    if catalogue is not None:
        client = redis_client(settings)
        try:
            await forget_sink(client, SINK)
        finally:
            await client.aclose()


async def require_commit_timestamps(settings: Settings) -> None:
    async with pg(settings) as conn:
        if await conn.fetchval("SHOW track_commit_timestamp") != "on":
            raise SystemExit(
                "PostgreSQL runs with track_commit_timestamp off: this benchmark reads each"
                " row's commit time from it. The local stack turns it on at start: run"
                " `sinkfleet stack down --only postgres && sinkfleet stack up`; elsewhere"
                " `ALTER SYSTEM SET track_commit_timestamp = on` and restart PostgreSQL.")


# --- publishing at a rate, and watching Redis --------------------------------------------
class RedisWatch:
    """Per recent-cache key, the published events not yet seen there, oldest first."""

    def __init__(self, settings: Settings, layout: CacheLayout, poll_s: float) -> None:
        self.client = redis_client(settings)
        self.layout, self.poll_s = layout, poll_s
        self.pending: dict[str, deque[tuple[int, float]]] = {}  # key -> (ts µs, wall s)
        self.latencies: list[float] = []

    def published(self, record: dict[str, Any], wall: float) -> None:
        key = self.layout.recent_key((record["agent_id"], record["episode_id"]))
        self.pending.setdefault(key, deque()).append((record["timestamp"], wall))

    async def poll_once(self) -> None:
        keys = [k for k, q in self.pending.items() if q]
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zrevrange(key, 0, 0, withscores=True)
        try:
            newest = await pipe.execute()
        except (RedisError, OSError):  # a slow answer on a busy machine: ask again
            return
        now = time.time()
        for key, top in zip(keys, newest, strict=True):
            if not top:
                continue
            score, queue = top[0][1], self.pending[key]
            while queue and queue[0][0] <= score:
                self.latencies.append((now - queue.popleft()[1]) * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set() or any(self.pending.values()):
            await self.poll_once()
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        await self.client.aclose()


async def publish_at(pub: Publisher, records: list[dict[str, Any]], rate: float,
                     seconds: float, watch: RedisWatch) -> tuple[int, float]:
    """Publish ``rate`` events/s for ``seconds`` (each stamped as it is published)."""
    family = "experience_event"
    t0, sent, last_us = time.monotonic(), 0, 0
    total = min(len(records), int(rate * seconds))
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            record = records[sent]
            wall = time.time()
            last_us = max(int(wall * 1e6), last_us + 1)  # unique, increasing per process
            record["timestamp"] = last_us
            watch.published(record, wall)
            await pub.publish(family, record)
            sent += 1
        await asyncio.sleep(0.002)
    await pub.flush()
    return sent, time.monotonic() - t0


async def committed_latencies(settings: Settings) -> list[float]:
    async with pg(settings) as conn:
        rows = await conn.fetch(
            f'SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts) * 1000 AS ms'
            f' FROM "{SCHEMA}"."{SINK}"')
    return [float(r["ms"]) for r in rows]


# --- one configuration: calibrate, then each level ---------------------------------------
async def run_config(settings: Settings, project: Catalogue, args: argparse.Namespace,
                     max_age_ms: int, run_id: str) -> list[Level]:
    with tempfile.TemporaryDirectory(prefix="sinkfleet-latency-") as tmp:
        root = Path(tmp)
        topic = f"{PREFIX}experience-events.{run_id}.a{max_age_ms}"
        group = f"{PREFIX}{run_id}.a{max_age_ms}"
        catalogue = build_catalogue(root, project, topic, group, max_age_ms)
        await reset(settings)
        await migrate(settings, catalogue, say=lambda _: None)
        await apply_topics(settings, catalogue, say=lambda _: None)
        layout = CacheLayout.of(catalogue.sinks[SINK])
        stored = StoredOffsets(settings, group)
        pub = Publisher(settings, catalogue=catalogue)
        await pub.start()
        proc: subprocess.Popen[bytes] | None = None
        levels: list[Level] = []
        try:
            # calibrate: a backlog first, then the worker drains it
            backlog = make_records(args.calibrate, 1)
            for record in backlog:
                await pub.publish("experience_event", record)
            await pub.flush()
            proc = start_worker(root, settings)
            done, first = await wait_stored(stored, args.calibrate, proc, args.timeout, root)
            assert first is not None
            drained = await stored()
            max_rate = (args.calibrate - min(drained, args.calibrate // 10)) / max(
                done - first, 1e-3) if args.max_rate is None else args.max_rate
            console.print(f"max_age_ms={max_age_ms}: the worker drains"
                          f" {max_rate:,.0f} events/s (its maximum rate here)")
            base = args.calibrate
            for fraction in args.levels:
                await reset(settings, catalogue)
                level = Level(f"{fraction:.0%}", max_age_ms, fraction, fraction * max_rate)
                records = make_records(int(level.rate * args.seconds) + 1, 7)
                watch = RedisWatch(settings, layout, args.poll_ms / 1000)
                stop = asyncio.Event()
                poller = asyncio.create_task(watch.run(stop))
                try:
                    console.print(f"  {level.label} of it: {level.rate:,.0f} events/s for"
                                  f" {args.seconds:.0f} s …")
                    level.events, level.seconds = await publish_at(
                        pub, records, level.rate, args.seconds, watch)
                    t_pub = time.monotonic()
                    done, _ = await wait_stored(stored, base + level.events, proc,
                                                args.timeout, root)
                    level.drain_seconds = done - t_pub
                    stop.set()
                    await asyncio.wait_for(poller, 30)
                except TimeoutError:
                    pass  # events never seen in Redis (evicted, expired): counted as unseen
                finally:
                    poller.cancel()
                    await watch.close()
                base += level.events
                level.committed_ms = percentiles(await committed_latencies(settings))
                level.redis_ms = percentiles(watch.latencies)
                level.redis_seen = len(watch.latencies)
                if level.committed_ms.get("n") != level.events:
                    raise SystemExit(f"{level.committed_ms.get('n')} rows stored of"
                                     f" {level.events} published")
                if level.achieved < 0.9 * level.rate:
                    console.print(f"  [yellow]warning: the publisher reached only"
                                  f" {level.achieved:,.0f} of {level.rate:,.0f} events/s:"
                                  " the machine is saturated and these latencies include"
                                  " its queueing; measure on a quiet machine[/]")
                levels.append(level)
        finally:
            if proc is not None:
                await asyncio.to_thread(stop_worker, proc)
            await pub.close()
            await stored.close()
        return levels


def report(levels: list[Level]) -> Table:
    table = Table("max_age_ms", "load", "events/s", "events", "committed p50", "p99", "max",
                  "Redis p50", "p99", "max", "drain s",
                  title="end-to-end latency, ms (publish → committed / → in Redis)")
    for lv in levels:
        c, r = lv.committed_ms, lv.redis_ms
        table.add_row(str(lv.max_age_ms), lv.label, f"{lv.achieved:,.0f}", f"{lv.events:,}",
                      *(f"{c.get(k, float('nan')):,.1f}" for k in ("p50", "p99", "max")),
                      *(f"{r.get(k, float('nan')):,.1f}" for k in ("p50", "p99", "max")),
                      f"{lv.drain_seconds:.2f}")
    return table


async def main_async(args: argparse.Namespace) -> list[Level]:
    home = {} if "SINKFLEET_HOME" in os.environ else {"home": ROOT}
    settings = load_settings(**home)
    project = load_catalogue(settings.home)
    await require_commit_timestamps(settings)
    ages = args.max_age_ms or [project_max_age(project)]
    run_id = time.strftime("%Y%m%d%H%M%S")
    levels: list[Level] = []
    for age in ages:
        levels += await run_config(settings, project, args, age, run_id)
    return levels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="publishing per level")
    ap.add_argument("--levels", type=lambda t: [float(x) for x in t.split(",")],
                    default=[0.1, 0.5], help="fractions of the measured maximum rate")
    ap.add_argument("--max-age-ms", type=lambda t: [int(x) for x in t.split(",")],
                    default=None, help="batch max_age_ms to try (default: the project's)")
    ap.add_argument("--calibrate", type=int, default=100_000,
                    help="events of the backlog that measures the maximum rate")
    ap.add_argument("--max-rate", type=float, default=None,
                    help="skip measuring: the worker's maximum events/s")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="Redis poll interval")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    levels = asyncio.run(main_async(args))
    console.print(report(levels))
    if args.json:
        args.json.write_text(json.dumps([asdict(lv) | {"achieved": lv.achieved}
                                         for lv in levels], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
