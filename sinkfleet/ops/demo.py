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
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sinkfleet.catalogue import load_catalogue
from sinkfleet.config import Settings
from sinkfleet.kafka import kafka_client_kwargs
from sinkfleet.ops.produce import produce
from sinkfleet.ops.topics import apply_topics
from sinkfleet.producer.synthetic import ExperienceLoad
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.stack import manager

FAMILY = "experience_event"
WORKER_SPEC = "events"


@dataclass
class Summary:
    produced: int
    stored: int
    missing: int
    duplicates: int
    unexpected: int
    produce_rate: float
    end_to_end_rate: float
    seconds: float
    lag: int

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.unexpected == 0


class LagProbe:
    """Records not yet stored: log-end offsets minus the group's PostgreSQL offsets."""

    def __init__(self, settings: Settings, group: str, topic: str) -> None:
        self.settings, self.group, self.topic = settings, group, topic
        self._consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings))

    async def __aenter__(self) -> LagProbe:
        await self._consumer.start()
        self._conn = await connect(self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()
        await self._consumer.stop()

    async def lag(self) -> int:
        parts = self._consumer.partitions_for_topic(self.topic) or set()
        if not parts:
            await self._consumer._client.force_metadata_update()  # new topic: learn it
            parts = self._consumer.partitions_for_topic(self.topic) or set()
        ends = await self._consumer.end_offsets([TopicPartition(self.topic, p) for p in parts])
        rows = await self._conn.fetch(
            "SELECT partition, next_offset FROM sinkfleet.consumer_offsets"
            " WHERE group_id = $1 AND topic = $2", self.group, self.topic)
        stored = {r["partition"]: r["next_offset"] for r in rows}
        return sum(max(0, end - stored.get(tp.partition, 0)) for tp, end in ends.items())


def start_workers(settings: Settings, n: int, run_id: str) -> list[subprocess.Popen[bytes]]:
    logs = settings.state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    env = {**os.environ, "SINKFLEET_HOME": str(settings.home)}
    for i in range(n):
        log = open(logs / f"demo-{run_id}-worker-{i}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "worker", "--spec", WORKER_SPEC],
            stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    return procs


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


async def verify(settings: Settings, produced_ids: set[bytes], prefix: str) -> tuple[int, int,
                                                                                     int, int]:
    conn = await connect(settings)
    try:
        rows = await conn.fetch("SELECT event_id FROM experience_events"
                                " WHERE agent_id LIKE $1", prefix + "%")
    finally:
        await conn.close()
    stored = [bytes(r["event_id"]) for r in rows]
    distinct = set(stored)
    return (len(stored), len(produced_ids - distinct), len(stored) - len(distinct),
            len(distinct - produced_ids))


def summary_table(s: Summary, workers: int) -> Table:
    t = Table(title="sinkfleet demo summary", show_header=False)
    t.add_row("produced (acknowledged)", f"{s.produced:,}")
    t.add_row("stored in PostgreSQL", f"{s.stored:,}")
    t.add_row("missing", f"[{'green' if not s.missing else 'red'}]{s.missing}[/]")
    t.add_row("duplicates", f"[{'green' if not s.duplicates else 'red'}]{s.duplicates}[/]")
    t.add_row("unexpected rows", str(s.unexpected))
    t.add_row("publish rate", f"{s.produce_rate:,.0f} events/s")
    t.add_row(f"end-to-end rate ({workers} workers)", f"{s.end_to_end_rate:,.0f} events/s")
    t.add_row("wall time", f"{s.seconds:.1f} s")
    t.add_row("lag at the end", f"{s.lag} records")
    return t


async def run_demo(settings: Settings, *, count: int, workers: int, console: Console) -> bool:
    say = lambda m: console.print(m, highlight=False)  # noqa: E731
    console.rule("1/5 local stack")
    await manager.up(settings, None, say)
    catalogue = load_catalogue(settings.home)
    console.rule("2/5 topics and migrations")
    await apply_topics(settings, catalogue, say=say)
    await migrate(settings, catalogue, say)
    spec = catalogue.worker(WORKER_SPEC)
    topic = catalogue.topic_for_family(FAMILY).name
    run_id = uuid.uuid4().hex[:8]
    prefix = f"demo-{run_id}-"
    console.rule(f"3/5 {workers} workers in group {spec.group}")
    procs = start_workers(settings, workers, run_id)
    say(f"worker pids {[p.pid for p in procs]}; logs in {Path(settings.state) / 'logs'}")
    started = time.monotonic()
    try:
        console.rule(f"4/5 publishing {count:,} experience events")
        load = ExperienceLoad(seed=int(run_id, 16), agents=64, agent_prefix=prefix + "agent")
        with Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("publish", total=count)
            result = await produce(settings, catalogue, FAMILY, iter(load), count, keep=True,
                                   progress=lambda n: bar.advance(task, n))
        assert result.records is not None
        produced_ids = {r["event_id"] for r in result.records}
        console.rule("5/5 waiting until the workers caught up")
        lag = await _wait_caught_up(settings, spec.group, topic, procs, console)
    finally:
        codes = stop_workers(procs)
    seconds = time.monotonic() - started
    say(f"workers exited with {codes}")
    stored, missing, dupes, unexpected = await verify(settings, produced_ids, prefix)
    summary = Summary(count, stored, missing, dupes, unexpected, result.rate, count / seconds,
                      seconds, lag)
    console.print(summary_table(summary, workers))
    ok = summary.ok and lag == 0 and all(c == 0 for c in codes)
    say("[bold green]OK: every acknowledged event stored exactly once[/]" if ok
        else "[bold red]FAILED: see the summary and the worker logs[/]")
    return ok


async def _wait_caught_up(settings: Settings, group: str, topic: str,
                          procs: list[subprocess.Popen[bytes]], console: Console,
                          timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    async with LagProbe(settings, group, topic) as probe:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                lag = await probe.lag()
                alive = sum(p.poll() is None for p in procs)
                live.update(f"lag {lag:,} records · {alive}/{len(procs)} workers running")
                if lag == 0 or time.monotonic() > deadline or alive == 0:
                    return lag
                await asyncio.sleep(0.5)
