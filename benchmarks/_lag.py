"""The lag benchmarks' load (lag_exporter.py, lag_worker_cost.py): one topic of P
partitions with R = 2G + 10 records on each, and G consumer groups stalled on it (group
g commits offset g on every partition), so G x P group-partitions for an exporter to
poll; and GETs on a running exporter."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from _common import delete_groups, delete_topics, kafka_admin, leftovers
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from rich.console import Console
from rich.progress import Progress

from sinkfleet.config import Settings

PREFIX = "bench.lag."  # the scale topic and its groups
START_US = 1_764_000_000_000_000  # ExperienceLoad's clock: the same records in every topic
ATTEMPTS = 3
# Collections that failed and were retried. collect() asks for the log bounds of every
# .dlq topic in the cluster, so one deleted while it runs (by others sharing the stack,
# e.g. the test suite) makes it time out after 10 s.
RETRIED: list[str] = []


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


def new_run(groups: int, partitions: int) -> ScaleRun:
    return ScaleRun(time.strftime("%Y%m%d%H%M%S"), groups, partitions)


async def clear_leftovers(settings: Settings, console: Console) -> None:
    """Delete the topics and groups an interrupted earlier run left behind."""
    topics, groups = await leftovers(settings, PREFIX)
    if topics or groups:
        await delete_topics(settings, topics)
        await delete_groups(settings, groups)
        console.print(f"removed {len(topics)} topic(s), {len(groups)} group(s) left by an"
                      " earlier run")


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


async def scale_up(settings: Settings, run: ScaleRun, progress: Progress, label: str) -> None:
    """The topic, its records, and every group stalled at its first offsets (g)."""
    task = progress.add_task(f"{label} topic and records", total=None)
    await create_scale_topic(settings, run)
    await produce_raw(settings, run)
    progress.remove_task(task)
    await commit_groups(settings, run, lambda g: g, progress, f"{label} {run.groups} groups commit")


async def scale_down(settings: Settings, run: ScaleRun, topics: list[str], groups: list[str],
                     console: Console) -> dict[str, object]:
    """Delete the run's topic and groups (with ``topics`` and ``groups`` of its own); each
    step even if the other failed (say, Kafka is down)."""
    done: dict[str, object] = {"errors": []}
    errors: list[str] = []
    topic_names = [run.topic, *topics]
    try:
        done["topics_deleted"] = len(await delete_topics(settings, topic_names))
    except Exception as exc:
        errors.append(f"topics {topic_names}: {exc}")
    try:
        codes = await delete_groups(settings, run.group_names + groups)
        done |= {"groups": len(codes), "groups_deleted": sum(c == 0 for c in codes.values()),
                 "group_errors": {g: c for g, c in codes.items() if c}}
    except Exception as exc:
        errors.append(f"groups {PREFIX}{run.run_id}.* and {groups}: {exc}")
    done["errors"] = errors
    for error in errors:
        console.print(f"[red]cleanup failed[/]: {error}", highlight=False)
    return done


def cleanup_line(c: dict[str, object]) -> str:
    return (f"cleanup: {c.get('topics_deleted', '?')} topics deleted,"
            f" {c.get('groups_deleted', '?')} of {c.get('groups', '?')} groups deleted"
            + (f", errors {c['group_errors']}" if c.get("group_errors") else ""))


# --- HTTP ---------------------------------------------------------------------------------
async def http_get(port: int, path: str) -> tuple[float, bytes]:
    """GET on a fresh connection, which the server closes after the response; seconds
    and body. (Without ``Connection: close`` the exporter's server, aiohttp since
    427ea4c, keeps it open and the read ends only at its keep-alive timeout.)"""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
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
