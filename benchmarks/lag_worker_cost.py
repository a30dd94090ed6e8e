"""What a lag exporter polling every group costs the workers.

One worker process (``python -m sinkfleet worker``, a catalogue made by
``tests.support.catalogue.make_catalogue``) drains a backlog of N experience events
(default 100,000; the same records, fixed seed and clock, are produced with
``sinkfleet.dev.produce.produce`` into each run's own topic before any run) into a fresh
table: A without an exporter, B while an exporter process polls every group in Kafka
each --interval s (default 1), alternated A B A B after one warm-up run (W, not counted:
the first run after producing is slower). The exporter has G x P group-partitions to
poll besides the worker's group: the lag benchmarks' load (_lag.py: one topic of P
partitions, default 100, and G stalled groups, default 50). Before each run PostgreSQL
is checkpointed and dirty pages synced. The exporter process runs ``LagExporter.run``
as ``sinkfleet lag-exporter --interval 1`` would (spawned, so that it reports its port
back), and the worker starts once its first poll is done; its CPU time and resident
memory (RSS, at the end of the run) are recorded. events/s is N over the time from
starting the process until the offsets stored with the rows cover N; "steady" is the
rate after the first batch was stored (it leaves out process start and group join).
The ratio B/A compares the medians. (The exporter's own costs: lag_exporter.py.)

Rerunnable, one run at a time: topics and groups are named after the run and deleted
at the end (the groups with a DeleteGroups request: aiokafka's admin client has no
``delete_consumer_groups``), with the tables and their rows in sinkfleet.*.

Usage::

    .venv/bin/python benchmarks/lag_worker_cost.py [--groups 50] [--partitions 100]
        [--count 100000] [--rounds 2] [--warmup 1] [--interval 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (  # benchmarks/ is on sys.path when run as a script
    ROOT,
    StoredOffsets,
    disable_autovacuum,
    environment,
    process_cpu_seconds,
    progress_bar,
    rss_bytes,
    settle,
    start,
    stop_child,
)
from _lag import (
    START_US,
    ScaleRun,
    cleanup_line,
    clear_leftovers,
    http_get,
    new_run,
    scale_down,
    scale_up,
    wait_http,
)
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sinkfleet.config import Settings
from sinkfleet.dev.produce import produce
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.ops.lag.exporter import LagExporter
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate

if TYPE_CHECKING:
    from tests.support.catalogue import TestCatalogue

FAMILY = "experience_event"
POLL_S = 0.05
PACKAGES = ("sinkfleet", "aiokafka", "asyncpg", "prometheus_client")
console = Console()


@dataclass(frozen=True)
class Options:
    groups: int
    partitions: int
    count: int
    interval: float  # the exporter's, beside the worker
    rounds: int
    warmup: int
    seed: int
    json_path: Path
    timeout: float


def _make_catalogue(tmp: Path, settings: Settings) -> TestCatalogue:
    """tests.support.catalogue.make_catalogue, with the project's events worker batch policy."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests.support.catalogue import make_catalogue

    return make_catalogue(tmp, settings, max_records=5000, max_age_ms=100)


async def drop_catalogues(settings: Settings, made: list[TestCatalogue]) -> None:
    from tests.support.catalogue import drop_catalogues as drop  # ROOT is on sys.path by now

    await drop(settings, made)


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
        await asyncio.to_thread(stop_child, proc, 30)


async def run_worker(settings: Settings, tc: TestCatalogue, index: int, kind: str,
                     opts: Options, log: Path, progress: Progress,
                     exporter: tuple[int, int] | None) -> WorkerRun:
    stored = StoredOffsets(settings, tc.group)
    task = progress.add_task(f"run {index + 1} {kind}", total=opts.count)
    cpu0 = process_cpu_seconds(exporter[0]) if exporter else 0.0
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
        cpu1 = process_cpu_seconds(exporter[0]) if exporter else 0.0
        box1 = machine_cpu()
        worker_cpu = process_cpu_seconds(proc.pid) if proc.poll() is None else float("nan")
        await stop_process(proc)
        progress.remove_task(task)
    assert first_at is not None
    busy = (box1[0] - box0[0]) / max(1, box1[1] - box0[1])
    result = WorkerRun(index + 1, kind, opts.count, now - t0, first_at - t0, first_rows,
                       worker_cpu, busy)
    if exporter:
        # A short run can end between two polls: give the exporter a few intervals to
        # list the worker's group before saying it never saw it.
        deadline = time.monotonic() + 3 * opts.interval + 5
        while True:
            _, body = await http_get(exporter[1], "/api/lag")
            snap = json.loads(body)
            if any(g["group"] == tc.group for g in snap["groups"]) \
                    or time.monotonic() > deadline:
                break
            await asyncio.sleep(opts.interval / 4)
        result.exporter = {"cpu_seconds": cpu1 - cpu0, "cpu_share": (cpu1 - cpu0) / (now - t0),
                           "rss_bytes": rss_bytes(exporter[0]),
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
        await disable_autovacuum(settings, "public", tc.table)
    for i, tc in enumerate(made):
        task = progress.add_task(f"producing backlog {i + 1}/{len(made)}", total=opts.count)
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
        waiting = progress.add_task(f"run {i + 1} B: lag-exporter's first poll", total=None)
        async with exporter_process(settings, opts.interval,
                                    tmp / f"exporter-{i + 1}.log") as exporter:
            progress.remove_task(waiting)
            runs.append(await run_worker(settings, tc, i, kind, opts, log, progress, exporter))
    return runs


# --- orchestration ------------------------------------------------------------------------
async def run_all(settings: Settings, run: ScaleRun, opts: Options, tmp: Path
                  ) -> dict[str, Any]:
    await clear_leftovers(settings, console)
    made: list[TestCatalogue] = []
    out: dict[str, Any] = {}
    try:
        with progress_bar(console) as progress:
            await scale_up(settings, run, progress, "load:")
            out["workers"] = await bench_workers(settings, opts, tmp, made, progress)
    finally:
        out["cleanup"] = await scale_down(
            settings, run, [n for tc in made for n in (tc.topic, f"{tc.topic}.dlq")],
            [tc.group for tc in made], console)
        try:
            await drop_catalogues(settings, made)
        except Exception as exc:
            out["cleanup"]["errors"].append(f"tables {[tc.table for tc in made]}: {exc}")
            console.print(f"[red]cleanup failed[/]: tables: {exc}", highlight=False)
    return out


# --- reporting ----------------------------------------------------------------------------
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


def print_workers(opts: Options, runs: list[WorkerRun], ws: dict[str, Any]) -> None:
    t = Table(title=f"one worker draining {opts.count:,} events; B: exporter polling"
                    f" every {opts.interval:g} s")
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


def write_json(path: Path, run: ScaleRun, opts: Options, env: dict[str, Any],
               out: dict[str, Any], ws: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"run_id": run.run_id, "groups": run.groups, "partitions": run.partitions,
           "group_partitions": run.groups * run.partitions, "count": opts.count,
           "seed": opts.seed, "interval": opts.interval, "rounds": opts.rounds,
           "warmup": opts.warmup, "environment": env,
           "workers": [r.as_json() for r in out["workers"]], "workers_summary": ws,
           "cleanup": out["cleanup"]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


# --- entry point --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--groups", type=int, default=50,
                   help="stalled consumer groups for the exporter to poll (default 50)")
    p.add_argument("--partitions", type=int, default=100,
                   help="partitions of their topic (default 100)")
    p.add_argument("--count", type=int, default=100_000,
                   help="events in each worker run's backlog (default 100000)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="exporter interval while the worker runs (default 1)")
    p.add_argument("--rounds", type=int, default=2, help="A/B pairs (default 2)")
    p.add_argument("--warmup", type=int, default=1,
                   help="worker runs before the A/B pairs, not counted (default 1)")
    p.add_argument("--seed", type=int, default=0, help="ExperienceLoad seed (default 0)")
    p.add_argument("--json", type=Path,
                   default=Path(ROOT) / "benchmarks/results/lag_worker_cost.json",
                   help="where to write the results (default benchmarks/results/…)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per worker run")
    a = p.parse_args(argv)
    if a.groups < 1 or a.partitions < 1 or a.count < 1 or a.rounds < 1 or a.warmup < 0:
        p.error("--groups, --partitions, --count and --rounds must be positive, --warmup"
                " not negative")
    return Options(a.groups, a.partitions, a.count, a.interval, a.rounds, a.warmup, a.seed,
                   a.json, a.timeout)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries while a topic is new
    # "Topic X not found in cluster metadata", every 100 ms, for topics others delete
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    settings, load_before = start(console)
    run = new_run(opts.groups, opts.partitions)
    with tempfile.TemporaryDirectory(prefix="sinkfleet-bench-lag-") as tmp:
        out = asyncio.run(run_all(settings, run, opts, Path(tmp)))
    ws = worker_summary(out["workers"])
    print_workers(opts, out["workers"], ws)
    console.print(cleanup_line(out["cleanup"]), highlight=False)
    write_json(opts.json_path, run, opts, environment(load_before, PACKAGES), out, ws)


if __name__ == "__main__":
    main()
