"""Worker throughput and CPU per event: one process, and a fleet of 1, 2, 4 … processes.

One run publishes N synthetic experience events (the same as ``e2e_events.py``: fixed
seed, the project's ``experience_events`` sink copied into the throwaway ``bench_fleet`` schema,
its ``recent`` Redis cache included) once, measures the COPY ceiling of the same rows,
and then runs each *configuration* in turn on that topic: K worker processes
(``sinkfleet.worker.loop.Worker``, each in its own ``python`` process) of a fresh
consumer group, until the offsets stored in PostgreSQL with the rows cover all N
records. The table is emptied between configurations.

Per configuration: events/s (N over the time from the processes being ready to the last
batch stored), steady events/s (after the first stored batch), and worker CPU µs per
event: user + system time of the worker processes from /proc/<pid>/stat between ready
and done, summed, divided by N. Ratios are to the COPY ceiling of the same run.

``--code NAME=DIR`` runs the workers of a configuration with the ``sinkfleet`` package
found in ``DIR`` (e.g. an exported older commit: ``git archive OLD sinkfleet | tar -x -C DIR``),
so old and new code are measured interleaved in the same conditions::

    .venv/bin/python benchmarks/worker_fleet.py --count 200000 --workers 1,2,4
    .venv/bin/python benchmarks/worker_fleet.py --code old=/tmp/old --runs old:1,new:1,old:1,new:1
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import (  # benchmarks/ is on sys.path when run as a script
    StoredOffsets,
    delete_groups,
    delete_topics,
    disable_autovacuum,
    dump_yaml,
    make_records,
    make_rows,
    process_cpu_seconds,
    progress_bar,
    settle,
)
from e2e_events import (
    SOURCE_SINK,
    Options,
    bench_copy,
    bench_publish,
    table_check,
)
from rich.console import Console
from rich.table import Table

from sinkfleet.cache.store import forget_sink, redis_client
from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import load_settings
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
# Names of its own: e2e_events.py may run at the same time and resets its "bench" names.
SCHEMA = "bench_fleet"
PREFIX = "bench-fleet."
SINKS = {"copy": "fleet_copy", "worker": "fleet_worker"}
console = Console()


@dataclass
class FleetResult:
    label: str
    code: str
    workers: int
    events: int
    seconds: float
    steady_per_s: float | None
    cpu_seconds: float
    startup_s: float | None

    @property
    def per_s(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6


# The child's entry: with SINKFLEET_BENCH_CODE set, sinkfleet is imported from there,
# ahead of this checkout's editable install (a meta-path finder, ahead of PYTHONPATH).
CHILD = """
import os, sys
code = os.environ.get("SINKFLEET_BENCH_CODE")
if code:
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "__editable__" not in getattr(f, "__module__", "")]
    sys.path.insert(0, code)
sys.path.insert(1, {bench!r})
from worker_fleet import child
child(*sys.argv[1:])
"""


# --- the child: one worker process ----------------------------------------------------
def child(root: str, spec: str, worker_id: str) -> None:
    """Run one worker of ``spec`` until SIGTERM; print 'ready' once imports are done."""
    from sinkfleet.worker.loop import Worker

    home = {} if "SINKFLEET_HOME" in os.environ else {"home": ROOT}
    settings = load_settings(**home)
    catalogue = load_catalogue(Path(root))
    worker = Worker(settings, catalogue, catalogue.worker(spec), worker_id=worker_id)

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        print("ready", flush=True)
        await worker.run()

    asyncio.run(main())


# --- the parent -------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetRun:
    run_id: str
    root: Path

    @property
    def topic(self) -> str:
        return f"{PREFIX}experience-events.{self.run_id}"

    def group(self, label: str) -> str:
        return f"{PREFIX}{self.run_id}.{label}"


def build_catalogue(run: FleetRun, project: Catalogue) -> Catalogue:
    """schemas/, one topic, the copy and worker sinks (the project's experience_events
    shape, cache included) in SCHEMA, and a worker spec per configuration later."""
    source = project.sinks[SOURCE_SINK]
    shutil.copytree(project.root / "schemas", run.root / "schemas")
    for sub in ("topics", "sinks", "workers"):
        (run.root / sub).mkdir()
    topic = source.topic.model_dump(by_alias=True, exclude_none=True, mode="json")
    dump_yaml(run.root / "topics" / "fleet.yaml", topic | {"name": run.topic})
    sink = source.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    for name in SINKS.values():
        dump_yaml(run.root / "sinks" / f"{name}.yaml", sink | {
            "name": name, "topic": run.topic, "table": name, "schema": SCHEMA})
    worker = next(w for w in project.workers.values() if SOURCE_SINK in w.sinks)
    spec = worker.model_dump(by_alias=True, exclude_none=True, mode="json")
    dump_yaml(run.root / "workers" / "fleet.yaml", spec | {
        "name": "fleet", "group": run.group("base"), "sinks": [SINKS["worker"]]})
    return load_catalogue(run.root)


def add_group(run: FleetRun, label: str) -> str:
    """A worker spec of its own group for one configuration; its name."""
    source = yaml.safe_load((run.root / "workers" / "fleet.yaml").read_text())
    name = f"fleet_{label}"
    source |= {"name": name, "group": run.group(label)}
    dump_yaml(run.root / "workers" / f"{name}.yaml", source)
    return name


async def reset_database(settings: Any) -> None:
    """Drop what this benchmark's earlier runs left (and only that)."""
    async with pg(settings) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                           "sink:fleet\\_%")  # ids are sink:<name>:<step>
        await conn.execute("DELETE FROM sinkfleet.consumer_offsets WHERE group_id LIKE $1",
                           PREFIX + "%")


async def delete_topic(settings: Any, topic: str) -> None:
    await delete_topics(settings, [topic])


async def empty_sink(settings: Any, table: str) -> None:
    """Empty the table and its Redis cache: every configuration starts alike."""
    async with pg(settings) as conn:
        await conn.execute(f'TRUNCATE "{SCHEMA}"."{table}"')
    client = redis_client(settings)
    try:
        await forget_sink(client, SINKS["worker"])
    finally:
        await client.aclose()


def start_workers(run: FleetRun, spec: str, label: str, workers: int, env: dict[str, str]
                  ) -> list[subprocess.Popen[str]]:
    code = CHILD.format(bench=str(Path(__file__).resolve().parent))
    return [subprocess.Popen([sys.executable, "-c", code, str(run.root), spec,
                              f"bench-{label}-{i}"], env=env, stdout=subprocess.PIPE, text=True)
            for i in range(workers)]


async def run_fleet(settings: Any, run: FleetRun, label: str, code: str, path: str | None,
                    workers: int, count: int, timeout: float) -> FleetResult:
    spec = add_group(run, label)
    group = run.group(label)
    env = dict(os.environ)
    if path:
        env["SINKFLEET_BENCH_CODE"] = path
    procs = await asyncio.to_thread(start_workers, run, spec, label, workers, env)
    stored = StoredOffsets(settings, group)
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            if line.strip() != "ready":
                raise RuntimeError(f"{label}: a worker did not start (exit {proc.poll()})")
        cpu0 = sum(process_cpu_seconds(p.pid) for p in procs)
        t0 = time.monotonic()
        first: tuple[float, int] | None = None
        deadline = t0 + timeout
        while True:
            done = await stored()
            now = time.monotonic()
            if done and first is None:
                first = (now, done)
            if done >= count:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{label}: a worker exited early")
            if now > deadline:
                raise TimeoutError(f"{label}: {done} of {count} stored after {timeout:.0f}s")
            await asyncio.sleep(0.05)
        cpu = sum(process_cpu_seconds(p.pid) for p in procs) - cpu0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
        await stored.close()
    assert first is not None
    steady = None
    if now > first[0] and count > first[1]:
        steady = (count - first[1]) / (now - first[0])
    await delete_groups(settings, [group])
    return FleetResult(label, code, workers, count, now - t0, steady, cpu, first[0] - t0)


def parse_runs(text: str, codes: dict[str, str]) -> list[tuple[str, int]]:
    runs = []
    for item in text.split(","):
        code, _, n = item.rpartition(":")
        code = code or "new"
        if code != "new" and code not in codes:
            raise SystemExit(f"--runs names code {code!r}: give it with --code {code}=DIR")
        runs.append((code, int(n)))
    return runs


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    home = {} if "SINKFLEET_HOME" in os.environ else {"home": ROOT}
    settings = load_settings(**home)
    codes = dict(c.split("=", 1) for c in args.code)
    runs = parse_runs(args.runs or ",".join(f"new:{n}" for n in args.workers.split(",")), codes)
    opts = Options(args.count, 0, Path(os.devnull), None, False, False, args.timeout)
    with tempfile.TemporaryDirectory(prefix="sinkfleet-fleet-") as tmp:
        run = FleetRun(time.strftime("%Y%m%d%H%M%S"), Path(tmp))
        catalogue = build_catalogue(run, load_catalogue(settings.home))
        await reset_database(settings)
        await migrate(settings, catalogue, say=lambda _: None)
        await disable_autovacuum(settings, SCHEMA)
        await apply_topics(settings, catalogue, say=lambda _: None)
        results: list[FleetResult] = []
        try:
            with progress_bar(console) as progress:
                records = make_records(args.count, 0)
                rows = make_rows(catalogue.sinks[SINKS["copy"]], records)
                copy = await bench_copy(settings, catalogue.sinks[SINKS["copy"]], rows)
                del rows
                await settle(settings)
                publish = await bench_publish(settings, catalogue, records, opts, progress)
                del records
            table = catalogue.sinks[SINKS["worker"]].spec.table
            checks = []
            for i, (code, n) in enumerate(runs):
                await empty_sink(settings, table)
                await settle(settings)
                label = f"r{i}_{code}_{n}"
                console.print(f"running {label} …")
                results.append(await run_fleet(settings, run, label, code, codes.get(code),
                                               n, args.count, args.timeout))
                check = await table_check(settings, catalogue.sinks[SINKS["worker"]])
                checks.append(check)
            reference = await table_check(settings, catalogue.sinks[SINKS["copy"]])
        finally:
            await delete_topic(settings, run.topic)
            await delete_topic(settings, f"{run.topic}.dlq")
            await reset_database(settings)
    return {"count": args.count, "copy_per_s": copy.rate, "publish_per_s": publish.rate,
            "loadavg": os.getloadavg(), "results": [asdict(r) | {
                "per_s": r.per_s, "cpu_us_per_event": r.cpu_us_per_event} for r in results],
            "integrity": {"copy": reference, "runs": checks},
            "integrity_ok": all(c == reference for c in checks)}


def report(doc: dict[str, Any]) -> None:
    table = Table(title=f"worker fleet, N = {doc['count']:,}, COPY ceiling"
                        f" {doc['copy_per_s']:,.0f} rows/s")
    for col in ("run", "code", "workers", "events/s", "steady events/s", "CPU µs/event",
                "b/a", "startup s"):
        table.add_column(col, justify="left" if col in ("run", "code") else "right")
    for r in doc["results"]:
        steady = r["steady_per_s"]
        table.add_row(r["label"], r["code"], str(r["workers"]), f"{r['per_s']:,.0f}",
                      "-" if steady is None else f"{steady:,.0f}",
                      f"{r['cpu_us_per_event']:.1f}", f"{r['per_s'] / doc['copy_per_s']:.2f}",
                      f"{r['startup_s']:.2f}")
    console.print(table)
    console.print("integrity: " + ("every run stored exactly the COPY table's rows"
                                   if doc["integrity_ok"] else
                                   f"[red]MISMATCH[/] {json.dumps(doc['integrity'])}"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--count", type=int, default=200_000, help="events (default 200000)")
    p.add_argument("--workers", default="1,2,4", help="worker processes per configuration")
    p.add_argument("--runs", default=None,
                   help="configurations as CODE:WORKERS,… (CODE 'new' = this checkout)")
    p.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                   help="code to run as NAME: the workers import sinkfleet from DIR")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/worker_fleet.json")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    args = p.parse_args(argv)
    doc = asyncio.run(main_async(args))
    report(doc)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
