"""The publisher: validates before sending, buffers without blocking, flushes on close."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import ValidationError
from sinkfleet.producer import Publisher, SyncPublisher, record_key
from tests.support.catalogue import TestCatalogue
from tests.support.kafka import end_offsets

pytestmark = pytest.mark.integration


async def end_total(tc: TestCatalogue) -> int:
    return sum((await end_offsets(tc.settings, [tc.topic])).values())


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


async def test_failed_and_cancelled_sends_give_their_buffer_slot_back(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    load = ExperienceLoad(seed=13)
    async with Publisher(tc.settings, catalogue=tc.catalogue, max_buffered=3,
                         max_block_ms=500) as pub:
        for _ in range(3):  # not a KafkaError: aiokafka asserts "key or value"
            with pytest.raises(AssertionError):
                await pub.send_raw(tc.topic, None, None)
        for _ in range(3):  # cancelled while aiokafka waits for a topic's metadata
            send = asyncio.create_task(pub.send_raw(f"{tc.topic}.absent", b"x"))
            await asyncio.sleep(0.2)
            assert not send.done()
            send.cancel()
            with pytest.raises(asyncio.CancelledError):
                await send
        assert pub.buffered == 0
        # the buffer is whole: three records fit without waiting for acknowledgements
        futures = [await pub.publish("experience_event", next(load)) for _ in range(3)]
        assert pub.buffered == 3 - sum(f.done() for f in futures)
        await pub.flush()
        assert (pub.sent, pub.acked, pub.buffered) == (3, 3, 0)
    assert await end_total(tc) == 3
