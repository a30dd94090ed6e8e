"""Shared helpers for the chaos scenarios: non-blocking process control, a rate-limited
background publisher and the final invariant checks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from sinkfleet.sink.postgres.connect import connect
from tests.conftest import TestCatalogue, async_wait_for
from tests.worker.test_e2e import count_rows, publish, stored_offsets

PARTITIONS = 6


class Fleet:
    """Worker processes of one group; every incarnation logs to its own file."""

    def __init__(self, tc: TestCatalogue, logdir: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.tc = tc
        self.logdir = logdir
        self.extra_env = extra_env
        self.live: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.log_of: dict[int, Path] = {}

    def start(self) -> subprocess.Popen[bytes]:
        log = self.logdir / f"worker-{len(self.logs):02d}.log"
        self.logs.append(log)
        proc = self.tc.start_worker(log, extra_env=self.extra_env)
        self.live.append(proc)
        self.log_of[proc.pid] = log
        return proc

    async def wait_up(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Until the worker has installed its SIGTERM handler (it logs "metrics on" after
        that); a SIGTERM before then kills the interpreter with -15, not a clean stop."""
        log = self.log_of[proc.pid]

        async def up() -> bool:
            return proc.poll() is not None or "metrics on" in log.read_text()

        await async_wait_for(up, timeout, f"worker {proc.pid} to start", interval=0.05)

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
        for proc in list(self.live):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.live.clear()

    def tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-chars:]}"
                         for log in self.logs if log.exists())


def start_publishing(tc: TestCatalogue, n: int, seed: int, rate: float | None
                     ) -> asyncio.Task[list[dict[str, Any]]]:
    """Publish ``n`` records in the background; the task returns the acknowledged ones."""
    return asyncio.create_task(publish_at(tc, n, seed, rate))


async def publish_at(tc: TestCatalogue, n: int, seed: int, rate: float | None
                     ) -> list[dict[str, Any]]:
    if rate is None:
        return await publish(tc, n, seed)
    from sinkfleet.ops.produce import produce
    from sinkfleet.producer.synthetic import ExperienceLoad

    load = ExperienceLoad(seed=seed, agents=16, agent_prefix=f"t{tc.suffix}")
    result = await produce(tc.settings, tc.catalogue, "experience_event", iter(load), n,
                           rate=rate, keep=True)
    assert result.records is not None and len(result.records) == n
    return result.records


async def stored_total(tc: TestCatalogue) -> int:
    return sum((await stored_offsets(tc)).values())


async def wait_stored_at_least(tc: TestCatalogue, n: int, timeout: float, what: str) -> None:
    async def enough() -> bool:
        return await stored_total(tc) >= n

    await async_wait_for(enough, timeout, what, interval=0.1)


async def end_offsets(tc: TestCatalogue) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=tc.settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            [TopicPartition(tc.topic, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()
    return {tp.partition: off for tp, off in ends.items() if off}


async def stored_ids(tc: TestCatalogue) -> list[bytes]:
    conn = await connect(tc.settings)
    try:
        return [bytes(r[0]) for r in await conn.fetch(f'SELECT event_id FROM "{tc.table}"')]
    finally:
        await conn.close()


async def verify_exactly_once(tc: TestCatalogue, events: list[dict[str, Any]],
                              context: str = "") -> None:
    """Every acknowledged record stored once; offsets equal the log end offsets."""
    n = len(events)
    assert await count_rows(tc) == (n, n), context
    ids = await stored_ids(tc)
    assert set(ids) == {e["event_id"] for e in events}, context
    assert await stored_offsets(tc) == await end_offsets(tc), context
