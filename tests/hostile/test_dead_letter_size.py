"""Dead letters always fit their topic: bounded headers, an oversize key or value cut
to an excerpt with its size and SHA-256, and replay re-reads the original."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import DecodeError, ValidationError
from sinkfleet.ops.setup.topics import desired_topics
from sinkfleet.producer import Publisher
from sinkfleet.worker import deadletter as h
from sinkfleet.worker.batching import DeadLetter
from sinkfleet.worker.deadletter import (
    DLQ_PRODUCER_KWARGS,
    DLQ_RECORD_LIMIT,
    DeadLetterRecord,
    dead_letter_record,
    parse_dead_letter,
)
from tests.support.catalogue import ROOT, TestCatalogue
from tests.support.cli import sinkfleet
from tests.support.deadletters import event_of_size, replayed_from
from tests.support.kafka import read_topic
from tests.support.postgres import count_rows, stored_offsets
from tests.support.waiting import async_wait_for
from tests.support.worker import stop

MiB = 1024 * 1024


def letter(key: bytes | None = b"k", value: bytes | None = b"v", *,
           error: BaseException | None = None, topic: str = "agent.experience-events",
           stage: str = "decode", carried: tuple[tuple[str, bytes], ...] = ()) -> DeadLetter:
    return DeadLetter(topic, 3, 1234, 1_700_000_000_000, key, value, stage,
                      error or DecodeError("not a framed Avro record"), carried)


def size(rec: DeadLetterRecord) -> int:
    """What the limit counts: key, value, header names and values."""
    return (len(rec.key or b"") + len(rec.value or b"")
            + sum(len(k.encode()) + len(v) for k, v in rec.headers))


def fits(rec: DeadLetterRecord, limit: int = DLQ_RECORD_LIMIT) -> bool:
    # aiokafka's own check (max_request_size) and ours.
    estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes(rec.key, rec.value,
                                                                rec.headers)
    return size(rec) <= limit - h.RECORD_OVERHEAD and estimate <= limit


# --- the record (pure) -------------------------------------------------------------------
def test_a_small_dead_letter_is_the_record_unchanged_with_its_headers() -> None:
    dl = letter(carried=((h.REPLAYED_FROM, b"x.dlq:0:7"),))
    rec = dead_letter_record(dl, "events-host-1")
    assert (rec.key, rec.value) == (b"k", b"v")
    got = dict(rec.headers)
    assert [k for k, _ in rec.headers] == [
        h.REPLAYED_FROM, h.TOPIC, h.PARTITION, h.OFFSET, h.TIMESTAMP, h.STAGE, h.ERROR_CLASS,
        h.ERROR_MESSAGE, h.WORKER, h.HOST, h.DEAD_AT_MS]
    assert (got[h.TOPIC], got[h.PARTITION], got[h.OFFSET], got[h.TIMESTAMP]) == (
        b"agent.experience-events", b"3", b"1234", b"1700000000000")
    assert (got[h.STAGE], got[h.ERROR_CLASS], got[h.ERROR_MESSAGE], got[h.WORKER]) == (
        b"decode", b"DecodeError", b"not a framed Avro record", b"events-host-1")
    info = parse_dead_letter(rec.headers)
    assert (info.topic, info.partition, info.offset, info.timestamp_ms) == (
        "agent.experience-events", 3, 1234, 1_700_000_000_000)
    assert (info.stage, info.error_class, info.replayed_from) == (
        "decode", "DecodeError", "x.dlq:0:7")
    assert info.key_cut is None and info.value_cut is None and not info.truncated
    assert info.dead_at is not None


def test_the_error_message_and_every_header_are_bounded() -> None:
    message = "é" * 5000  # 2 bytes a character
    dl = letter(error=ValidationError(message), topic="t" * 249,
                carried=((h.REPLAYED_FROM, b"r" * 100_000), (h.REPLAYED_FROM, b"again")))
    rec = dead_letter_record(dl, "w" * 10_000)
    got = dict(rec.headers)
    text = got[h.ERROR_MESSAGE].decode()
    assert text == "é" * h.ERROR_MESSAGE_CHARS + " … (5,000 characters, cut)"
    assert [k for k, _ in rec.headers].count(h.REPLAYED_FROM) == 1
    assert all(len(v) <= h.HEADER_VALUE_LIMIT for k, v in rec.headers if k != h.ERROR_MESSAGE)
    assert got[h.TOPIC] == b"t" * 249  # a legal topic name is never cut
    assert got[h.WORKER] == b"w" * h.HEADER_VALUE_LIMIT
    assert sum(len(k) + len(v) for k, v in rec.headers) < 8 * 1024


def test_headers_cut_inside_a_character_stay_utf8() -> None:
    rec = dead_letter_record(letter(), "€" * 200)  # 3 bytes each: 256 is not a boundary
    worker = dict(rec.headers)[h.WORKER]
    assert worker.decode() == "€" * 85


def test_the_value_is_kept_whole_up_to_the_last_byte_that_fits() -> None:
    small = dead_letter_record(letter(value=b""), "w")
    room = DLQ_RECORD_LIMIT - h.RECORD_OVERHEAD - size(small)
    whole = dead_letter_record(letter(value=os.urandom(room)), "w")
    assert len(whole.value or b"") == room and size(whole) == DLQ_RECORD_LIMIT - h.RECORD_OVERHEAD
    assert fits(whole) and parse_dead_letter(whole.headers).value_cut is None
    value = os.urandom(room + 1)
    rec = dead_letter_record(letter(value=value), "w")
    assert rec.value == value[:h.VALUE_EXCERPT] and rec.key == b"k" and fits(rec)
    got = dict(rec.headers)
    assert got[h.VALUE_SIZE] == str(room + 1).encode()
    assert got[h.VALUE_SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert got[h.VALUE_TRUNCATED] == str(h.VALUE_EXCERPT).encode()
    cut = parse_dead_letter(rec.headers).value_cut
    assert cut is not None and cut.matches(value) and not cut.matches(value[:-1])
    assert (got[h.TOPIC], got[h.PARTITION], got[h.OFFSET]) == (
        b"agent.experience-events", b"3", b"1234")


@pytest.mark.parametrize("key_size, value_size", [
    (0, 8 * MiB), (h.KEY_LIMIT, MiB), (h.KEY_LIMIT + 1, 0), (MiB, MiB), (8 * MiB, 8 * MiB)])
def test_any_key_and_value_fit(key_size: int, value_size: int) -> None:
    key, value = os.urandom(key_size), os.urandom(value_size)
    rec = dead_letter_record(letter(key, value, error=ValueError("x" * 50_000)), "w")
    assert fits(rec)
    info = parse_dead_letter(rec.headers)
    if key_size > h.KEY_LIMIT:
        assert rec.key == key[:h.KEY_EXCERPT] and info.key_cut is not None
        assert info.key_cut.matches(key)
    else:
        assert rec.key == key and info.key_cut is None
    assert (rec.value == value) == (info.value_cut is None)


def test_none_key_and_value_stay_none() -> None:
    rec = dead_letter_record(letter(None, None), "w")
    assert (rec.key, rec.value) == (None, None) and fits(rec)


@pytest.mark.parametrize("limit", [32 * 1024, 100_000])
def test_a_smaller_limit_is_kept_too(limit: int) -> None:
    rec = dead_letter_record(letter(os.urandom(MiB), os.urandom(MiB),
                                    error=ValueError("é" * 9000)), "w", limit=limit)
    assert fits(rec, limit)


def test_dead_letter_topics_take_a_limit_of_their_own() -> None:
    from sinkfleet.catalogue import load_catalogue

    desired = {d.name: d for d in desired_topics(load_catalogue(ROOT))}
    spec = desired["agent.experience-events.dlq"]
    assert spec.config["max.message.bytes"] == str(DLQ_RECORD_LIMIT)
    assert spec.config["compression.type"] == "producer"  # the broker never recompresses
    assert DLQ_PRODUCER_KWARGS["max_request_size"] == DLQ_RECORD_LIMIT


# --- on real Kafka -----------------------------------------------------------------------
@pytest.mark.integration
async def test_the_biggest_dead_letters_are_accepted_by_a_dead_letter_topic(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    room = DLQ_RECORD_LIMIT - h.RECORD_OVERHEAD - size(dead_letter_record(letter(
        value=b""), "events-host-1"))
    cases = [letter(value=os.urandom(room)),                      # whole, incompressible
             letter(value=os.urandom(room + 1)),                  # cut
             letter(value=b"a" * 8 * MiB),
             letter(os.urandom(MiB), os.urandom(8 * MiB), error=ValueError("€" * 10_000)),
             letter(os.urandom(h.KEY_LIMIT), os.urandom(MiB))]
    records = [dead_letter_record(dl, "events-host-1") for dl in cases]
    producer = AIOKafkaProducer(bootstrap_servers=tc.settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, **DLQ_PRODUCER_KWARGS)
    await producer.start()
    try:
        futures = [await producer.send(f"{tc.topic}.dlq", r.value, key=r.key,
                                       headers=r.headers) for r in records]
        acked = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert len(acked) == len(records)
    got = await read_topic(tc.settings, f"{tc.topic}.dlq")
    assert sorted((m.key, m.value) for m in got) == sorted((r.key, r.value) for r in records)


@pytest.mark.integration
async def test_big_records_that_fail_are_dead_lettered_and_replayed_whole(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1, max_records=50)
    load = ExperienceLoad(seed=71, agents=4, agent_prefix=f"t{tc.suffix}")
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        wide = next(load) | {"event_type": 70_000}  # fits Avro int, not smallint
        noise = base64.b64encode(os.urandom(MiB)).decode()
        near = event_of_size(pub, wide, MiB - 400, noise)  # just under max.message.bytes
        big = event_of_size(pub, next(load) | {"event_type": 70_000}, 2 * MiB, "ab")
        for _ in range(20):
            await pub.publish("experience_event", next(load))
        await pub.flush()
    originals = {}
    for value, compression in ((near, None), (big, "zstd")):
        producer = AIOKafkaProducer(bootstrap_servers=tc.settings.kafka_bootstrap,
                                    acks="all", compression_type=compression,
                                    max_request_size=4 * MiB)
        await producer.start()
        try:
            meta = await (await producer.send(tc.topic, value, key=b"big-key"))
        finally:
            await producer.stop()
        originals[meta.offset] = value
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        for _ in range(20):
            await pub.publish("experience_event", next(load))

    worker = tc.start_worker(tmp_path / "w.log")

    async def all_stored() -> bool:
        assert worker.poll() is None, (tmp_path / "w.log").read_text()[-3000:]
        return sum((await stored_offsets(tc)).values()) >= 42

    try:
        await async_wait_for(all_stored, 120, "42 records stored")
    finally:
        assert stop(worker) == 0, (tmp_path / "w.log").read_text()[-3000:]
    assert await count_rows(tc) == (40, 40)
    dead = await read_topic(tc.settings, f"{tc.topic}.dlq")
    assert len(dead) == 2
    for msg in dead:
        info = parse_dead_letter(msg.headers)
        assert info.topic == tc.topic and info.partition == 0 and info.offset in originals
        original = originals[info.offset]
        assert (info.stage, info.error_class) == ("validate", "ValidationError")
        assert msg.key == b"big-key" and msg.value == original[:h.VALUE_EXCERPT]
        assert info.value_cut is not None and info.value_cut.matches(original)
        assert info.value_cut.size == len(original)

    shown = json.loads(sinkfleet(tc, "dlq", "inspect", "--json").stdout)
    assert sorted(r["truncated"]["value"]["size"] for r in shown["records"]) == [
        MiB - 400, 2 * MiB]

    out = sinkfleet(tc, "dlq", "replay", "--topic", tc.topic, "--apply", "--json")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    result = json.loads(out.stdout)
    assert (result["replayed"], result["refused"], result["left"]) == (2, 0, 0)
    records = await read_topic(tc.settings, tc.topic)
    replays = [m for m in records if replayed_from(m)]
    assert sorted(len(m.value) for m in replays) == [MiB - 400, 2 * MiB]
    assert sorted(m.value for m in replays) == sorted(originals.values())
    assert {m.key for m in replays} == {b"big-key"}


@pytest.mark.integration
async def test_replay_refuses_a_cut_dead_letter_whose_original_expired(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    value = b"x" * (2 * MiB)
    rec = dead_letter_record(DeadLetter(tc.topic, 0, 5, 0, b"k", value, "decode",
                                        DecodeError("bad")), "w")
    producer = AIOKafkaProducer(bootstrap_servers=tc.settings.kafka_bootstrap,
                                **DLQ_PRODUCER_KWARGS)
    await producer.start()
    try:
        for _ in range(6):  # offsets 0-5 of the source
            await (await producer.send(tc.topic, b"other", key=b"k", partition=0))
        await (await producer.send(f"{tc.topic}.dlq", rec.value, key=rec.key,
                                   headers=rec.headers))
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=tc.settings.kafka_bootstrap)
    await admin.start()
    try:  # retention passed: the log now starts after the original
        await admin.delete_records({TopicPartition(tc.topic, 0): RecordsToDelete(6)})
    finally:
        await admin.close()
    out = sinkfleet(tc, "dlq", "replay", "--topic", tc.topic, "--apply")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert (f"refused {tc.topic}.dlq[0]@0: the value was cut to an excerpt and the original"
            f" {tc.topic}[0]@5 is no longer in the topic") in out.stdout
    assert "1 refused" in out.stdout
    assert await read_topic(tc.settings, tc.topic) == []
