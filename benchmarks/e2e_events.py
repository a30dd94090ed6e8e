"""End-to-end throughput of experience events: sinkfleet against its ceiling and Quix Streams.

One run generates N synthetic experience events (``ExperienceLoad``, fixed seed) and
measures four stages on the same rows and the same table shape: the project's
``sinks/experience_events.yaml`` copied three times into a throwaway ``bench``
PostgreSQL schema (same columns and types, day partitions, primary key, indexes):

(a) copy     The ceiling. One asyncpg ``copy_records_to_table`` of the row tuples the
             worker's ``RowBuilder`` makes from the same records (decoded from their
             Avro framing) into ``bench.copy_events``. No Kafka, no decoding, no
             staging table or merge, one transaction.
(c) publish  The producer alone. ``Publisher.publish()`` of the N records into a fresh
             6-partition topic, from the first call until ``flush()`` returned, that
             is until Kafka acknowledged every record (acks=all). The latency of each
             ``publish()`` call is recorded too (p50/p99/max).
(b) worker   End to end. One ``sinkfleet.worker.loop.Worker`` (in this process)
             consumes that topic into ``bench.worker_events``. Timed from
             ``Worker.run()`` until the offsets it stores with the rows in
             ``sinkfleet.consumer_offsets`` cover all N records.
(d) quix     Quix Streams 3 with its community ``PostgreSQLSink`` (psycopg2,
             ``execute_values``), in a spawned subprocess, consumes the same topic
             into ``bench.quix_events``. A value deserializer decodes the Avro
             single-object framing with ``sinkfleet.avro.Codec`` and maps fields to
             columns with the same ``RowBuilder``. Timed from ``Application.run()``
             until the group's committed Kafka offsets cover all N records (Quix
             commits only after its sinks flushed). Quix commits on the worker spec's
             batch policy (``commit_every`` = max_records, ``commit_interval`` =
             max_age_ms).

(e) connect  Kafka Connect standalone (the stack's Kafka version) with the Debezium
(f)          JDBC sink, ``insert.mode`` insert (e) and upsert (f), reading the same
             rows published (untimed) as JsonConverter JSON with schemas into
             ``bench.connect_{insert,upsert}_events``; see ``connect_sink.py`` and
             docs/benchmarks.md. ``--no-connect`` skips them.

Quix gets the same table as the others: it is created by the sinkfleet migration
and Quix runs with ``schema_auto_update=False`` and ``include_metadata=False``, so
its own DDL (BIGINT/DOUBLE/JSONB/TIMESTAMP columns, no key, no partitions) is not
used. Two adaptations: its sink adapts every Python list as JSON, so array columns
(if the sink spec has any) are passed as PostgreSQL array literals ('{...}'); and it
takes a batch's columns from the batch's first row after dropping None values, which
loses a nullable column (here the ``action_*`` columns) for the whole batch whenever
the first row has it NULL, so by default a subclass inserts a fixed column list
(``--quix-stock-sink`` runs the unmodified sink and the integrity check shows the loss).

Autovacuum is switched off on the bench tables' partitions: it would otherwise vacuum
the tables of earlier stages during whichever stage runs a minute later.

events/s is N over the stage's wall time. "startup" is the time until the first rows
were stored; "steady" is the rate after that. "CPU s/100k" is the consuming process's
CPU (/proc/<pid>/stat utime + stime) per 100k rows: this process for (b), which runs
the worker, the subprocess for (d), the JVM for (e)/(f). After the stages, every
table's row count, distinct keys, rows with action metadata and an order-independent
content hash are compared, and every row against COPY's row of the same key.

Rerunnable, one run at a time: each run drops the ``bench`` schema, its migration rows
and ``bench.*`` offsets first, uses a topic and consumer groups suffixed with a
timestamp, and deletes them (and, unless ``--keep``, the schema) at the end.

Usage::

    .venv/bin/python benchmarks/e2e_events.py [--count N] [--json PATH] [--profile DIR]
                                              [--no-connect]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (  # benchmarks/ is on sys.path when run as a script
    StoredOffsets,
    copy_rows,
    delete_groups,
    delete_topics,
    disable_autovacuum,
    dump_yaml,
    environment,
    kafka_admin,
    leftovers,
    make_records,
    make_rows,
    one_run_at_a_time,
    print_profile,
    process_cpu_seconds,
    profiled,
    progress_bar,
    settle,
    stop_child,
)
from aiokafka.admin import AIOKafkaAdminClient
from connect_sink import (
    ConnectInstall,
    compare_tables,
    install_connect,
    json_messages,
    publish_json,
    run_connect,
)
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sinkfleet.catalogue import Catalogue, Sink, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.worker.loop import Worker
from sinkfleet.worker.rows import RowBuilder

if TYPE_CHECKING:
    from _quix import QuixJob

ROOT = Path(__file__).resolve().parents[1]
FAMILY = "experience_event"
SOURCE_SINK = "experience_events"  # the project's sink whose table shape is benchmarked
BENCH_SCHEMA = "bench"
TOPIC_PREFIX = "bench.experience-events."
TABLES = {"copy": "copy_events", "worker": "worker_events", "quix": "quix_events",
          "connect_insert": "connect_insert_events", "connect_upsert": "connect_upsert_events"}
CONNECT_STAGES = {"e": "insert", "f": "upsert"}  # stage → Debezium insert.mode
POLL_S = 0.05
PACKAGES = ("sinkfleet", "aiokafka", "asyncpg", "fastavro", "quixstreams", "confluent-kafka",
            "psycopg2-binary")

console = Console()


# --- run description ----------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    count: int
    seed: int
    json_path: Path
    profile_dir: Path | None
    keep: bool
    quix_stock_sink: bool
    timeout: float
    connect: bool = True


@dataclass(frozen=True)
class BenchRun:
    """Names of everything one run creates; all carry the run id."""

    run_id: str
    root: Path  # the benchmark's own catalogue

    @property
    def topic(self) -> str:
        return f"{TOPIC_PREFIX}{self.run_id}"

    @property
    def json_topic(self) -> str:  # the same events as Connect JSON with schemas
        return f"{self.topic}.connect-json"

    @property
    def topics(self) -> list[str]:
        return [self.topic, f"{self.topic}.dlq", self.json_topic]

    def connect_name(self, mode: str) -> str:  # its group is "connect-" + the name
        return f"bench.connect-{mode}.{self.run_id}"

    @property
    def worker_group(self) -> str:
        return f"bench.worker.{self.run_id}"

    @property
    def quix_group(self) -> str:
        return f"bench.quix.{self.run_id}"


@dataclass
class Result:
    stage: str
    what: str
    events: int
    seconds: float
    startup_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float | None:
        first = self.extra.get("rows_at_first_poll")
        if self.startup_s is None or first is None or self.seconds <= self.startup_s:
            return None
        return (self.events - first) / (self.seconds - self.startup_s)

    @property
    def cpu_per_100k(self) -> float | None:
        """CPU seconds of the consuming process per 100k rows, over the whole stage."""
        cpu = self.extra.get("cpu_s")
        return None if cpu is None else cpu / self.events * 100_000

    @property
    def steady_cpu_per_100k(self) -> float | None:
        """The same after the first rows were stored (start-up left out)."""
        cpu, at_first = self.extra.get("cpu_s"), self.extra.get("cpu_at_first_s")
        rows = self.events - self.extra.get("rows_at_first_poll", self.events)
        if cpu is None or at_first is None or rows <= 0:
            return None
        return (cpu - at_first) / rows * 100_000

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"events_per_s": self.rate, "steady_events_per_s": self.steady_rate,
                               "cpu_s_per_100k": self.cpu_per_100k,
                               "steady_cpu_s_per_100k": self.steady_cpu_per_100k}


# --- the benchmark's catalogue ------------------------------------------------------------
def build_catalogue(run: BenchRun, project: Catalogue) -> Catalogue:
    """Copy schemas/ and write one topic, three same-shape sinks and one worker spec."""
    source = project.sinks[SOURCE_SINK]
    shutil.copytree(project.root / "schemas", run.root / "schemas")
    for sub in ("topics", "sinks", "workers"):
        (run.root / sub).mkdir()
    topic = source.topic.model_dump(by_alias=True, exclude_none=True, mode="json")
    dump_yaml(run.root / "topics" / "bench.yaml", topic | {"name": run.topic})
    sink = source.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    for stage, table in TABLES.items():
        dump_yaml(run.root / "sinks" / f"bench_{stage}.yaml", sink | {
            "name": f"bench_{stage}", "topic": run.topic, "table": table,
            "schema": BENCH_SCHEMA})
    worker = next(w for w in project.workers.values() if SOURCE_SINK in w.sinks)
    spec = worker.model_dump(by_alias=True, exclude_none=True, mode="json")
    dump_yaml(run.root / "workers" / "bench.yaml", spec | {
        "name": "bench", "group": run.worker_group, "sinks": ["bench_worker"]})
    return load_catalogue(run.root)


# --- setup and teardown -------------------------------------------------------------------
async def reset_database(settings: Settings) -> None:
    """Drop what earlier runs left: the bench schema, its migrations and offsets."""
    async with pg(settings) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{BENCH_SCHEMA}" CASCADE')
        if await conn.fetchval("SELECT to_regclass('sinkfleet.schema_migrations')"):
            await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                               "sink:bench\\_%")
        if await conn.fetchval("SELECT to_regclass('sinkfleet.consumer_offsets')"):
            await conn.execute("DELETE FROM sinkfleet.consumer_offsets WHERE group_id LIKE $1",
                               "bench.%")


async def setup(settings: Settings, catalogue: Catalogue) -> None:
    await reset_database(settings)
    await delete_topics(settings, (await leftovers(settings, TOPIC_PREFIX))[0])
    await migrate(settings, catalogue, say=lambda _: None)
    await disable_autovacuum(settings, BENCH_SCHEMA)
    await apply_topics(settings, catalogue, say=lambda _: None)


async def teardown(settings: Settings, run: BenchRun, keep: bool) -> None:
    await delete_topics(settings, run.topics)
    await delete_groups(settings, [
        run.worker_group, run.quix_group,
        *(f"connect-{run.connect_name(m)}" for m in CONNECT_STAGES.values())])
    if not keep:
        await reset_database(settings)




# --- polling until stored -----------------------------------------------------------------
@dataclass
class Watch:
    """Poll ``stored()`` until it reaches ``total``; remember when rows first appeared,
    and the consuming process's CPU seconds (``cpu()``) then and at the end."""

    stored: Callable[[], Awaitable[int]]
    alive: Callable[[], None]  # raises if the consumer under test died
    total: int
    timeout: float
    cpu: Callable[[], float] | None = None
    first_at: float | None = None
    first_rows: int = 0
    cpu_start: float = 0.0
    cpu_first: float | None = None
    cpu_end: float | None = None

    def __post_init__(self) -> None:
        if self.cpu is not None:
            self.cpu_start = self.cpu()

    async def until_done(self, progress: Progress, label: str) -> float:
        task = progress.add_task(label, total=self.total)
        deadline = time.monotonic() + self.timeout
        while True:
            done = await self.stored()
            now = time.monotonic()
            if done and self.first_at is None:
                self.first_at, self.first_rows = now, done
                self.cpu_first = self.cpu() if self.cpu else None
            progress.update(task, completed=done)
            if done >= self.total:
                self.cpu_end = self.cpu() if self.cpu else None
                return now
            self.alive()
            if now > deadline:
                raise TimeoutError(f"{label}: {done} of {self.total} stored after"
                                   f" {self.timeout:.0f}s")
            await asyncio.sleep(POLL_S)

    def result(self, stage: str, what: str, t0: float, t_end: float) -> Result:
        startup = None if self.first_at is None else self.first_at - t0
        extra: dict[str, Any] = {"rows_at_first_poll": self.first_rows}
        if self.cpu_end is not None and self.cpu_first is not None:
            extra |= {"cpu_s": self.cpu_end - self.cpu_start,
                      "cpu_at_first_s": self.cpu_first - self.cpu_start}
        return Result(stage, what, self.total, t_end - t0, startup, extra)


# --- (a) COPY ceiling ---------------------------------------------------------------------
async def bench_copy(settings: Settings, sink: Sink, rows: list[tuple[Any, ...]]) -> Result:
    return Result("a", "COPY ceiling", len(rows), await copy_rows(settings, sink, rows))


# --- (c) producer -------------------------------------------------------------------------
def _percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


async def _publish_all(pub: Publisher, records: list[dict[str, Any]], progress: Progress
                       ) -> list[int]:
    """Publish every record and wait for all acknowledgements; per-call latencies in ns."""
    task = progress.add_task("(c) publish", total=len(records))
    latencies: list[int] = []
    for i, record in enumerate(records, 1):
        started = time.perf_counter_ns()
        await pub.publish(FAMILY, record)
        latencies.append(time.perf_counter_ns() - started)
        if i % 5000 == 0:
            progress.update(task, completed=i)
    await pub.flush()
    progress.update(task, completed=len(records))
    return latencies


async def bench_publish(settings: Settings, catalogue: Catalogue, records: list[dict[str, Any]],
                        opts: Options, progress: Progress) -> Result:
    pub = Publisher(settings, catalogue=catalogue)
    await pub.start()
    try:
        with profiled(opts.profile_dir / "publish.pstats" if opts.profile_dir else None):
            t0 = time.monotonic()
            latencies = await _publish_all(pub, records, progress)
            seconds = time.monotonic() - t0
    finally:
        await pub.close()
    latencies.sort()
    extra = {"publish_p50_ms": _percentile(latencies, 0.50),
             "publish_p99_ms": _percentile(latencies, 0.99),
             "publish_max_ms": latencies[-1] / 1e6, "acked": pub.acked}
    return Result("c", "Publisher → acks", len(records), seconds, extra=extra)


# --- (b) sinkfleet worker -----------------------------------------------------------------
def _task_alive(task: asyncio.Task[Any]) -> Callable[[], None]:
    def alive() -> None:
        if task.done():
            raise RuntimeError(f"worker stopped early: {task.exception() or 'no error'}")
    return alive


async def bench_worker(settings: Settings, catalogue: Catalogue, opts: Options,
                       progress: Progress) -> Result:
    worker = Worker(settings, catalogue, catalogue.worker("bench"), worker_id="bench-worker")
    stored = StoredOffsets(settings, worker.spec.group)
    profile = opts.profile_dir / "worker.pstats" if opts.profile_dir else None
    with profiled(profile):
        t0 = time.monotonic()
        task = asyncio.create_task(worker.run())
        # The worker runs in this process: its CPU includes this loop's polling.
        watch = Watch(stored, _task_alive(task), opts.count, opts.timeout,
                      process_cpu_seconds)
        try:
            t_end = await watch.until_done(progress, "(b) sinkfleet worker")
        finally:
            worker.stop()
            stats = await task
            await stored.close()
    result = watch.result("b", "sinkfleet Worker", t0, t_end)
    result.extra |= {"batches": stats.batches, "flush_seconds": stats.flush_seconds,
                     "stored": stats.stored, "dead_lettered": stats.dead_lettered}
    return result


# --- (d) Quix Streams (its subprocess: _quix.py) ---------------------------------------
def _committed_in_kafka(admin: AIOKafkaAdminClient, group: str) -> Callable[[], Awaitable[int]]:
    async def stored() -> int:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(max(0, meta.offset) for meta in offsets.values())
    return stored


def _process_alive(proc: Any) -> Callable[[], None]:
    def alive() -> None:
        if not proc.is_alive():
            raise RuntimeError(f"Quix process exited early with code {proc.exitcode}")
    return alive


async def _wait_started(started: Any, proc: Any, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not started.value:
        _process_alive(proc)()
        if time.monotonic() > deadline:
            raise TimeoutError("the Quix process did not start")
        await asyncio.sleep(0.01)
    return float(started.value)


def quix_job(settings: Settings, catalogue: Catalogue, run: BenchRun, opts: Options) -> QuixJob:
    from _quix import QuixJob, pg_kwargs  # the bench extra (quixstreams), needed from here on

    sink = catalogue.sinks["bench_quix"]
    batch = catalogue.worker("bench").batch
    return QuixJob(
        settings.kafka_bootstrap, run.quix_group, run.topic, str(run.root), "bench_quix",
        BENCH_SCHEMA, sink.spec.table, RowBuilder(sink).names, batch.max_records,
        batch.max_age_ms / 1000, str(run.root / "quix-state"), opts.quix_stock_sink,
        str(opts.profile_dir / "quix.pstats") if opts.profile_dir else None, pg_kwargs(settings))


async def bench_quix(settings: Settings, job: QuixJob, opts: Options,
                     progress: Progress) -> Result:
    from _quix import quix_child

    ctx = mp.get_context("spawn")
    started = ctx.Value("d", 0.0)
    proc = ctx.Process(target=quix_child, args=(job, started), name="bench-quix")
    async with kafka_admin(settings) as admin:
        proc.start()
        try:
            t0 = await _wait_started(started, proc, 120)
            watch = Watch(_committed_in_kafka(admin, job.group), _process_alive(proc),
                          opts.count, opts.timeout, lambda: process_cpu_seconds(proc.pid))
            t_end = await watch.until_done(progress, "(d) Quix Streams")
        finally:
            await asyncio.to_thread(stop_child, proc, 60)  # SIGTERM: Quix stops gracefully
    what = "Quix PG sink" + (" (stock)" if job.stock_sink else "")
    return watch.result("d", what, t0, t_end)


# --- integrity ----------------------------------------------------------------------------
async def table_check(settings: Settings, sink: Sink) -> dict[str, Any]:
    """Row count, rows whose first nullable column (action metadata) is set, and an
    order-independent content hash of the stored columns (not ``ingested_at``)."""
    columns = RowBuilder(sink).columns
    cols = ", ".join(f'"{c.name}"' for c in columns)
    nullable = next((f'"{c.name}"' for c in columns if c.nullable), "1")
    async with pg(settings) as conn:
        row = await conn.fetchrow(
            f"SELECT count(*) AS rows, count({nullable}) AS with_metadata,"
            " sum(hashtextextended(t::text, 0)::numeric)::text AS content_hash"
            f" FROM (SELECT {cols} FROM {sink.spec.qualified_table}) t")
    return dict(row)


# --- orchestration ------------------------------------------------------------------------
async def producer_and_ceiling(settings: Settings, catalogue: Catalogue, run: BenchRun,
                               opts: Options, progress: Progress) -> list[Result]:
    task = progress.add_task("generating records and rows", total=None)
    records = make_records(opts.count, opts.seed, FAMILY)
    rows = make_rows(catalogue.sinks["bench_copy"], records)
    progress.remove_task(task)
    # Keep the collector from rescanning the N records and rows (hundreds of ms per full
    # collection at N = 200k): that cost belongs to this benchmark, not to what it measures.
    gc.collect()
    gc.freeze()
    try:
        copy = await bench_copy(settings, catalogue.sinks["bench_copy"], rows)
        await settle(settings)
        publish = await bench_publish(settings, catalogue, records, opts, progress)
        if opts.connect:  # Connect's input: the same rows as JSON with schemas (untimed)
            task = progress.add_task("publishing the Connect JSON topic", total=None)
            await publish_json(settings, run.json_topic,
                               catalogue.sinks["bench_copy"].topic.partitions,
                               json_messages(catalogue.sinks["bench_copy"], rows))
            progress.remove_task(task)
    finally:
        gc.unfreeze()
    return [copy, publish]


# --- (e), (f) Kafka Connect (benchmarks/connect_sink.py) ---------------------------------
async def bench_connect(settings: Settings, install: ConnectInstall, catalogue: Catalogue,
                        run: BenchRun, stage: str, opts: Options, progress: Progress
                        ) -> Result:
    mode = CONNECT_STAGES[stage]
    got = await run_connect(settings, install, catalogue.sinks[f"bench_connect_{mode}"],
                            run.json_topic, mode, opts.count, name=run.connect_name(mode),
                            timeout=opts.timeout, progress=progress,
                            label=f"({stage}) Connect {mode}")
    return Result(stage, f"Connect {mode} (Debezium JDBC)", got.rows, got.seconds,
                  got.startup_s, {"rows_at_first_poll": got.rows_at_first_poll,
                                  "cpu_s": got.cpu_s, "cpu_at_first_s": got.cpu_at_first_s,
                                  **got.extra})


async def run_all(settings: Settings, catalogue: Catalogue, run: BenchRun, opts: Options,
                  install: ConnectInstall | None) -> tuple[list[Result], dict[str, Any]]:
    await setup(settings, catalogue)
    try:
        with progress_bar(console) as progress:
            results = await producer_and_ceiling(settings, catalogue, run, opts, progress)
            gc.collect()  # the N records and rows are garbage now; the worker must not pay
            await settle(settings)
            results.append(await bench_worker(settings, catalogue, opts, progress))
            await settle(settings)
            job = quix_job(settings, catalogue, run, opts)
            results.append(await bench_quix(settings, job, opts, progress))
            for stage in CONNECT_STAGES if install else ():
                await settle(settings)
                results.append(await bench_connect(settings, install, catalogue, run, stage,
                                                   opts, progress))
        copy = catalogue.sinks["bench_copy"]
        checks = {}
        for s in [t for t in TABLES if install or not t.startswith("connect_")]:
            sink = catalogue.sinks[f"bench_{s}"]
            checks[s] = await table_check(settings, sink)
            if s != "copy":  # every row against COPY's row of the same key
                checks[s] |= await compare_tables(settings, sink, copy)
    finally:
        await teardown(settings, run, opts.keep)
    return results, checks


# --- reporting ----------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def ratios(results: dict[str, Result]) -> dict[str, float]:
    b = results["b"].rate
    out = {"b/a": b / results["a"].rate, "b/d": b / results["d"].rate,
           "b/c": b / results["c"].rate}
    for key in CONNECT_STAGES:  # Connect against the ceiling, and the worker against it
        if key in results:
            out |= {f"{key}/a": results[key].rate / results["a"].rate,
                    f"b/{key}": b / results[key].rate}
    return out


def print_results(results: dict[str, Result], checks: dict[str, Any]) -> None:
    table = Table(title=f"experience events, N = {results['a'].events:,}")
    for col in ("stage", "what", "seconds", "events/s", "startup s", "steady events/s",
                "CPU s/100k", "steady CPU s/100k"):
        table.add_column(col, justify="left" if col in ("stage", "what") else "right")
    for key in [k for k in "acbdef" if k in results]:
        r = results[key]
        table.add_row(f"({key})", r.what, _fmt(r.seconds, ".2f"), _fmt(r.rate),
                      _fmt(r.startup_s, ".2f"), _fmt(r.steady_rate),
                      _fmt(r.cpu_per_100k, ".2f"), _fmt(r.steady_cpu_per_100k, ".2f"))
    console.print(table)
    console.print("  ".join(f"{k} = {v:.2f}" for k, v in ratios(results).items()))
    c = results["c"].extra
    console.print(f"publish() latency: p50 {c['publish_p50_ms']:.3f} ms,"
                  f" p99 {c['publish_p99_ms']:.3f} ms, max {c['publish_max_ms']:.1f} ms")
    b = results["b"]
    console.print(f"worker: {b.extra['batches']} batches; storing them (rows + offsets, one"
                  f" transaction each) took {b.extra['flush_seconds']:.2f} s in all,"
                  f" {b.extra['flush_seconds'] / b.seconds:.0%} of the stage")
    check = Table(title="integrity")
    for col in ("table", "rows", "distinct keys", "rows ≠ COPY's", "with metadata",
                "content hash"):
        check.add_column(col)
    for stage, values in checks.items():
        check.add_row(TABLES[stage], f"{values['rows']:,}", _fmt(values.get("keys")),
                      _fmt(values.get("mismatches")), f"{values['with_metadata']:,}",
                      values["content_hash"])
    console.print(check)


def connect_versions(install: ConnectInstall | None) -> dict[str, str]:
    if install is None:
        return {}
    return {"kafka-connect": install.kafka_version,
            "debezium-connector-jdbc": install.debezium_version}


def write_json(path: Path, run: BenchRun, opts: Options, env: dict[str, Any],
               results: dict[str, Result], checks: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"run_id": run.run_id, "count": opts.count, "seed": opts.seed,
           "profiled": opts.profile_dir is not None, "quix_stock_sink": opts.quix_stock_sink,
           "environment": env,
           "results": {k: r.as_json() for k, r in results.items()},
           "ratios": ratios(results), "integrity": checks}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


# --- entry point --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--count", type=int, default=200_000, help="events (default 200000)")
    p.add_argument("--seed", type=int, default=0, help="ExperienceLoad seed (default 0)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/e2e_events.json",
                   help="where to write the results (default benchmarks/results/…)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="cProfile (c), (b) and (d) into DIR/*.pstats (slows them down)")
    p.add_argument("--keep", action="store_true", help="keep the bench schema afterwards")
    p.add_argument("--quix-stock-sink", action="store_true",
                   help="run Quix's unmodified PostgreSQLSink (loses nullable columns)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per stage")
    p.add_argument("--no-connect", dest="connect", action="store_false",
                   help="skip the Kafka Connect stages (e) and (f) (no Java, no Maven)")
    a = p.parse_args(argv)
    if a.count < 1:
        p.error("--count must be positive")
    return Options(a.count, a.seed, a.json, a.profile, a.keep, a.quix_stock_sink, a.timeout,
                   a.connect)


def missing_bench_extra() -> list[str]:
    """Modules of the ``bench`` extra that stage (d) needs and this environment lacks."""
    missing = []
    for module in ("quixstreams", "psycopg2"):
        try:
            importlib.import_module(module)  # imported by stage (d) anyway
        except ImportError:
            missing.append(module)
    return missing


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        console.print(f"[yellow]note:[/] load average {load_before[0]:.2f} before the run;"
                      " numbers may be noisy")
    home = {} if "SINKFLEET_HOME" in os.environ else {"home": ROOT}
    settings = load_settings(**home)
    if opts.profile_dir:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    with (one_run_at_a_time(settings, "e2e_events", f"the {BENCH_SCHEMA} schema and topics"),
          tempfile.TemporaryDirectory(prefix="sinkfleet-bench-") as tmp):
        missing = missing_bench_extra()
        if missing:  # before any stage runs, not minutes later at stage (d)
            print(f"error: {', '.join(missing)} not installed (the bench extra): run"
                  " `make bench`, or `.venv/bin/pip install -e '.[dev,bench]'` first",
                  file=sys.stderr)
            raise SystemExit(2)
        install = install_connect(settings) if opts.connect else None
        run = BenchRun(time.strftime("%Y%m%d%H%M%S"), Path(tmp))
        catalogue = build_catalogue(run, load_catalogue(settings.home))
        found, checks = asyncio.run(run_all(settings, catalogue, run, opts, install))
    results = {r.stage: r for r in found}
    print_results(results, checks)
    env = environment(load_before, PACKAGES, connect_versions(install))
    write_json(opts.json_path, run, opts, env, results, checks)
    if opts.profile_dir:
        print_profile(console, opts.profile_dir / "publish.pstats", "(c) Publisher")
        print_profile(console, opts.profile_dir / "worker.pstats", "(b) sinkfleet worker")
        print_profile(console, opts.profile_dir / "quix.pstats", "(d) Quix Streams")


if __name__ == "__main__":
    main()
