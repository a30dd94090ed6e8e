"""publish_many sends whole batches (create_batch/send_batch): it validates everything
first, keeps each key's records in order on the key's partition, and holds no more
buffer slots than ``max_buffered``."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import ValidationError
from sinkfleet.producer import Publisher, record_key
from tests.support.catalogue import TestCatalogue
from tests.support.kafka import end_offsets, partitions_of, read_topic

pytestmark = pytest.mark.integration


async def test_publish_many_keeps_each_key_in_order_on_its_partition(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    topic = tc.catalogue.topics[tc.topic]
    load = ExperienceLoad(seed=21, agents=4)
    before, many, after = ([next(load) for _ in range(n)] for n in (20, 3000, 20))
    # small batches and a buffer smaller than the call: many batches per partition, and
    # the call must hand over batches before it can take more slots
    async with Publisher(tc.settings, catalogue=tc.catalogue, max_batch_bytes=16 * 1024,
                         max_buffered=500, max_block_ms=20_000) as pub:
        for e in before:
            await pub.publish("experience_event", e)
        assert await pub.publish_many("experience_event", many) == 3000
        assert pub.buffered == 0  # every record of the call acknowledged
        for e in after:
            await pub.publish("experience_event", e)
        await pub.flush()
        assert (pub.sent, pub.acked, pub.buffered) == (3040, 3040, 0)
        expected: dict[bytes, list[bytes]] = {}
        for e in before + many + after:
            _, key, value = pub.encode("experience_event", e)
            assert key == record_key(topic, e)
            expected.setdefault(key, []).append(value)
    count = len(await partitions_of(tc.settings, tc.topic))
    got: dict[bytes, list[bytes]] = {}
    for m in sorted(await read_topic(tc.settings, tc.topic),
                    key=lambda m: (m.partition, m.offset)):
        assert m.partition == (murmur2(m.key) & 0x7FFFFFFF) % count  # publish()'s partition
        got.setdefault(m.key, []).append(m.value)
    assert got == expected  # each key's records, in order, exactly once


async def test_publish_many_validates_every_record_before_sending_any(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    load = ExperienceLoad(seed=22)
    records = [next(load) for _ in range(50)]
    records[37]["state"] = "not a vector"
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        with pytest.raises(ValidationError, match=r"record #37: .*state.*nothing was sent"):
            await pub.publish_many("experience_event", records)
        assert (pub.sent, pub.buffered) == (0, 0)
        assert await pub.publish_many("experience_event", []) == 0
    assert sum((await end_offsets(tc.settings, [tc.topic])).values()) == 0
