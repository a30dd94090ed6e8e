"""Helpers for the `sinkfleet config` / `sinkfleet policy` tests: the CLI as a process
over an isolated catalogue, a worker for it, and the topic's end offsets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.support.catalogue import TestCatalogue


def env(tc: TestCatalogue) -> dict[str, str]:
    return {**tc.env(), "COLUMNS": "400"}  # one message, one line


def cli(tc: TestCatalogue, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`sinkfleet ARGS` over the test catalogue, waited for."""
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], env=env(tc),
                          cwd=tc.root, capture_output=True, text=True, timeout=timeout)


def cli_json(tc: TestCatalogue, *args: str) -> Any:
    out = cli(tc, *args, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def spawn(tc: TestCatalogue, *args: str) -> subprocess.Popen[str]:
    """`sinkfleet ARGS` started in the background."""
    return subprocess.Popen([sys.executable, "-m", "sinkfleet", *args], env=env(tc),
                            cwd=tc.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@contextmanager
def worker(tc: TestCatalogue, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = tc.start_worker(log)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]


async def end_offsets(tc: TestCatalogue) -> dict[int, int]:
    """The end offset of every partition of the test topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=tc.settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(tc.topic) or set()
        assert parts, f"no partitions of {tc.topic}"
        tps = [TopicPartition(tc.topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()
