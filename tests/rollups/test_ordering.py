"""The in-order guard of the roll-ups (sinkfleet/rollups/ordering.py), as a pure unit: a
fake faust consumer records seeks; real Kafka runs in test_rollups.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from sinkfleet.config import Settings
from sinkfleet.rollups import ordering
from sinkfleet.rollups.ordering import MAX_SEEKS, InOrder, _ReadOffsets

TOPIC = "t.events"


@dataclass(eq=False)
class Message:
    partition: int
    offset: int
    acked: bool = False


@dataclass
class Consumer:
    seeks: list[dict[TopicPartition, int]] = field(default_factory=list)
    _unacked_messages: set[Any] = field(default_factory=set)
    refuse: bool = False

    async def seek_wait(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            raise IllegalStateError("partition not assigned")
        self.seeks.append(offsets)


@dataclass
class App:
    consumer: Consumer = field(default_factory=Consumer)


def guard(next_offsets: dict[int, int]) -> tuple[InOrder, Consumer]:
    app = App()
    order = InOrder(app, Settings(), TOPIC)  # type: ignore[arg-type]
    order.next = dict(next_offsets)
    order.assigned = set(next_offsets)
    return order, app.consumer


async def admitted(order: InOrder, consumer: Consumer, p: int, offset: int) -> bool:
    message = Message(p, offset)
    consumer._unacked_messages.add(message)
    ok = await order.admit(message)
    assert message.acked is not ok and (message in consumer._unacked_messages) is ok
    return ok


async def test_records_in_order_and_read_again_are_admitted() -> None:
    order, consumer = guard({0: 5})
    assert [await admitted(order, consumer, 0, o) for o in (3, 4, 5, 6, 2)] == [True] * 5
    assert order.next == {0: 7} and consumer.seeks == [] and order.rewinds == 0


async def test_a_skipped_record_rewinds_once_and_holds_what_follows() -> None:
    order, consumer = guard({0: 5, 1: 0})
    assert await admitted(order, consumer, 0, 8) is False  # 5..7 were skipped
    assert consumer.seeks == [{TopicPartition(TOPIC, 0): 5}]
    assert await admitted(order, consumer, 0, 9) is False  # held, no second seek yet
    assert await admitted(order, consumer, 1, 0) is True  # other partitions flow on
    assert len(consumer.seeks) == 1 and order.rewinds == 1
    assert [await admitted(order, consumer, 0, o) for o in (5, 6, 7, 8, 9)] == [True] * 5
    assert order.next == {0: 10, 1: 1} and order.holes == 0


async def test_a_real_hole_is_accepted_after_max_seeks(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setattr(ordering, "SEEK_INTERVAL", 0.0)
    order, consumer = guard({0: 5})
    for _ in range(MAX_SEEKS):
        assert await admitted(order, consumer, 0, 7) is False
    assert len(consumer.seeks) == MAX_SEEKS
    assert await admitted(order, consumer, 0, 7) is True  # 5 and 6 do not exist
    assert order.next == {0: 8} and order.holes == 1


async def test_partitions_not_assigned_are_not_rolled_up() -> None:
    order, consumer = guard({0: 0})
    assert await order.admit(Message(2, 0)) is False
    assert consumer.seeks == []


async def test_without_a_baseline_the_first_record_sets_it() -> None:
    order, consumer = guard({})
    order.assigned = None  # committed offsets could not be read
    assert await admitted(order, consumer, 0, 40) is True
    assert await admitted(order, consumer, 0, 42) is False
    assert consumer.seeks == [{TopicPartition(TOPIC, 0): 41}]


async def test_reread_seeks_every_partition_back_and_survives_a_rebalance() -> None:
    order, consumer = guard({0: 5, 1: 9})
    await order.reread()
    assert consumer.seeks == [{TopicPartition(TOPIC, 0): 5, TopicPartition(TOPIC, 1): 9}]
    consumer.refuse = True
    await order.reread()  # logged, not raised: the next rebalance rereads
    assert len(consumer.seeks) == 1


def test_read_offsets_are_hidden_for_the_guarded_topics_only() -> None:
    offsets = _ReadOffsets({TOPIC})
    offsets[TopicPartition(TOPIC, 0)] = 10
    offsets[TopicPartition("other", 0)] = 10
    assert offsets[TopicPartition(TOPIC, 0)] is None
    assert offsets[TopicPartition("other", 0)] == 10
    assert offsets[TopicPartition("other", 1)] is None
