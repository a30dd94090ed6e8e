"""Compression bombs on a real topic: a 1 GiB gzip / lz4 / zstd record batch between good
records, consumed by a worker process whose address space (RLIMIT_AS) could never hold
the bomb inflated. The worker stays up, dead-letters the bomb by its offsets with the
reason, and stores every record before and after it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sinkfleet.kafka_bounds import EXCERPT_BYTES
from sinkfleet.producer import Publisher
from sinkfleet.producer.synthetic import ExperienceLoad
from tests.conftest import TestCatalogue, async_wait_for, catalogue_env
from tests.hostile.bombs import Bomb, build, produce_batch
from tests.worker.test_deadletter import read_all
from tests.worker.test_e2e import count_rows, stop, stored_ids, stored_offsets

pytestmark = pytest.mark.integration

BOMB_BYTES = 1 << 30  # what each bomb inflates to
LIMIT = 16 << 20  # SINKFLEET_MAX_BATCH_BYTES of the worker under test
HEADROOM = 512 << 20  # address space the worker may add once its modules are imported

# `sinkfleet ARGS…` with RLIMIT_AS set to what the process holds after importing
# everything, plus HEADROOM: far less than any bomb inflated.
LAUNCHER = """
import re, resource, sys
import sinkfleet.cli
held = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (held + {headroom}, held + {headroom}))
print(f"RLIMIT_AS {{(held + {headroom}) >> 20}} MiB", flush=True)
sys.argv = ["sinkfleet", *sys.argv[1:]]
sinkfleet.cli.main()
"""


def start_limited(tc: TestCatalogue, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCHER.format(headroom=HEADROOM), *args],
            stdout=fh, stderr=subprocess.STDOUT, cwd=tc.root,
            env={**catalogue_env(tc.root, tc.settings), "SINKFLEET_MAX_BATCH_BYTES": str(LIMIT)})


async def allow_big_batches(tc: TestCatalogue, topic: str) -> None:
    """An lz4 bomb of 1 GiB is ~4.3 MB compressed: above the topic's 1 MB default."""
    admin = AIOKafkaAdminClient(bootstrap_servers=tc.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(16 << 20)})])
    finally:
        await admin.close()


async def publish_around(tc: TestCatalogue, bomb: Bomb, before: int, after: int
                         ) -> list[bytes]:
    """``before`` good events, the bomb, ``after`` good events, all on partition 0."""
    load = ExperienceLoad(seed=77, agents=2, agent_prefix=f"t{tc.suffix}")
    events = [next(load) for _ in range(before + after)]
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        for event in events[:before]:
            await pub.publish("experience_event", event)
    await produce_batch(tc.settings.kafka_bootstrap, tc.topic, 0, bomb.batch)
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        for event in events[before:]:
            await pub.publish("experience_event", event)
    return [e["event_id"] for e in events]


async def wait_stored_while_alive(tc: TestCatalogue, proc: subprocess.Popen[bytes],
                                  n: int, log: Path, timeout: float = 120) -> None:
    async def done() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the process died: {proc.returncode}, see {log}")
        return sum((await stored_offsets(tc)).values()) >= n

    await async_wait_for(done, timeout, f"{n} offsets stored by group {tc.group}")


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
async def test_a_bomb_is_dead_lettered_by_offsets_and_nothing_else_is_lost(
        catalogue_factory: Any, tmp_path: Path, codec: str) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    await allow_big_batches(tc, tc.topic)
    bomb = await asyncio.to_thread(build, codec, [256 << 20] * 4)
    assert bomb.inflated > BOMB_BYTES
    ids = await publish_around(tc, bomb, before=30, after=20)
    log = tmp_path / "worker.log"
    worker = start_limited(tc, log, "worker", "--spec", tc.worker_spec)
    try:
        await wait_stored_while_alive(tc, worker, 30 + 4 + 20, log)
    finally:
        assert stop(worker) == 0, log.read_text()[-3000:]
    assert await count_rows(tc) == (50, 50)
    assert await stored_ids(tc) == set(ids)
    [dead] = await read_all(tc.settings, f"{tc.topic}.dlq", 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert {k: headers[k] for k in ("sinkfleet.topic", "sinkfleet.partition",
                                    "sinkfleet.offset", "sinkfleet.last_offset",
                                    "sinkfleet.stage", "sinkfleet.error.class")} == {
        "sinkfleet.topic": tc.topic, "sinkfleet.partition": "0", "sinkfleet.offset": "30",
        "sinkfleet.last_offset": "33", "sinkfleet.stage": "decompress",
        "sinkfleet.error.class": "BatchTooLarge"}
    assert headers["sinkfleet.error.message"] == (
        f"the {codec} record batch at {tc.topic}[0] offsets 30..33 ({len(bomb.compressed)}"
        f" compressed bytes) decompresses to more than {LIMIT} bytes"
        " (SINKFLEET_MAX_BATCH_BYTES); it was not inflated: raise SINKFLEET_MAX_BATCH_BYTES"
        " and replay these offsets to read its records")
    assert dead.key is None
    assert dead.value == bomb.compressed[:EXCERPT_BYTES]
    text = log.read_text()
    assert "RLIMIT_AS" in text and "dead_lettered=1" in text, text[-3000:]
