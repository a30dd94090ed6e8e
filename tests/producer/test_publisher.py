"""The publisher: validates before sending, buffers without blocking, flushes on close."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from sinkfleet.errors import ValidationError
from sinkfleet.producer import Publisher, SyncPublisher, record_key
from sinkfleet.producer.synthetic import ExperienceLoad
from tests.conftest import TestCatalogue

pytestmark = pytest.mark.integration


async def end_total(tc: TestCatalogue) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=tc.settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(tc.topic, p) for p in range(6)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def test_invalid_record_is_refused_and_nothing_is_sent(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    event = next(iter(ExperienceLoad(seed=9)))
    event["state"] = "not a vector"
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        with pytest.raises(ValidationError, match="state"):
            await pub.publish("experience_event", event)
    assert await end_total(tc) == 0


async def test_publish_returns_before_the_broker_acknowledges(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    load = ExperienceLoad(seed=10)
    async with Publisher(tc.settings, catalogue=tc.catalogue, linger_ms=50) as pub:
        futures = [await pub.publish("experience_event", next(load)) for _ in range(200)]
        assert not all(f.done() for f in futures)  # buffered, not yet acknowledged
        await pub.flush()
        assert all(f.done() and f.exception() is None for f in futures)
        assert pub.acked == 200
    assert await end_total(tc) == 200


async def test_keys_keep_an_episode_on_one_partition(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    load = ExperienceLoad(seed=11, agents=4)
    events = [next(load) for _ in range(400)]
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        futures = [await pub.publish("experience_event", e) for e in events]
    partitions: dict[bytes | None, set[int]] = {}
    for event, fut in zip(events, futures, strict=True):
        key = record_key(tc.catalogue.topics[tc.topic], event)
        assert key == f"{event['agent_id']}:{event['episode_id']}".encode()
        partitions.setdefault(key, set()).add(fut.result().partition)
    assert all(len(p) == 1 for p in partitions.values())


async def test_sync_publisher_for_agents_without_asyncio(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    load = ExperienceLoad(seed=12)
    started = time.monotonic()
    with SyncPublisher(tc.settings, catalogue=tc.catalogue) as pub:
        for _ in range(300):
            pub.publish("experience_event", next(load))
        with pytest.raises(ValidationError):
            pub.publish("experience_event", {"event_id": b"short"})
    assert time.monotonic() - started < 30
    assert await end_total(tc) == 300
