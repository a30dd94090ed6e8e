"""The hostile-inputs scenario: the worst records we know how to make, interleaved with
good ones, into ONE running worker. Shared by tests/hostile/test_hostile_inputs.py and
the "hostile inputs" table of benchmarks/chaos_report.py.

Each input says what must become of it: stored exactly as sent, or dead-lettered at
a given stage. The run passes when the worker never exits, every good record (and every
hostile one that must be stored) is stored exactly once, and the dead-letter topic holds
exactly the expected records, by offset and stage.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.framing import frame_confluent, frame_single_object
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from tests.support.avro_hostile import zigzag
from tests.support.bombs import build, produce_batch
from tests.support.catalogue import TestCatalogue
from tests.support.deadletters import event_of_size
from tests.support.kafka import end_offsets
from tests.support.postgres import count_rows, stored_ids
from tests.support.worker import stop

Event = dict[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Sends something of its own to the topic (a raw record batch, a big record); returns
# the offset its dead letter names.
Produce = Callable[[TestCatalogue, Publisher], Awaitable[int]]


@dataclass(frozen=True)
class Hostile:
    """One hostile input: raw bytes (``value``), an event to publish normally, or
    something sent by ``produce``."""

    name: str
    expect: str  # "stored" or the dead-letter stage: decompress | decode | validate | write
    value: bytes | None = None
    event: Event | None = None
    key: bytes | None = b"hostile"
    produce: Produce | None = None


def _bomb(codec: str, inflated: int) -> Produce:
    """A record batch of ``codec`` that inflates to ``inflated`` bytes (4 records)."""
    async def produce(tc: TestCatalogue, pub: Publisher) -> int:
        await pub.flush()
        await _allow_big_batches(tc)
        first = await _log_end(tc)
        batch = await asyncio.to_thread(build, codec, [inflated // 4] * 4)
        await produce_batch(tc.settings.kafka_bootstrap, tc.topic, 0, batch.batch)
        return first
    return produce


def _big(size: int, compression: str | None) -> Produce:
    """An event of ``size`` bytes that fails validation (smallint overflow), sent by a
    producer of its own (``compression``, a 4 MiB request limit)."""
    async def produce(tc: TestCatalogue, pub: Publisher) -> int:
        load = ExperienceLoad(seed=size, agents=1, agent_prefix=f"big{tc.suffix}")
        filler = base64.b64encode(os.urandom(size)).decode() if compression is None else "ab"
        value = event_of_size(pub, next(load) | {"event_type": 70_000}, size, filler)
        await pub.flush()
        producer = AIOKafkaProducer(bootstrap_servers=tc.settings.kafka_bootstrap, acks="all",
                                    compression_type=compression, max_request_size=4 << 20)
        await producer.start()
        try:
            return int((await (await producer.send(tc.topic, value, key=b"big"))).offset)
        finally:
            await producer.stop()
    return produce


async def _allow_big_batches(tc: TestCatalogue) -> None:
    """Compressed bombs are bigger than the topic's 1 MiB max.message.bytes: raise it
    (as a careless operator might); the worker's own bound must hold anyway."""
    admin = AIOKafkaAdminClient(bootstrap_servers=tc.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, tc.topic, {"max.message.bytes": str(16 << 20)})])
    finally:
        await admin.close()


async def _log_end(tc: TestCatalogue) -> int:
    return (await end_offsets(tc.settings, [tc.topic]))[TopicPartition(tc.topic, 0)]


def hostile_inputs(codec: Codec, load: ExperienceLoad) -> list[Hostile]:
    """Every hostile input the worker must survive (grows with each one found)."""
    body = codec.encode(next(load))  # a valid single-object record
    fingerprint = body[2:10]
    avro_body = body[10:]
    return [
        Hostile("garbage bytes", "decode", value=b"\xff garbage \x00" * 8),
        Hostile("empty value", "decode", value=b""),
        Hostile("null value on an append topic", "decode", value=None),
        Hostile("unknown Confluent schema id", "decode", value=frame_confluent(99, avro_body)),
        Hostile("unknown single-object fingerprint", "decode",
                value=frame_single_object(b"\x13" * 8, avro_body)),
        Hostile("truncated record", "decode", value=body[: len(body) // 2]),
        Hostile("trailing bytes", "decode", value=body + b"\x00\x01"),
        Hostile("array length 2^62", "decode",
                value=frame_single_object(fingerprint, avro_body[:40] + zigzag(2**62))),
        Hostile("negative string length", "decode",
                value=frame_single_object(fingerprint, zigzag(-5) + b"abc")),
        Hostile("smallint overflow", "validate", event=next(load) | {"event_type": 70_000}),
        Hostile("NUL in text", "validate", event=next(load) | {"agent_id": "a\x00b"}),
        Hostile("index row over 2704 bytes", "write",
                event=next(load) | {"agent_id": os.urandom(4000).hex()}),
        Hostile("timestamp 0001-01-01T00:00:00Z", "stored",
                event=next(load) | {"timestamp": micros(datetime(1, 1, 1, tzinfo=UTC))}),
        Hostile("timestamp 9999-12-31T23:59:59.999999Z", "stored",
                event=next(load) | {"timestamp": micros(
                    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))}),
        Hostile("NaN and infinities in floats", "stored", event=_nan_rewards(next(load))),
        Hostile("record just under 1 MiB, invalid", "validate",
                produce=_big((1 << 20) - 400, None)),
        Hostile("2 MiB zstd record, invalid", "validate", produce=_big(2 << 20, "zstd")),
        Hostile("gzip bomb (256 MiB batch)", "decompress", produce=_bomb("gzip", 256 << 20)),
        Hostile("lz4 bomb (256 MiB batch)", "decompress", produce=_bomb("lz4", 256 << 20)),
        Hostile("zstd bomb (1 GiB batch)", "decompress", produce=_bomb("zstd", 1 << 30)),
    ]


def micros(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and -0.0 told apart from 0.0 (stored exactly)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def expected_row(event: Event) -> dict[str, Any]:
    """The experience_events row ``event`` must become."""
    meta = event["action_metadata"] or {}
    row = {"event_id": bytes(event["event_id"]),
           "ts": EPOCH + timedelta(microseconds=event["timestamp"]),
           "action_intent": meta.get("intent_type"), "action_executor": meta.get("executor_id"),
           "action_parameters": meta.get("parameters")}
    for name in ("agent_id", "episode_id", "step_number", "sequence_number", "event_type",
                 "flags", "policy_version_hash"):
        row[name] = event[name]
    for i in range(8):
        row[f"state_l{i + 1}"], row[f"action_l{i + 1}"] = event["state"][i], event["action"][i]
    for part in ("homeostasis", "curiosity", "efficiency", "goal"):
        row[f"reward_{part}"] = event["reward"][part]
    return row


async def changed_rows(tc: TestCatalogue, events: list[Event]) -> list[str]:
    """Stored rows that differ from what was sent: '<event id>: <column>' each."""
    async with pg(tc.settings) as conn:
        rows = {bytes(r["event_id"]): dict(r) for r in await conn.fetch(
            f'SELECT * FROM "{tc.table}"')}
    changed = []
    for event in events:
        row = rows.get(bytes(event["event_id"]))
        if row is None:
            continue
        for column, want in expected_row(event).items():
            got = row[column]
            if column == "action_parameters" and got is not None and want is not None:
                got, want = json.loads(got), json.loads(want)
            if not _same(got, want):
                changed.append(f"{bytes(event['event_id']).hex()}: {column} {got!r} != {want!r}")
    return changed


def _nan_rewards(event: Event) -> Event:
    reward = {**event["reward"], "goal": float("nan"), "curiosity": float("inf"),
              "efficiency": float("-inf"), "homeostasis": -0.0}
    return event | {"reward": reward}


@dataclass
class HostileResult:
    tried: int
    good: int
    alive: bool
    lost: int
    duplicated: int
    changed: list[str]
    dead_expected: dict[int, str]  # offset -> stage
    dead_actual: dict[int, str]
    seconds: float
    problems: list[str] = field(default_factory=list)
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # name, want, got

    @property
    def ok(self) -> bool:
        return (self.alive and not self.lost and not self.duplicated and not self.changed
                and self.dead_expected == self.dead_actual and not self.problems)


async def _dead_letters(tc: TestCatalogue, n: int, timeout: float = 60) -> dict[int, str]:
    consumer = AIOKafkaConsumer(f"{tc.topic}.dlq", bootstrap_servers=tc.settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: dict[int, str] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    h = dict(m.headers)
                    got[int(h["sinkfleet.offset"])] = h["sinkfleet.stage"].decode()
            if len(got) >= n:
                for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                    for m in msgs:  # anything more is a duplicate or a stray
                        h = dict(m.headers)
                        got[int(h["sinkfleet.offset"]) + 10**12] = "extra"
                break
    finally:
        await consumer.stop()
    return got


async def run_hostile_inputs(tc: TestCatalogue, log: Path, good: int = 2000, seed: int = 7,
                             extra_env: dict[str, str] | None = None,
                             progress: Callable[[int], None] | None = None) -> HostileResult:
    """Publish ``good`` events with every hostile input spread among them (one
    partition, so offsets name the inputs) to one worker; check what became of each."""
    load = ExperienceLoad(seed=seed, agents=8, agent_prefix=f"h{tc.suffix}")
    codec = Codec(tc.catalogue.schemas["experience_event"], SchemaStore(None))
    inputs = hostile_inputs(codec, load)
    every = max(1, good // (len(inputs) + 1))
    started = time.monotonic()
    worker = tc.start_worker(log, extra_env=extra_env)
    stored_events: list[Event] = []
    dead_expected: dict[int, str] = {}
    sent: list[tuple[Hostile, int]] = []
    alive = True
    try:
        async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
            pending = list(inputs)
            for i in range(good):
                event = next(load)
                await pub.publish("experience_event", event)
                stored_events.append(event)
                if i % every == every - 1 and pending:
                    h = pending.pop(0)
                    if h.produce is not None:
                        offset = await h.produce(tc, pub)
                    elif h.event is not None:
                        offset = (await (await pub.publish("experience_event", h.event))).offset
                    else:
                        offset = (await (await pub.send_raw(tc.topic, h.value, key=h.key))
                                  ).offset
                    sent.append((h, offset))
                    if h.expect == "stored":
                        assert h.event is not None
                        stored_events.append(h.event)
                    else:
                        dead_expected[offset] = h.expect
                if progress is not None:
                    progress(1)
            assert not pending, "every hostile input was sent"
        expected_ids = {bytes(e["event_id"]) for e in stored_events}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                alive = False
                break
            n, _ = await count_rows(tc)
            if n >= len(stored_events):
                break
            await asyncio.sleep(0.3)
        dead_actual = await _dead_letters(tc, len(dead_expected))
    finally:
        alive = alive and worker.poll() is None
        code = stop(worker)
    problems = [] if code == 0 else [f"worker exited {code}"]
    n, distinct = await count_rows(tc)
    ids = await stored_ids(tc)
    lost = len(expected_ids - ids)
    duplicated = n - distinct + len(ids - expected_ids)
    changed = await changed_rows(tc, stored_events)
    outcomes = []
    for h, offset in sent:
        if h.event is not None and h.expect == "stored":
            eid = bytes(h.event["event_id"])
            got = ("lost" if eid not in ids else
                   "changed" if any(c.startswith(eid.hex()) for c in changed) else "stored")
        else:
            got = dead_actual.get(offset, "not dead-lettered")
        outcomes.append((h.name, h.expect, got))
    return HostileResult(len(inputs), good, alive, lost, duplicated, changed, dead_expected,
                         dead_actual, time.monotonic() - started, problems, outcomes)
