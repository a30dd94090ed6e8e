"""`sinkfleet demo`: the whole product in one command, ending in a verified summary."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings
from sinkfleet.dev.produce import produce_mixed
from sinkfleet.dev.stack import manager
from sinkfleet.dev.synthetic.loads import MIX, MixedLoad
from sinkfleet.dev.verify_load import FamilyCheck, check_load
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.keys import key_values
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.read import Reader
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.sink.postgres.offsets import group_offsets

# Worker specs the demo runs: the events group scales with --workers, one of each other.
SPECS = ("events", "audit", "state")


@dataclass
class Summary:
    produced: int
    tombstones: int
    checks: list[FamilyCheck]
    produce_rate: float
    end_to_end_rate: float
    seconds: float
    lag: int
    cache: dict[str, Any]
    log_errors: list[str]  # ERROR lines of the workers' logs (file: line)

    @property
    def problems(self) -> list[str]:
        """What else makes the run fail beyond the families' checks: a record not stored,
        an error a worker only logged (a dropped cache write, say), a cached read Redis
        should have answered."""
        found = [f"{self.lag:,} record(s) not stored"] if self.lag else []
        if self.log_errors:
            found.append(f"{len(self.log_errors)} error line(s) in the worker logs, first:"
                         f" {self.log_errors[0]}")
        misses = self.cache.get("misses", 0)
        if misses:
            found.append(f"{misses} of {self.cache.get('reads', 0)} current-state reads"
                         " missed Redis although the workers wrote those ids through it")
        return found

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and not self.problems


class LagProbe:
    """Records not yet stored: log-end offsets minus each group's PostgreSQL offsets."""

    def __init__(self, settings: Settings, topics: dict[str, list[str]]) -> None:
        self.settings, self.topics = settings, topics  # group -> its topics
        self._consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings))

    async def __aenter__(self) -> LagProbe:
        await self._consumer.start()
        self._conn = await connect(self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()
        await self._consumer.stop()

    async def lag(self) -> int:
        total = 0
        for group, topics in self.topics.items():
            tps = []
            for topic in topics:
                parts = self._consumer.partitions_for_topic(topic) or set()
                if not parts:
                    await self._consumer._client.force_metadata_update()  # new topic
                    parts = self._consumer.partitions_for_topic(topic) or set()
                tps += [TopicPartition(topic, p) for p in parts]
            ends = await self._consumer.end_offsets(tps)
            stored = await group_offsets(self._conn, group)
            total += sum(max(0, end - stored.get(tp, 0))
                         for tp, end in ends.items())
        return total


def start_workers(settings: Settings, specs: list[str], run_id: str
                  ) -> list[subprocess.Popen[bytes]]:
    logs = settings.state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    env = {**os.environ, "SINKFLEET_HOME": str(settings.home)}
    for i, spec in enumerate(specs):
        log = open(logs / f"demo-{run_id}-{spec}-{i}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "worker", "--spec", spec],
            stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    return procs


def log_errors(settings: Settings, run_id: str) -> list[str]:
    """The errors sinkfleet itself logged in the run's workers (a client library's retried
    hiccups are not failures), each prefixed with its log's name."""
    found = []
    for log in sorted((settings.state / "logs").glob(f"demo-{run_id}-*.log")):
        found += [f"{log.name}: {line.strip()}"
                  for line in log.read_text(errors="replace").splitlines()
                  if " ERROR sinkfleet" in line]
    return found


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(None)
    return codes


def summary_table(s: Summary) -> Table:
    """One row per family: rows the load must leave (state: one per live id), how many
    are there, and the mode's own check."""
    t = Table(title="sinkfleet demo: every family as its sink mode promises")
    t.add_column("family", no_wrap=True)
    t.add_column("mode", no_wrap=True)
    for name in ("sent", "stored", "lost", "dup"):
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("check", no_wrap=True)
    for c in s.checks:
        bad = lambda n: f"[{'green' if not n else 'red'}]{n}[/]"  # noqa: E731
        note = c.note or ("ok" if c.ok else "failed")
        t.add_row(c.family, c.mode, f"{c.published:,}", f"{c.stored:,}/{c.expected:,}",
                  bad(c.missing), bad(c.duplicates),
                  note if not c.wrong else f"[red]{c.wrong} wrong: {note}[/]")
    return t


def summary_lines(s: Summary, workers: int) -> list[str]:
    hit = s.cache.get("hit_rate")
    return [
        f"published {s.produced:,} records ({s.tombstones} tombstones) at"
        f" {s.produce_rate:,.0f}/s; stored end to end at {s.end_to_end_rate:,.0f}/s with"
        f" {workers} events workers + 1 audit + 1 state in {s.seconds:.1f} s; lag {s.lag}",
        f"current-state reads through the Reader: {s.cache.get('reads', 0)}, Redis hit rate"
        f" {'-' if hit is None else f'{hit:.0%}'}",
    ]


async def cache_reads(settings: Settings, catalogue: Catalogue,
                      published: list[tuple[str, Any]], reads: int = 500) -> dict[str, Any]:
    """Read current state through the Reader (Redis first) for ids the load touched."""
    state_sinks = {s.topic.schema_: s for s in catalogue.sinks.values()
                   if s.spec.state is not None and s.spec.cache is not None}
    last: dict[tuple[str, tuple[Any, ...]], bool] = {}  # id -> exists (not deleted)
    for family, item in published:
        sink = state_sinks.get(family)
        if sink is None:
            continue
        if isinstance(item, dict):
            key = tuple(str(v) for v in key_values(sink.topic, item))
            last[(sink.spec.name, key)] = True
        else:
            last[(sink.spec.name, tuple(str(k) for k in item.key))] = False
    keys = [k for k, exists in last.items() if exists]
    if not keys:
        return {"reads": 0, "hit_rate": None}
    async with Reader(settings, catalogue) as reader:
        for name, key in keys[-reads:]:
            await reader.state(name, *key)
        return {"reads": min(reads, len(keys)), **reader.cache_stats.as_dict()}


async def run_demo(settings: Settings, *, count: int, workers: int, console: Console) -> bool:
    say = lambda m: console.print(m, highlight=False)  # noqa: E731
    console.rule("1/5 local stack")
    await manager.up(settings, None, say)
    catalogue = load_catalogue(settings.home)
    console.rule("2/5 topics and migrations")
    await apply_topics(settings, catalogue, say=say)
    await migrate(settings, catalogue, say)
    specs = [s for s in SPECS if s in catalogue.workers]
    groups = {catalogue.worker(s).group: sorted({catalogue.sinks[n].topic.name
                                                  for n in catalogue.worker(s).sinks})
              for s in specs}
    run_id = uuid.uuid4().hex[:8]
    console.rule(f"3/5 workers: {workers} events, 1 audit, 1 state")
    procs = start_workers(settings, ["events"] * workers + [s for s in specs if s != "events"],
                          run_id)
    say(f"worker pids {[p.pid for p in procs]}; logs in {Path(settings.state) / 'logs'}")
    started = time.monotonic()
    try:
        console.rule(f"4/5 publishing a mixed agent load of {count:,} records")
        carried = {t.schema_ for t in catalogue.topics.values()}
        load = MixedLoad(int(run_id, 16), agents=64, prefix=f"demo-{run_id}-",
                         mix={f: w for f, w in MIX.items() if f in carried})
        with Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("publish", total=count)
            result = await produce_mixed(settings, catalogue, islice(load, count), count,
                                         keep=True, progress=lambda n: bar.advance(task, n))
        assert result.records is not None
        console.rule("5/5 waiting until the workers caught up")
        lag = await _wait_caught_up(settings, groups, procs, console)
    finally:
        codes = stop_workers(procs)
    seconds = time.monotonic() - started
    say(f"workers exited with {codes}")
    checks = await check_load(settings, catalogue, result.records)
    cache = await cache_reads(settings, catalogue, result.records)
    summary = Summary(count, result.tombstones, checks, result.rate, count / seconds, seconds,
                      lag, cache, log_errors(settings, run_id))
    console.print(summary_table(summary))
    for line in summary_lines(summary, workers):
        say(line)
    for problem in summary.problems:
        say(f"[red]problem:[/] {escape(problem)}")
    ok = summary.ok and all(c == 0 for c in codes)
    say("[bold green]OK: every acknowledged record stored as its sink mode promises"
        " (exactly once, newest versions, verified chains)[/]" if ok
        else "[bold red]FAILED: see the summary and the worker logs[/]")
    return ok


async def _wait_caught_up(settings: Settings, groups: dict[str, list[str]],
                          procs: list[subprocess.Popen[bytes]], console: Console,
                          timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    async with LagProbe(settings, groups) as probe:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                lag = await probe.lag()
                alive = sum(p.poll() is None for p in procs)
                live.update(f"lag {lag:,} records · {alive}/{len(procs)} workers running")
                if lag == 0 or time.monotonic() > deadline or alive == 0:
                    return lag
                await asyncio.sleep(0.5)
