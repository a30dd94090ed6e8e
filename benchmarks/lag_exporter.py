"""The lag exporter at scale: what a collection and a scrape cost, and how exact lag in
seconds is. (What its polling costs the workers: lag_worker_cost.py.)

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

Rerunnable, one run at a time: the topic and groups are named after the run and deleted
at the end (the groups with a DeleteGroups request: aiokafka's admin client has no
``delete_consumer_groups``).

Usage::

    .venv/bin/python benchmarks/lag_exporter.py [--groups 50] [--partitions 100]
        [--interval 5] [--json PATH] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import re
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/ is on sys.path when run as a script
    environment,
    kafka_admin,
    print_profile,
    profiled,
    progress_bar,
    rss_bytes,
    start,
)
from _lag import (
    ATTEMPTS,
    RETRIED,
    ScaleRun,
    cleanup_line,
    clear_leftovers,
    commit_groups,
    http_get,
    new_run,
    scale_down,
    scale_up,
)
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sinkfleet.config import Settings
from sinkfleet.ops.lag.collect import LagCollector, Snapshot
from sinkfleet.ops.lag.exporter import LagExporter
from sinkfleet.ops.lag.model import PartitionHistory, Sample

ROOT = Path(__file__).resolve().parents[1]
WARM_CALLS = 5
HISTORY_FULL = 720  # PartitionHistory's maxlen
HISTORY_STEP_S = 5.0  # the exporter's default interval
GETS = 10
PACKAGES = ("sinkfleet", "aiokafka", "asyncpg", "prometheus_client")
console = Console()


# --- run description ----------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    groups: int
    partitions: int
    interval: float  # the exporter whose staleness (2) measures
    json_path: Path
    profile_dir: Path | None


# --- Kafka ---------------------------------------------------------------------------------
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


# --- HTTP ---------------------------------------------------------------------------------
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


# --- orchestration ------------------------------------------------------------------------
async def run_all(settings: Settings, run: ScaleRun, opts: Options) -> dict[str, Any]:
    await clear_leftovers(settings, console)
    out: dict[str, Any] = {}
    try:
        with progress_bar(console) as progress:
            await scale_up(settings, run, progress, "(1)")
            timings, memory, snaps = await bench_collect(settings, run, opts, progress)
            out["collect"] = timings
            out["cluster"] = memory.pop("cluster")
            out["history_memory"] = memory
            out["accuracy"] = await bench_accuracy(settings, run, snaps,
                                                   [lambda g: g, lambda g: run.groups + g])
            out["http"] = await bench_http(settings, run, progress)
            out["staleness"] = await bench_staleness(settings, run, opts, progress)
    finally:
        out["cleanup"] = await scale_down(settings, run, [], [], console)
    return out


# --- reporting ----------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


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


def print_results(run: ScaleRun, out: dict[str, Any]) -> None:
    print_collect(run, out)
    print_accuracy(out)
    if RETRIED:
        console.print(f"[yellow]{len(RETRIED)} collection(s) failed and were retried[/]:"
                      f" {RETRIED[0]}")
    console.print(cleanup_line(out["cleanup"]), highlight=False)


def write_json(path: Path, run: ScaleRun, opts: Options, env: dict[str, Any],
               out: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"run_id": run.run_id, "groups": run.groups, "partitions": run.partitions,
           "group_partitions": run.groups * run.partitions,
           "records_per_partition": run.records_per_partition, "interval": opts.interval,
           "profiled": opts.profile_dir is not None, "environment": env,
           "collect": [asdict(t) for t in out["collect"]],
           "cluster": out["cluster"], "history_memory": out["history_memory"],
           "http": out["http"],
           "accuracy": out["accuracy"], "staleness": out["staleness"],
           "retried_collections": RETRIED, "cleanup": out["cleanup"]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


# --- entry point --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--groups", type=int, default=50, help="consumer groups (default 50)")
    p.add_argument("--partitions", type=int, default=100, help="partitions (default 100)")
    p.add_argument("--interval", type=float, default=5.0,
                   help="exporter interval for the staleness check (default 5, as the CLI)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/lag_exporter.json",
                   help="where to write the results (default benchmarks/results/…)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="cProfile the cold, moved and full-history collections into DIR")
    a = p.parse_args(argv)
    if a.groups < 1 or a.partitions < 1 or a.interval <= 0:
        p.error("--groups, --partitions and --interval must be positive")
    return Options(a.groups, a.partitions, a.interval, a.json, a.profile)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries while a topic is new
    # "Topic X not found in cluster metadata", every 100 ms, for topics others delete
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    settings, load_before = start(console)
    if opts.profile_dir:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    run = new_run(opts.groups, opts.partitions)
    out = asyncio.run(run_all(settings, run, opts))
    print_results(run, out)
    write_json(opts.json_path, run, opts, environment(load_before, PACKAGES), out)
    if opts.profile_dir:
        for name in ("cold", "moved", "full"):
            print_profile(console, opts.profile_dir / f"collect_{name}.pstats",
                          f"collect, {name}")


if __name__ == "__main__":
    main()
