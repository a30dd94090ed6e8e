"""Versions published but not stored yet: the records of one key between the workers'
stored offset and the end of its partition (a lagging worker, a write sent with
--no-wait a moment ago). Reading them keeps the next version above them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Sink
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, DecodeError, PublishError
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs
from sinkfleet.ops.config.store import stored_through

MAX_SCANNED = 200_000  # records of one partition read at most (the newest ones)
SCAN_SECONDS = 20.0


def partition_of(key: bytes, partitions: set[int]) -> int:
    """The partition the Java client and the Publisher pick for ``key``."""
    return sorted(partitions)[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


async def pending_version(settings: Settings, conn: asyncpg.Connection, sink: Sink,
                          groups: list[str], key: bytes, version_field: str, *,
                          say: Callable[[str], None] = lambda m: None,
                          max_scanned: int = MAX_SCANNED) -> int:
    """The highest ``version_field`` among records with ``key`` that no worker of
    ``groups`` has stored yet (0: none)."""
    topic = sink.topic.name
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, client_id="sinkfleet-config")
    try:
        await consumer.start()
    except KafkaError as exc:
        raise PublishError(await explain_kafka_error(settings, exc)) from None
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:  # no metadata yet (the project's way: see ops/replay/plan.py)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(f"topic {topic} does not exist: run `sinkfleet topics apply`")
        tp = TopicPartition(topic, partition_of(key, partitions))
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        start = await stored_through(conn, groups, topic, tp.partition) if groups else None
        if start is None:
            start = (await consumer.beginning_offsets([tp]))[tp]
        if end - start > max_scanned:
            say(f"note: {end - start:,} records of {topic} partition {tp.partition} wait for"
                f" a worker; versions among the oldest {end - start - max_scanned:,} are"
                " not checked")
            start = end - max_scanned
        if start >= end:
            return 0
        consumer.seek(tp, start)
        return await _scan(consumer, tp, end, key, Codec(
            sink.schema, SchemaStore(settings.schema_registry_url)), version_field)
    finally:
        await consumer.stop()


async def _scan(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, key: bytes,
                codec: Codec, version_field: str) -> int:
    newest = 0
    deadline = time.monotonic() + SCAN_SECONDS
    while await consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise PublishError(f"reading the unstored records of {tp.topic} partition"
                               f" {tp.partition} took over {SCAN_SECONDS:g}s; try again")
        batch: dict[Any, list[Any]] = await consumer.getmany(tp, timeout_ms=1000)
        for msg in batch.get(tp, []):
            if msg.offset >= end or msg.key != key or msg.value is None:
                continue  # a tombstone deletes at the newest version: not above it
            try:
                version = codec.decode(msg.value).get(version_field)
            except DecodeError:
                continue  # a worker dead-letters it: it takes no version
            if isinstance(version, int):
                newest = max(newest, version)
    return newest
