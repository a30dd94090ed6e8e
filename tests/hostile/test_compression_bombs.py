"""Compression bombs on a real topic: a 1 GiB gzip / lz4 / zstd record batch between good
records, consumed by a worker process whose address space (RLIMIT_AS) could never hold
the bomb inflated. The worker stays up, dead-letters the bomb by its offsets with the
reason, and stores every record before and after it."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.kafka.bounds import EXCERPT_BYTES
from sinkfleet.producer import Publisher
from tests.support.bombs import Bomb, build, produce_batch
from tests.support.catalogue import TestCatalogue, catalogue_env
from tests.support.deadletters import read_all
from tests.support.postgres import count_rows, stored_ids, stored_offsets
from tests.support.waiting import async_wait_for
from tests.support.worker import stop

pytestmark = pytest.mark.integration

BOMB_BYTES = 1 << 30  # what each bomb inflates to
LIMIT = 16 << 20  # SINKFLEET_MAX_BATCH_BYTES of the worker under test
HEADROOM = 512 << 20  # address space the worker may add once its modules are imported

# `sinkfleet ARGS…` with RLIMIT_AS set to what the process holds after importing
# everything, plus HEADROOM: far less than any bomb inflated.
LAUNCHER = """
import re, resource, sys
import sinkfleet.cli.app
held = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (held + {headroom}, held + {headroom}))
print(f"RLIMIT_AS {{(held + {headroom}) >> 20}} MiB", flush=True)
sys.argv = ["sinkfleet", *sys.argv[1:]]
sinkfleet.cli.app.main()
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


def run_limited(tc: TestCatalogue, tmp_path: Path, *args: str) -> dict[str, Any]:
    """`sinkfleet ARGS… --json` under the same address-space limit; its JSON output."""
    log = tmp_path / f"{args[0]}-{args[1]}.log"
    proc = start_limited(tc, log, *args)
    assert proc.wait(120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.startswith("RLIMIT_AS"), text[:500]
    return dict(json.loads(text.splitlines()[-1]))


def dead_letter(tc: TestCatalogue, offset: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    return f"garbage {offset}".encode(), [
        ("sinkfleet.topic", tc.topic.encode()), ("sinkfleet.partition", b"0"),
        ("sinkfleet.offset", str(offset).encode()), ("sinkfleet.stage", b"decode"),
        ("sinkfleet.error.class", b"DecodeError"), ("sinkfleet.error.message", b"bad")]


async def test_dlq_inspect_and_replay_report_a_bomb_and_read_on(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    dlq = f"{tc.topic}.dlq"
    bomb = await asyncio.to_thread(build, "zstd", [256 << 20] * 4)
    producer = AIOKafkaProducer(bootstrap_servers=tc.settings.kafka_bootstrap)
    await producer.start()
    try:
        value, headers = dead_letter(tc, 7)
        await producer.send_and_wait(dlq, value, partition=0, headers=headers)
        await produce_batch(tc.settings.kafka_bootstrap, dlq, 0, bomb.batch)  # DLQ 1..4
        value, headers = dead_letter(tc, 9)
        await producer.send_and_wait(dlq, value, partition=0, headers=headers)
        value, headers = dead_letter(tc, 30)  # a batch a worker dead-lettered (DLQ 6)
        headers = [*headers[:3], ("sinkfleet.last_offset", b"33"),
                   ("sinkfleet.stage", b"decompress"), ("sinkfleet.error.class", b"BatchTooLarge")]
        await producer.send_and_wait(dlq, b"compressed", partition=0, headers=headers)
    finally:
        await producer.stop()

    ins = run_limited(tc, tmp_path, "dlq", "inspect", "--topic", tc.topic, "--json",
                      "--limit", "0")
    assert (ins["scanned"], ins["matched"]) == (4, 4)
    rows = [(r["dlq_offset"], r["offset"], r["last_offset"], r["stage"], r["error_class"])
            for r in ins["records"]]
    assert rows == [(0, 7, None, "decode", "DecodeError"),
                    (1, None, None, "decompress", "BatchTooLarge"),
                    (5, 9, None, "decode", "DecodeError"),
                    (6, 30, 33, "decompress", "BatchTooLarge")]
    batch = ins["records"][1]
    assert batch["headers"]["sinkfleet.dlq_last_offset"] == "4"
    assert batch["error_message"].startswith(f"the zstd record batch at {dlq}[0] offsets 1..4")
    assert base64.b64decode(batch["value"]) == bomb.compressed[:EXCERPT_BYTES]

    rep = run_limited(tc, tmp_path, "dlq", "replay", "--topic", tc.topic, "--apply", "--json")
    assert (rep["replayed"], rep["left"], rep["already_replayed"]) == (2, 2, 0)
    assert [r["dlq_offset"] for r in rep["records"]] == [0, 5]
    [warning] = rep["warnings"]
    assert "whole record batches too big to inflate" in warning
    assert f"(first: {dlq}:0:1)" in warning


async def test_lag_takes_a_bombs_timestamp_without_inflating_it(
        catalogue_factory: Any, tmp_path: Path) -> None:
    from sinkfleet.ops.replay.plan import commit_empty_group

    tc: TestCatalogue = await catalogue_factory(partitions=1)
    hour_ago = int(time.time() * 1000) - 3_600_000
    bomb = await asyncio.to_thread(build, "zstd", [256 << 20] * 4, hour_ago)
    await publish_around(tc, bomb, before=3, after=2)
    await commit_empty_group(tc.settings, tc.group, {TopicPartition(tc.topic, 0): 3})
    snap = run_limited(tc, tmp_path, "lag", "--group", tc.group, "--json")
    [group] = snap["groups"]
    [part] = group["partitions"]
    assert (part["committed_offset"], part["log_end_offset"], part["lag_records"]) == (3, 9, 6)
    assert 3600 <= part["lag_seconds"] < 3600 + 120, part
