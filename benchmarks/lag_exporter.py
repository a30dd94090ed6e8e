"""The lag exporter at scale: what a collection and a scrape cost, how exact lag in
seconds is, and what polling costs the workers.

(1) scrape cost  One topic with P partitions (default 100) and R = 2G + 10 records on
                 each (raw aiokafka producer, explicit partition, timestamps one second
                 apart), and G consumer groups (default 50): group g commits offset g on
                 every partition (assign, commit, stop), so G x P group-partitions
                 (5,000), each waiting at its own record. ``LagCollector.collect()`` is
                 timed
                   cold   the first call: it reads the timestamp of every
                          first-unconsumed record (G x P of them, each partition
                          read forward from its lowest such offset);
                   warm   the median of 5 later calls (timestamps cached);
                   moved  after every group committed G records further on: G x P new
                          offsets to read again, which is what every poll costs when
                          all groups are consuming;
                   full history  warm, with every partition's history full (720
                          samples: an hour at the default 5 s interval); the memory
                          that history takes is measured too.
                 Each call is split into phases (list and describe the groups, fetch
                 their offsets, list topics, log bounds, timestamps; the rest is
                 CPU: samples, history and statuses). The cold log bounds depend on
                 how many topics the collection asks about (this topic and every
                 ``.dlq`` topic in the cluster), which is recorded. Then a
                 ``LagExporter`` in this process (port 0, no second poll) serves
                 /metrics and /api/lag from its snapshot: the first GET (which
                 renders the snapshot), then the median of later ones, size, series.
(2) accuracy     For a handful of (group, partition) pairs, the collector's lag_seconds
                 against the true age, at the snapshot's time, of the first unconsumed
                 record, read independently (assign, seek to the offset the benchmark
                 committed, getone). Then what a scraper sees: /metrics of an exporter
                 polling every ``--interval`` s (default 5, the exporter's default),
                 fetched every 0.5 s from its second snapshot on (the first, cold one
                 is older), against the true age at the start of each fetch.
                 The groups are stalled, so the true age grows with the clock: a figure
                 computed at poll time is short by the snapshot's age (at most interval
                 + 2 x the collection time, also reported); one aged to the scrape time
                 (the exporter does this since 70292e1) is exact.
(3) workers      One worker process (``python -m sinkfleet worker``, a catalogue made by
                 ``tests.support.catalogue.make_catalogue``) drains a backlog of N experience
                 events (default 100,000; the same records, fixed seed and clock, are
                 produced with ``sinkfleet.dev.produce.produce`` into each run's own
                 topic before any run) into a fresh table: A without an exporter, B
                 while an exporter process polls every group in Kafka each second (the
                 G x P bench groups included), alternated A B A B after one warm-up run
                 (W, not counted: the first run after producing is slower). Before each
                 run PostgreSQL is checkpointed and dirty pages synced. The exporter
                 process runs ``LagExporter.run`` as ``sinkfleet lag-exporter
                 --interval 1`` would (spawned, so that it reports its port back),
                 and the worker starts once its first poll is done; its CPU time and
                 resident memory (RSS, at the end of the run) are recorded.
                 events/s is N over the time from starting the process until the
                 offsets stored with the rows cover N; "steady" is the rate after the
                 first batch was stored (it leaves out process start and group join).
                 The ratio B/A compares the medians.

Rerunnable, one run at a time: topics and groups are named after the run and deleted
at the end (the groups with a DeleteGroups request: aiokafka's admin client has no
``delete_consumer_groups``), with the tables and their rows in sinkfleet.*.

Usage::

    .venv/bin/python benchmarks/lag_exporter.py [--groups 50] [--partitions 100]
        [--count 100000] [--rounds 2] [--json PATH] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing as mp
import os
import platform
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (  # benchmarks/ is on sys.path when run as a script
    StoredOffsets,
    profiled,
    settle,
)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DeleteGroupsRequest
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.produce import produce
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.ops.lag.collect import LagCollector, Snapshot
from sinkfleet.ops.lag.exporter import LagExporter
from sinkfleet.ops.lag.model import PartitionHistory, Sample
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate

if TYPE_CHECKING:
    from tests.support.catalogue import TestCatalogue

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench.lag."  # the scale topic and its groups
FAMILY = "experience_event"
HISTORY_FULL = 720  # PartitionHistory's maxlen
HISTORY_STEP_S = 5.0  # the exporter's default interval
WARM_CALLS = 5
GETS = 10
POLL_S = 0.05
START_US = 1_764_000_000_000_000  # ExperienceLoad's clock: the same records in every topic
ATTEMPTS = 3
# Collections that failed and were retried. collect() asks for the log bounds of every
# .dlq topic in the cluster, so one deleted while it runs (by others sharing the stack,
# e.g. the test suite) makes it time out after 10 s.
RETRIED: list[str] = []

console = Console()


# --- run description ----------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    groups: int
    partitions: int
    count: int
    interval: float  # the exporter whose staleness (2) measures
    worker_interval: float  # the exporter running beside the worker in (3)
    rounds: int
    warmup: int
    seed: int
    json_path: Path
    profile_dir: Path | None
    timeout: float


@dataclass(frozen=True)
class ScaleRun:
    run_id: str
    groups: int
    partitions: int

    @property
    def topic(self) -> str:
        return f"{PREFIX}{self.run_id}"

    @property
    def group_names(self) -> list[str]:
        return [f"{PREFIX}{self.run_id}.g{g:03d}" for g in range(self.groups)]

    @property
    def records_per_partition(self) -> int:
        return 2 * self.groups + 10  # room for the first offsets (g) and the moved (G + g)

    @property
    def tps(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in range(self.partitions)]


def _make_catalogue(tmp: Path, settings: Settings) -> TestCatalogue:
    """tests.support.catalogue.make_catalogue, with the project's events worker batch policy."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.catalogue import make_catalogue

    return make_catalogue(tmp, settings, max_records=5000, max_age_ms=250)


# --- Kafka and PostgreSQL helpers ---------------------------------------------------------
@contextlib.asynccontextmanager
async def kafka_admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=30_000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_scale_topic(settings: Settings, run: ScaleRun) -> None:
    """Create the topic and wait until every partition has a leader."""
    async with kafka_admin(settings) as admin:
        await admin.create_topics([NewTopic(run.topic, run.partitions, 1)], timeout_ms=30_000)
        deadline = time.monotonic() + 60
        while True:
            [meta] = await admin.describe_topics([run.topic])
            led = [p for p in meta["partitions"] if p["error_code"] == 0 and p["leader"] >= 0]
            if meta["error_code"] == 0 and len(led) == run.partitions:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{run.topic}: {len(led)} of {run.partitions} partitions"
                                   " have a leader after 60 s")
            await asyncio.sleep(0.2)


async def produce_raw(settings: Settings, run: ScaleRun) -> None:
    """R records on every partition, timestamps one second apart (the oldest R s ago)."""
    records = run.records_per_partition
    base_ms = int(time.time() * 1000) - records * 1000
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(records):
            for tp in run.tps:
                futures.append(await producer.send(
                    tp.topic, b"x" * 100, key=f"{tp.partition}:{i}".encode(),
                    partition=tp.partition, timestamp_ms=base_ms + i * 1000))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def commit_groups(settings: Settings, run: ScaleRun, offset: Callable[[int], int],
                        progress: Progress, label: str) -> None:
    """Group g commits ``offset(g)`` on every partition, as a consumer that then leaves."""
    task = progress.add_task(label, total=run.groups)
    gate = asyncio.Semaphore(8)

    async def one(g: int, name: str) -> None:
        async with gate:
            consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                        group_id=name, enable_auto_commit=False)
            await consumer.start()
            try:
                consumer.assign(run.tps)
                await consumer.commit(dict.fromkeys(run.tps, offset(g)))
            finally:
                await consumer.stop()
            progress.advance(task)

    await asyncio.gather(*(one(g, name) for g, name in enumerate(run.group_names)))
    progress.remove_task(task)


async def true_timestamps(settings: Settings, wanted: list[tuple[TopicPartition, int]]
                          ) -> dict[tuple[TopicPartition, int], float]:
    """The timestamp of the record at each (partition, offset), read with a plain consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        out = {}
        for tp, off in wanted:
            consumer.assign([tp])
            consumer.seek(tp, off)
            record = await asyncio.wait_for(consumer.getone(), 10)
            if record.offset != off:
                raise RuntimeError(f"{tp}: asked for offset {off}, got {record.offset}")
            out[(tp, off)] = record.timestamp / 1000
        return out
    finally:
        await consumer.stop()


async def delete_groups(settings: Settings, groups: list[str]) -> dict[str, int]:
    """DeleteGroups (API 42) to each group's coordinator: aiokafka's admin client has no
    ``delete_consumer_groups``. Returns the error code per group (0 = deleted)."""
    if not groups:
        return {}
    async with kafka_admin(settings) as admin:
        by_node: dict[int, list[str]] = {}
        for g in groups:
            by_node.setdefault(await admin.find_coordinator(g), []).append(g)
        codes: dict[str, int] = {}
        for node, names in by_node.items():
            response = await admin._send_request(DeleteGroupsRequest(names), node)
            codes.update(dict(response.results))
        return codes


async def delete_topics(settings: Settings, names: list[str]) -> list[str]:
    async with kafka_admin(settings) as admin:
        doomed = sorted(set(names) & set(await admin.list_topics()))
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=30_000)
        return doomed


async def leftovers(settings: Settings) -> tuple[list[str], list[str]]:
    """Topics and groups an interrupted earlier run of this benchmark left behind."""
    async with kafka_admin(settings) as admin:
        topics = [t for t in await admin.list_topics() if t.startswith(PREFIX)]
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(PREFIX)]
    return topics, groups




async def disable_autovacuum(settings: Settings, table: str) -> None:
    """Keep autovacuum of an earlier run's table from landing in a later run."""
    async with pg(settings) as conn:
        leaves = await conn.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE $1",
            table.replace("_", "\\_") + "%")
        for leaf in leaves:
            await conn.execute(f"ALTER TABLE {leaf['name']} SET (autovacuum_enabled = off)")


async def drop_catalogues(settings: Settings, made: list[TestCatalogue]) -> None:
    from tests.support.catalogue import drop_catalogues as drop  # ROOT is on sys.path by now

    await drop(settings, made)


# --- HTTP ---------------------------------------------------------------------------------
async def http_get(port: int, path: str) -> tuple[float, bytes]:
    """GET on a fresh connection (the server closes it); seconds and body."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    took = time.perf_counter() - started
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise RuntimeError(f"GET {path}: {status!r}")
    return took, body


async def wait_http(port: int, path: str, timeout: float, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, RuntimeError):
            await http_get(port, path)
            return
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no 200 from {path} after {timeout:.0f}s")
        await asyncio.sleep(0.2)


# prometheus_client writes the labels sorted: group, partition, topic
_LAG_LINE = re.compile(r'^sinkfleet_group_lag_seconds\{group="([^"]*)",partition="(\d+)",'
                       r'topic="([^"]*)"\} (\S+)$', re.M)
_AT_LINE = re.compile(r"^sinkfleet_exporter_last_collect_timestamp_seconds (\S+)$", re.M)


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


@contextlib.asynccontextmanager
async def running_exporter(settings: Settings, interval: float, groups: list[str] | None
                           ) -> AsyncIterator[tuple[LagExporter, int]]:
    """A LagExporter in this process on a free port, once its first snapshot is in (a new
    exporter if its first poll failed: it would wait a whole interval to try again)."""
    for attempt in range(1, ATTEMPTS + 1):
        exporter = LagExporter(settings, interval=interval, groups=groups)
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(exporter.run("127.0.0.1", 0, bound.set_result))
        try:
            port = await asyncio.wait_for(bound, 30)
            while exporter.snapshot is None and exporter._last_error is None:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        except BaseException:
            exporter.stop()
            await task
            raise
        if exporter.snapshot is not None:
            break
        exporter.stop()
        await task
        if attempt == ATTEMPTS:
            raise RuntimeError(f"the exporter's first poll failed: {exporter._last_error}")
        RETRIED.append(f"exporter's first poll: {exporter._last_error}")
    try:
        yield exporter, port
    finally:
        exporter.stop()
        await task


# --- (1) collection cost ------------------------------------------------------------------
class Phases:
    """Wall time of each step of ``collect()``, by wrapping the calls it makes."""

    NAMES = ("groups", "offsets", "topics", "bounds", "timestamps")

    def __init__(self, collector: LagCollector) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.rounds = 0
        self._wrap(collector, "_groups", "groups")
        self._wrap(collector, "_committed", "offsets")
        self._wrap(collector, "_topics", "topics")
        self._wrap(collector._meta, "end_offsets", "bounds")
        self._wrap(collector._meta, "beginning_offsets", "bounds")
        self._wrap(collector, "_timestamps", "timestamps")
        self._wrap(collector._peek, "getmany", "rounds")  # one fetch round each, at most

    def _wrap(self, obj: Any, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.spans.setdefault(name, []).append((started, time.perf_counter()))

        setattr(obj, attr, timed)

    def reset(self) -> None:
        self.spans = {}

    def summary(self, total: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.NAMES:
            spans = self.spans.get(name, [])
            if name == "offsets":  # concurrent: first start to last end
                out[name] = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0
            else:
                out[name] = sum(e - s for s, e in spans)
        out["cpu_rest"] = max(0.0, total - sum(out.values()))
        out["peek_rounds"] = len(self.spans.get("rounds", []))
        return out


@dataclass
class Timing:
    what: str
    seconds: float
    phases: dict[str, float]
    group_partitions: int
    calls: int = 1


async def timed_collect(collector: LagCollector, phases: Phases, what: str,
                        profile: Path | None = None) -> tuple[Snapshot, float, dict[str, float]]:
    """One timed collect(); retried if it failed (see RETRIED)."""
    for attempt in range(1, ATTEMPTS + 1):
        phases.reset()
        try:
            with profiled(profile):
                started = time.perf_counter()
                snap = await collector.collect()
                seconds = time.perf_counter() - started
        except KafkaError as exc:
            if attempt == ATTEMPTS:
                raise
            RETRIED.append(f"{what}: {type(exc).__name__}: {exc}")
        else:
            return snap, seconds, phases.summary(seconds)
    raise AssertionError("unreachable")


async def cold_collect(settings: Settings, run: ScaleRun, profile: Path | None
                       ) -> tuple[LagCollector, Phases, Snapshot, float, dict[str, float]]:
    """The first collect() of a new collector (a new one again if it failed)."""
    for attempt in range(1, ATTEMPTS + 1):
        collector = LagCollector(settings, groups=run.group_names)
        phases = Phases(collector)
        await collector.start()
        try:
            with profiled(profile):
                started = time.perf_counter()
                snap = await collector.collect()
                seconds = time.perf_counter() - started
            return collector, phases, snap, seconds, phases.summary(seconds)
        except KafkaError as exc:
            await collector.close()
            if attempt == ATTEMPTS:
                raise
            RETRIED.append(f"cold: {type(exc).__name__}: {exc}")
        except BaseException:
            await collector.close()
            raise
    raise AssertionError("unreachable")


def _median_phases(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def group_partitions(snap: Snapshot) -> int:
    return sum(len(g.partitions) for g in snap.groups)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill_history(collector: LagCollector) -> int:
    """Make every partition's history full: copies of its last sample, 5 s apart (an hour
    at the default interval), then the last sample itself, added as polls add them (the
    status window is brought up to date too, as each poll does)."""
    added = 0
    for key, old in collector.history.items():
        last = old.last
        assert last is not None
        hist = PartitionHistory(old.maxlen)
        for k in range(HISTORY_FULL - 1, 0, -1):
            hist.add(Sample(last.at - HISTORY_STEP_S * k, last.committed, last.log_start,
                            last.log_end, last.first_unconsumed_ts))
        hist.add(last)
        hist.status(collector.window_seconds, collector.stall_seconds)
        collector.history[key] = hist
        added += HISTORY_FULL - 1
    return added


async def bench_collect(settings: Settings, run: ScaleRun, opts: Options,
                        progress: Progress) -> tuple[list[Timing], dict[str, Any],
                                                     list[Snapshot]]:
    """Cold, warm, moved and full-history collections of the bench groups."""
    prof = opts.profile_dir
    timings: list[Timing] = []
    memory: dict[str, Any] = {}
    async with kafka_admin(settings) as admin:
        topics = await admin.list_topics()
    memory["cluster"] = {"topics": len(topics),
                         "dlq_topics": sum(t.endswith(".dlq") for t in topics)}
    task = progress.add_task("(1) collect: cold", total=None)
    collector, phases, cold, seconds, ph = await cold_collect(
        settings, run, prof / "collect_cold.pstats" if prof else None)
    try:
        timings.append(Timing("cold", seconds, ph, group_partitions(cold)))
        progress.update(task, description=f"(1) collect: warm x{WARM_CALLS}")
        warm = [await timed_collect(collector, phases, "warm") for _ in range(WARM_CALLS)]
        timings.append(Timing("warm", statistics.median(w[1] for w in warm),
                              _median_phases([w[2] for w in warm]),
                              group_partitions(warm[-1][0]), WARM_CALLS))
        progress.remove_task(task)
        await commit_groups(settings, run, lambda g: run.groups + g, progress,
                            "(1) every group moves G records on")
        task = progress.add_task("(1) collect: moved", total=None)
        moved, seconds, ph = await timed_collect(
            collector, phases, "moved", prof / "collect_moved.pstats" if prof else None)
        timings.append(Timing("moved", seconds, ph, group_partitions(moved)))
        progress.update(task, description="(1) collect: full history")
        gc.collect()
        before = rss_bytes()
        added = fill_history(collector)
        gc.collect()
        memory |= {"samples": added + len(collector.history),
                   "rss_bytes": rss_bytes() - before, "group_partitions": len(collector.history)}
        memory["bytes_per_sample"] = memory["rss_bytes"] / memory["samples"]
        full = [await timed_collect(collector, phases, "full",
                                    prof / "collect_full.pstats" if prof and i == 0 else None)
                for i in range(3)]
        timings.append(Timing("full", statistics.median(f[1] for f in full),
                              _median_phases([f[2] for f in full]),
                              group_partitions(full[-1][0]), 3))
        gc_started = time.perf_counter()
        gc.collect()
        memory["full_gc_seconds"] = time.perf_counter() - gc_started
        progress.remove_task(task)
    finally:
        await collector.close()
    del collector
    gc.collect()
    return timings, memory, [cold, moved]


async def bench_http(settings: Settings, run: ScaleRun, progress: Progress) -> dict[str, Any]:
    """GET /metrics and /api/lag from an exporter's cached snapshot (no poll in between)."""
    task = progress.add_task("(1) exporter: first poll, then GETs", total=None)
    out: dict[str, Any] = {}
    async with running_exporter(settings, 3600.0, run.group_names) as (exporter, port):
        for path in ("/metrics", "/api/lag"):
            first, _ = await http_get(port, path)  # renders the snapshot
            times, body = [], b""
            for _ in range(GETS):
                took, body = await http_get(port, path)
                times.append(took)
            out[path] = {"first_s": first, "median_s": statistics.median(times),
                         "max_s": max(times), "bytes": len(body), "gets": GETS}
        text = (await http_get(port, "/metrics"))[1].decode()
        out["/metrics"]["series"] = series_count(text)
        out["/metrics"]["lag_seconds_series"] = len(_LAG_LINE.findall(text))
        out["first_poll_s"] = exporter.snapshot.seconds if exporter.snapshot else None
    progress.remove_task(task)
    return out


# --- (2) accuracy -------------------------------------------------------------------------
def accuracy_pairs(run: ScaleRun) -> list[tuple[int, int]]:
    """(group index, partition) pairs: first, middle and last of each."""
    gs = sorted({0, run.groups // 2, run.groups - 1})
    ps = sorted({0, run.partitions // 3, 2 * run.partitions // 3, run.partitions - 1})
    return [(g, p) for g in gs for p in ps]


async def bench_accuracy(settings: Settings, run: ScaleRun, snaps: list[Snapshot],
                         offsets: list[Callable[[int], int]]) -> dict[str, Any]:
    """lag_seconds of each snapshot against the independently read record timestamps."""
    names = run.group_names
    checks = []
    for snap, offset in zip(snaps, offsets, strict=True):
        by_key = {(g.group, p.partition): p for g in snap.groups for p in g.partitions}
        wanted = [(TopicPartition(run.topic, p), offset(g)) for g, p in accuracy_pairs(run)]
        truth = await true_timestamps(settings, wanted)
        for (g, p), (tp, off) in zip(accuracy_pairs(run), wanted, strict=True):
            lag = by_key[(names[g], p)]
            true_age = snap.at - truth[(tp, off)]
            checks.append({"group": names[g], "partition": p, "offset": off,
                           "collector_offset": lag.sample.committed,
                           "lag_seconds": lag.sample.lag_seconds, "true_age": true_age,
                           "error": (None if lag.sample.lag_seconds is None
                                     else lag.sample.lag_seconds - true_age)})
    errors = [abs(c["error"]) for c in checks if c["error"] is not None]
    return {"pairs": len(checks), "unknown": sum(c["error"] is None for c in checks),
            "wrong_offset": sum(c["offset"] != c["collector_offset"] for c in checks),
            "max_abs_error_s": max(errors) if errors else None,
            "collect_seconds": [s.seconds for s in snaps], "checks": checks}


async def bench_staleness(settings: Settings, run: ScaleRun, opts: Options,
                          progress: Progress) -> dict[str, Any]:
    """Served lag_seconds against the true age at the start of each scrape."""
    pairs = accuracy_pairs(run)
    names = run.group_names
    wanted = [(TopicPartition(run.topic, p), run.groups + g) for g, p in pairs]
    truth = await true_timestamps(settings, wanted)
    ts = {(names[g], p): truth[w] for (g, p), w in zip(pairs, wanted, strict=True)}
    duration = max(3 * opts.interval, 10.0)
    task = progress.add_task(f"(2) scraping every 0.5 s for {duration:.0f} s", total=None)
    errors: list[float] = []
    ages: list[float] = []
    get_times: list[float] = []
    collects: dict[float, float] = {}  # snapshot time -> how long its collection took
    async with running_exporter(settings, opts.interval, names) as (exporter, port):
        first, deadline = exporter.snapshot, time.monotonic() + 60 + opts.interval
        while exporter.snapshot is first:  # the first (cold) poll is older: start after it
            if time.monotonic() > deadline:
                raise TimeoutError("the exporter made no second snapshot")
            await asyncio.sleep(0.05)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            at = time.time()
            took, body = await http_get(port, "/metrics")
            get_times.append(took)
            text = body.decode()
            served = {(m[0], int(m[1])): float(m[3]) for m in _LAG_LINE.findall(text)}
            snap_at = float(_AT_LINE.search(text).group(1))  # type: ignore[union-attr]
            ages.append(at - snap_at)
            errors += [served[k] - (at - t) for k, t in ts.items()]
            if exporter.snapshot is not None:
                collects[exporter.snapshot.at] = exporter.snapshot.seconds
            await asyncio.sleep(max(0.0, 0.5 - took))
    progress.remove_task(task)
    took = [collects[at] for at in sorted(collects)]
    # snapshot k is served from the end of its collection to the end of the next one
    bound = opts.interval + max(a + b for a, b in zip(took, [*took[1:], took[-1]],
                                                       strict=True))
    return {"interval_s": opts.interval, "scrapes": len(get_times),
            "max_abs_error_s": max(abs(e) for e in errors),
            "mean_abs_error_s": statistics.fmean(abs(e) for e in errors),
            "max_snapshot_age_s": max(ages), "collect_seconds": took, "bound_s": bound,
            "get_median_s": statistics.median(get_times), "get_max_s": max(get_times)}


# --- (3) cost to the workers --------------------------------------------------------------
@dataclass
class WorkerRun:
    run: int
    kind: str  # A: no exporter, B: exporter polling
    events: int
    seconds: float
    startup_s: float
    first_rows: int
    worker_cpu_s: float  # the worker process's user + system time
    machine_busy: float  # share of all CPUs busy during the run (everything on the box)
    rows: int = 0
    exporter: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def steady_rate(self) -> float | None:
        if self.seconds <= self.startup_s:  # everything came in the first batch
            return None
        return (self.events - self.first_rows) / (self.seconds - self.startup_s)

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"events_per_s": self.rate, "steady_events_per_s": self.steady_rate}


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


def rss_of(pid: int) -> int:
    """Resident memory of a process, bytes."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a worker drains, stores and exits), SIGKILL after 60 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
    except TimeoutError:
        proc.kill()
        await asyncio.to_thread(proc.wait)


def exporter_child(settings: Settings, interval: float, port: Any, log: str) -> None:
    """Spawned process: what `sinkfleet lag-exporter --port 0 --interval I` does (the CLI
    itself cannot be used: it builds the exporter before the event loop runs, which
    aiokafka refuses), until SIGTERM."""
    logging.basicConfig(level=logging.INFO, filename=log,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        exporter = LagExporter(settings, interval=interval)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, exporter.stop)
        await exporter.run("127.0.0.1", 0, lambda p: setattr(port, "value", p))

    asyncio.run(main())


@contextlib.asynccontextmanager
async def exporter_process(settings: Settings, interval: float, log: Path
                           ) -> AsyncIterator[tuple[int, int]]:
    """A lag exporter process over every group, once its first poll answered: (pid, port)."""
    ctx = mp.get_context("spawn")
    port = ctx.Value("i", 0)
    proc = ctx.Process(target=exporter_child, args=(settings, interval, port, str(log)),
                       name="bench-lag-exporter")
    proc.start()

    def alive() -> None:
        if not proc.is_alive():
            raise RuntimeError(f"the exporter exited with {proc.exitcode}; see {log}")

    try:
        deadline = time.monotonic() + 60
        while not port.value:
            alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the exporter did not bind a port")
            await asyncio.sleep(0.05)
        await wait_http(port.value, "/healthz", 300, alive)
        assert proc.pid is not None
        yield proc.pid, port.value
    finally:
        await asyncio.to_thread(_stop_child, proc)


def _stop_child(proc: Any) -> None:
    if proc.is_alive():
        proc.terminate()  # SIGTERM: the exporter stops polling and closes its clients
        proc.join(30)
    if proc.is_alive():
        proc.kill()
        proc.join(10)


async def run_worker(settings: Settings, tc: TestCatalogue, index: int, kind: str,
                     opts: Options, log: Path, progress: Progress,
                     exporter: tuple[int, int] | None) -> WorkerRun:
    stored = StoredOffsets(settings, tc.group)
    task = progress.add_task(f"(3) run {index + 1} {kind}", total=opts.count)
    cpu0 = cpu_seconds(exporter[0]) if exporter else 0.0
    box0 = machine_cpu()
    t0 = time.monotonic()
    proc = tc.start_worker(log)
    first_at, first_rows = None, 0
    try:
        deadline = t0 + opts.timeout
        while True:
            done = await stored()
            now = time.monotonic()
            if done and first_at is None:
                first_at, first_rows = now, done
            progress.update(task, completed=done)
            if done >= opts.count:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see {log}")
            if now > deadline:
                raise TimeoutError(f"worker stored {done} of {opts.count} in {opts.timeout}s")
            await asyncio.sleep(POLL_S)
    finally:
        await stored.close()
        cpu1 = cpu_seconds(exporter[0]) if exporter else 0.0
        box1 = machine_cpu()
        worker_cpu = cpu_seconds(proc.pid) if proc.poll() is None else float("nan")
        await stop_process(proc)
        progress.remove_task(task)
    assert first_at is not None
    busy = (box1[0] - box0[0]) / max(1, box1[1] - box0[1])
    result = WorkerRun(index + 1, kind, opts.count, now - t0, first_at - t0, first_rows,
                       worker_cpu, busy)
    if exporter:
        _, body = await http_get(exporter[1], "/api/lag")
        snap = json.loads(body)
        result.exporter = {"cpu_seconds": cpu1 - cpu0, "cpu_share": (cpu1 - cpu0) / (now - t0),
                           "rss_bytes": rss_of(exporter[0]),
                           "groups": len(snap["groups"]),
                           "group_partitions": sum(len(g["partitions"]) for g in snap["groups"]),
                           "last_collect_s": snap["collect_seconds"],
                           "saw_worker_group": any(g["group"] == tc.group
                                                   for g in snap["groups"])}
    async with pg(settings) as conn:
        result.rows = await conn.fetchval(f'SELECT count(*) FROM "{tc.table}"')
    return result


async def bench_workers(settings: Settings, opts: Options, tmp: Path, made: list[TestCatalogue],
                        progress: Progress) -> list[WorkerRun]:
    kinds = ["W"] * opts.warmup + ["A", "B"] * opts.rounds
    for _ in kinds:
        tc = _make_catalogue(tmp, settings)
        made.append(tc)
        await apply_topics(tc.settings, tc.catalogue, say=lambda _: None)
        await migrate(tc.settings, tc.catalogue, lambda _: None)
        await disable_autovacuum(settings, tc.table)
    for i, tc in enumerate(made):
        task = progress.add_task(f"(3) producing backlog {i + 1}/{len(made)}", total=opts.count)
        load = ExperienceLoad(seed=opts.seed, start_us=START_US)
        await produce(tc.settings, tc.catalogue, FAMILY, load, opts.count,
                      progress=lambda n, task=task: progress.advance(task, n))
        progress.remove_task(task)
    runs = []
    for i, (kind, tc) in enumerate(zip(kinds, made, strict=True)):
        await settle(settings)
        log = tmp / f"worker-{i + 1}-{kind}.log"
        if kind in "WA":
            runs.append(await run_worker(settings, tc, i, kind, opts, log, progress, None))
            continue
        waiting = progress.add_task(f"(3) run {i + 1} B: lag-exporter's first poll", total=None)
        async with exporter_process(settings, opts.worker_interval,
                                    tmp / f"exporter-{i + 1}.log") as exporter:
            progress.remove_task(waiting)
            runs.append(await run_worker(settings, tc, i, kind, opts, log, progress, exporter))
    return runs


# --- orchestration ------------------------------------------------------------------------
def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    refresh_per_second=4)


async def cleanup(settings: Settings, run: ScaleRun, made: list[TestCatalogue]
                  ) -> dict[str, Any]:
    """Delete what the run made; each step even if another failed (say, Kafka is down)."""
    done: dict[str, Any] = {"errors": []}
    topic_names = [run.topic] + [n for tc in made for n in (tc.topic, f"{tc.topic}.dlq")]
    try:
        done["topics_deleted"] = len(await delete_topics(settings, topic_names))
    except Exception as exc:
        done["errors"].append(f"topics {topic_names}: {exc}")
    groups = run.group_names + [tc.group for tc in made]
    try:
        codes = await delete_groups(settings, groups)
        done |= {"groups": len(codes), "groups_deleted": sum(c == 0 for c in codes.values()),
                 "group_errors": {g: c for g, c in codes.items() if c}}
    except Exception as exc:
        done["errors"].append(f"groups {PREFIX}{run.run_id}.* and the workers': {exc}")
    try:
        await drop_catalogues(settings, made)
    except Exception as exc:
        done["errors"].append(f"tables {[tc.table for tc in made]}: {exc}")
    for error in done["errors"]:
        console.print(f"[red]cleanup failed[/]: {error}", highlight=False)
    return done


async def run_all(settings: Settings, run: ScaleRun, opts: Options, tmp: Path
                  ) -> dict[str, Any]:
    topics, groups = await leftovers(settings)
    if topics or groups:
        await delete_topics(settings, topics)
        await delete_groups(settings, groups)
        console.print(f"removed {len(topics)} topic(s), {len(groups)} group(s) left by an"
                      " earlier run")
    made: list[TestCatalogue] = []
    out: dict[str, Any] = {}
    try:
        with _progress() as progress:
            task = progress.add_task("(1) topic and records", total=None)
            await create_scale_topic(settings, run)
            await produce_raw(settings, run)
            progress.remove_task(task)
            await commit_groups(settings, run, lambda g: g, progress,
                                f"(1) {run.groups} groups commit")
            timings, memory, snaps = await bench_collect(settings, run, opts, progress)
            out["collect"] = timings
            out["cluster"] = memory.pop("cluster")
            out["history_memory"] = memory
            out["accuracy"] = await bench_accuracy(settings, run, snaps,
                                                   [lambda g: g, lambda g: run.groups + g])
            out["http"] = await bench_http(settings, run, progress)
            out["staleness"] = await bench_staleness(settings, run, opts, progress)
            out["workers"] = await bench_workers(settings, opts, tmp, made, progress)
    finally:
        out["cleanup"] = await cleanup(settings, run, made)
    return out


# --- reporting ----------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


def _median(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(
        [v for v in values if v is not None])


def worker_summary(runs: list[WorkerRun]) -> dict[str, Any]:
    med = {k: {"events_per_s": _median([r.rate for r in runs if r.kind == k]),
               "steady_events_per_s": _median([r.steady_rate for r in runs if r.kind == k])}
           for k in "AB"}

    def ratio(key: str) -> float | None:
        a, b = med["A"][key], med["B"][key]
        return None if a is None or b is None else b / a

    a_rates = [r.rate for r in runs if r.kind == "A"]
    return {"median": med, "ratio_b_a": ratio("events_per_s"),
            "a_spread": max(a_rates) / min(a_rates) - 1,  # the noise between equal runs
            "ratio_b_a_steady": ratio("steady_events_per_s"),
            "exporter_cpu_share": _median([r.exporter["cpu_share"] for r in runs
                                           if r.kind == "B"])}


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_collect(run: ScaleRun, out: dict[str, Any]) -> None:
    gp = run.groups * run.partitions
    t = Table(title=f"(1) collect(): {run.groups} groups x {run.partitions} partitions"
                    f" = {gp:,} group-partitions, ms")
    for col in ("call", "total", "groups", "offsets", "topics", "bounds", "ts", "rounds",
                "CPU"):
        t.add_column(col, justify="left" if col == "call" else "right")
    for tm in out["collect"]:
        ph = tm.phases
        t.add_row(tm.what, _ms(tm.seconds), _ms(ph["groups"]), _ms(ph["offsets"]),
                  _ms(ph["topics"]), _ms(ph["bounds"]), _ms(ph["timestamps"]),
                  f"{ph['peek_rounds']:.0f}", _ms(ph["cpu_rest"]))
    console.print(t)
    console.print(f"  warm = median of {WARM_CALLS}; moved = after every group committed new"
                  f" offsets; full = warm with {HISTORY_FULL} samples of history per"
                  " partition (median of 3). groups: list + coordinators + describe;"
                  " offsets: OffsetFetch per group; bounds: log start/end offsets; ts:"
                  " reading first-unconsumed timestamps; rounds: getmany() calls (a fetch"
                  " round at most); CPU: the rest"
                  " (samples, history, statuses).", highlight=False)
    dlq = out["cluster"]["dlq_topics"]
    console.print(f"  the cold call asked for the log bounds of {dlq + 1} topics (this one"
                  f" and the cluster's {dlq} .dlq topics)", highlight=False)
    mem = out["history_memory"]
    console.print(f"  full history: {mem['samples']:,} samples take"
                  f" {mem['rss_bytes'] / 2**20:,.0f} MiB ({mem['bytes_per_sample']:.0f} B"
                  f" each); a full gc.collect() then takes {_ms(mem['full_gc_seconds'])} ms",
                  highlight=False)
    h = out["http"]
    t = Table(title="(1) HTTP GET from the exporter's snapshot")
    for col in ("GET", "first ms", "median ms", "max ms", "bytes", "series"):
        t.add_column(col, justify="left" if col == "GET" else "right")
    for path in ("/metrics", "/api/lag"):
        v = h[path]
        t.add_row(path, f"{v['first_s'] * 1000:,.1f}", f"{v['median_s'] * 1000:,.1f}",
                  f"{v['max_s'] * 1000:,.1f}", f"{v['bytes']:,}",
                  f"{v['series']:,}" if "series" in v else "-")
    console.print(t)


def print_accuracy(out: dict[str, Any]) -> None:
    acc, st = out["accuracy"], out["staleness"]
    t = Table(title="(2) lag_seconds against the true age of the first unconsumed record")
    for col in ("compared at", "checks", "max |err| s", "mean |err| s"):
        t.add_column(col, justify="left" if col == "compared at" else "right")
    errors = [abs(c["error"]) for c in acc["checks"] if c["error"] is not None]
    t.add_row("the snapshot's time", str(acc["pairs"]), _f(acc["max_abs_error_s"], ".3f"),
              _f(statistics.fmean(errors) if errors else None, ".3f"))
    t.add_row(f"scrape time, interval {st['interval_s']:g} s", str(st["scrapes"]),
              f"{st['max_abs_error_s']:.2f}", f"{st['mean_abs_error_s']:.2f}")
    console.print(t)
    console.print(f"  snapshot: {acc['unknown']} unknown, {acc['wrong_offset']} at a wrong"
                  f" offset; scrapes: oldest snapshot served {st['max_snapshot_age_s']:.2f} s,"
                  f" bound interval + two collections = {st['bound_s']:.2f} s", highlight=False)


def print_workers(opts: Options, runs: list[WorkerRun], ws: dict[str, Any]) -> None:
    t = Table(title=f"(3) one worker draining {opts.count:,} events; B: exporter polling"
                    f" every {opts.worker_interval:g} s")
    for col in ("run", "seconds", "events/s", "steady/s", "worker CPU", "box busy",
                "exporter CPU"):
        t.add_column(col, justify="right")
    for r in runs:
        e = r.exporter
        t.add_row(f"{r.run} {r.kind}", f"{r.seconds:.2f}", f"{r.rate:,.0f}",
                  _f(r.steady_rate, ",.0f"), f"{r.worker_cpu_s:.2f} s", f"{r.machine_busy:.0%}",
                  f"{e['cpu_seconds']:.2f} s {e['cpu_share']:.0%}" if e else "-")
    console.print(t)
    short = [r.run for r in runs if r.rows != r.events]
    console.print("  box busy: share of both CPUs in use during the run (Kafka, PostgreSQL,"
                  " the worker, the exporter and anything else); exporter CPU: its process's"
                  " time and share of one CPU", highlight=False)
    console.print(f"  startup (process start to first batch stored): "
                  f"{', '.join(f'{r.startup_s:.2f}' for r in runs)} s; rows stored: "
                  + (f"[red]short in runs {short}[/]" if short else "all complete"),
                  highlight=False)
    for r in runs:
        if r.exporter:
            e = r.exporter
            console.print(f"  run {r.run}: the exporter saw {e['groups']} groups,"
                          f" {e['group_partitions']:,} group-partitions (worker's group:"
                          f" {'yes' if e['saw_worker_group'] else 'NO'}); its last"
                          f" collection took {e['last_collect_s'] * 1000:,.0f} ms; RSS"
                          f" {e['rss_bytes'] / 2**20:,.0f} MiB",
                          highlight=False)
    console.print(f"B/A = {_f(ws['ratio_b_a'], '.3f')} (events/s),"
                  f" {_f(ws['ratio_b_a_steady'], '.3f')} (steady), medians of"
                  f" {opts.rounds}; goal >= 0.95. The A runs differ by {ws['a_spread']:.0%}"
                  " among themselves (noise).", highlight=False)


def print_results(run: ScaleRun, opts: Options, out: dict[str, Any]) -> dict[str, Any]:
    print_collect(run, out)
    print_accuracy(out)
    ws = worker_summary(out["workers"])
    print_workers(opts, out["workers"], ws)
    if RETRIED:
        console.print(f"[yellow]{len(RETRIED)} collection(s) failed and were retried[/]:"
                      f" {RETRIED[0]}")
    c = out["cleanup"]
    console.print(f"cleanup: {c.get('topics_deleted', '?')} topics deleted,"
                  f" {c.get('groups_deleted', '?')} of {c.get('groups', '?')} groups deleted"
                  + (f", errors {c['group_errors']}" if c.get("group_errors") else ""),
                  highlight=False)
    return ws


def print_profile(path: Path, title: str, lines: int = 15) -> None:
    console.rule(f"profile: {title} ({path})")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(lines)


def environment(load_before: tuple[float, float, float]) -> dict[str, Any]:
    versions = {p: metadata.version(p) for p in
                ("sinkfleet", "aiokafka", "asyncpg", "prometheus_client")}
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "versions": versions}


def write_json(path: Path, run: ScaleRun, opts: Options, env: dict[str, Any],
               out: dict[str, Any], ws: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"run_id": run.run_id, "groups": run.groups, "partitions": run.partitions,
           "group_partitions": run.groups * run.partitions,
           "records_per_partition": run.records_per_partition, "count": opts.count,
           "seed": opts.seed, "interval": opts.interval,
           "worker_interval": opts.worker_interval, "rounds": opts.rounds,
           "warmup": opts.warmup,
           "profiled": opts.profile_dir is not None, "environment": env,
           "collect": [asdict(t) for t in out["collect"]],
           "cluster": out["cluster"], "history_memory": out["history_memory"],
           "http": out["http"],
           "accuracy": out["accuracy"], "staleness": out["staleness"],
           "workers": [r.as_json() for r in out["workers"]], "workers_summary": ws,
           "retried_collections": RETRIED, "cleanup": out["cleanup"]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


# --- entry point --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--groups", type=int, default=50, help="consumer groups (default 50)")
    p.add_argument("--partitions", type=int, default=100, help="partitions (default 100)")
    p.add_argument("--count", type=int, default=100_000,
                   help="events in each worker run's backlog (default 100000)")
    p.add_argument("--interval", type=float, default=5.0,
                   help="exporter interval for the staleness check (default 5, as the CLI)")
    p.add_argument("--worker-interval", type=float, default=1.0,
                   help="exporter interval while the worker runs (default 1)")
    p.add_argument("--rounds", type=int, default=2, help="A/B pairs (default 2)")
    p.add_argument("--warmup", type=int, default=1,
                   help="worker runs before the A/B pairs, not counted (default 1)")
    p.add_argument("--seed", type=int, default=0, help="ExperienceLoad seed (default 0)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/lag_exporter.json",
                   help="where to write the results (default benchmarks/results/…)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="cProfile the cold, moved and full-history collections into DIR")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per worker run")
    a = p.parse_args(argv)
    if a.groups < 1 or a.partitions < 1 or a.count < 1 or a.rounds < 1 or a.warmup < 0:
        p.error("--groups, --partitions, --count and --rounds must be positive, --warmup"
                " not negative")
    return Options(a.groups, a.partitions, a.count, a.interval, a.worker_interval, a.rounds,
                   a.warmup, a.seed, a.json, a.profile, a.timeout)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries while a topic is new
    # "Topic X not found in cluster metadata", every 100 ms, for topics others delete
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        console.print(f"[yellow]note:[/] load average {load_before[0]:.2f} before the run;"
                      " numbers may be noisy")
    home = {} if "SINKFLEET_HOME" in os.environ else {"home": ROOT}
    settings = load_settings(**home)
    if opts.profile_dir:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    run = ScaleRun(time.strftime("%Y%m%d%H%M%S"), opts.groups, opts.partitions)
    with tempfile.TemporaryDirectory(prefix="sinkfleet-bench-lag-") as tmp:
        out = asyncio.run(run_all(settings, run, opts, Path(tmp)))
    ws = print_results(run, opts, out)
    write_json(opts.json_path, run, opts, environment(load_before), out, ws)
    if opts.profile_dir:
        for name in ("cold", "moved", "full"):
            print_profile(opts.profile_dir / f"collect_{name}.pstats", f"collect, {name}")


if __name__ == "__main__":
    main()
