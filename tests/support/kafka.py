"""Kafka in tests: log end offsets, a topic's partitions, every record of a topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from sinkfleet.config import Settings
from sinkfleet.kafka.positions import KafkaPositions


async def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """Log end offset of every partition of ``topics`` (those that exist; empty ones too)."""
    async with KafkaPositions(settings) as kafka:
        return {tp: end for tp, (_, end) in (await kafka.bounds(topics)).items()}


async def read_topic(settings: Settings, topic: str, timeout: float = 30) -> list[Any]:
    """Every record of ``topic`` now, from its beginning (group-less)."""
    tps = await partitions_of(settings, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        # An explicit seek: seek_to_beginning() can lose a race with the reset that
        # assign() starts, leaving the position at the end.
        for tp, offset in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, offset)
        got: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert asyncio.get_running_loop().time() < deadline, f"reading {topic} timed out"
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(m for m in msgs if m.offset < ends[TopicPartition(topic, m.partition)])
        return got
    finally:
        await consumer.stop()


async def partitions_of(settings: Settings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    finally:
        await admin.close()
