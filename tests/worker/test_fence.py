"""The offsets fence of the store step, against the real PostgreSQL: a batch another
worker has stored past is rolled back with nothing written; a batch stored already,
exactly (a lost commit reply, retried), is not written again; the owner's next batch
is. The whole fault (a worker cut off from Kafka) is tests/chaos/test_network_faults.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import TopicPartition

from sinkfleet.config import Settings
from sinkfleet.http import Health
from sinkfleet.sink.changes import Written
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.offsets import group_offsets
from sinkfleet.worker.batching import Batch
from sinkfleet.worker.metrics import WorkerMetrics
from sinkfleet.worker.storage import Storage
from sinkfleet.worker.store import Fenced, KafkaMirror, StoreStep

pytestmark = pytest.mark.integration

A, B = TopicPartition("fence-t", 0), TopicPartition("fence-t", 1)


class Writer:
    """Writes nothing; records the batches it was asked to write."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    async def prepare(self, conn: asyncpg.Connection) -> None:
        pass

    async def write(self, conn: asyncpg.Connection, rows: list[Any],
                    sources: Sequence[Any] = ()) -> Written:
        self.calls.append(list(rows))
        return Written(len(rows))


class NoDeadLetters:
    async def send(self, dead: list[Any]) -> None:
        assert not dead


def batch(ranges: dict[TopicPartition, tuple[int, int]]) -> Batch:
    rows = [(tp.partition, o) for tp, (f, n) in ranges.items() for o in range(f, n)]
    b = Batch(rows={"s": rows}, sources={"s": list(rows)})
    b.first = {tp: f for tp, (f, _) in ranges.items()}
    b.offsets = {tp: n for tp, (_, n) in ranges.items()}
    b.records = len(b.rows["s"])
    return b


@pytest_asyncio.fixture
async def group(stack: Settings) -> AsyncIterator[str]:
    name = f"test-fence-{uuid.uuid4().hex[:10]}"
    yield name
    async with pg(stack) as conn:
        await conn.execute("DELETE FROM sinkfleet.consumer_offsets WHERE group_id = $1", name)


def store_step(stack: Settings, group: str, writer: Writer) -> tuple[StoreStep, Storage]:
    storage = Storage(stack, [writer], Health(), WorkerMetrics(group), group)
    return StoreStep(group, {"s": writer}, storage, NoDeadLetters(),  # type: ignore[arg-type]
                     KafkaMirror()), storage


async def stored(stack: Settings, group: str) -> dict[TopicPartition, int]:
    async with pg(stack) as conn:
        return await group_offsets(conn, group)


async def test_a_batch_stored_past_is_refused_and_a_retried_one_not_written_again(
        stack: Settings, group: str) -> None:
    writer = Writer()
    step, storage = store_step(stack, group, writer)
    try:
        first = batch({A: (0, 10), B: (0, 4)})
        result = await step.store(first)
        assert result.counts == {"s": (14, 14)}
        assert await stored(stack, group) == {A: 10, B: 4}

        # the same batch again (its commit's reply was lost): nothing written twice
        assert (await step.store(batch({A: (0, 10), B: (0, 4)}))).counts == {}
        assert len(writer.calls) == 1

        # a zombie's batch from before what is stored, in one partition of two:
        # rolled back as a whole, nothing written, the offsets as they were
        with pytest.raises(Fenced, match=r"15 record\(s\) not stored: another worker stored"
                                         r" past this batch in 1 partition") as refused:
            await step.store(batch({A: (5, 16), B: (4, 8)}))
        assert refused.value.ahead == {A: 10}
        assert not refused.value.retriable
        assert len(writer.calls) == 1
        assert await stored(stack, group) == {A: 10, B: 4}

        # the owner's next batch (a gap after compaction is no fence) is stored
        assert (await step.store(batch({A: (12, 20), B: (4, 5)}))).counts == {"s": (9, 9)}
        assert await stored(stack, group) == {A: 20, B: 5}
    finally:
        storage.drop()


async def test_two_writers_of_one_partition_take_turns_and_the_second_is_fenced(
        stack: Settings, group: str) -> None:
    """The owner and a zombie store the same range at once: the offset row's lock
    serialises them, so exactly one writes and the other sees what it stored."""
    writers = [Writer(), Writer()]
    steps = [store_step(stack, group, w) for w in writers]
    try:
        await steps[0][0].store(batch({A: (0, 3)}))
        results = await asyncio.gather(*(s.store(batch({A: (3, 9)})) for s, _ in steps),
                                       return_exceptions=True)
        # the second sees exactly this batch stored already: written once, no error
        assert sum(len(w.calls) for w in writers) == 2  # the first batch, then one of these
        assert [r.counts for r in results if not isinstance(r, BaseException)] in (
            [{"s": (6, 6)}, {}], [{}, {"s": (6, 6)}])
        assert await stored(stack, group) == {A: 9}
        # a longer overlapping one behind it is refused
        with pytest.raises(Fenced):
            await steps[1][0].store(batch({A: (3, 12)}))
        assert await stored(stack, group) == {A: 9}
    finally:
        for _, storage in steps:
            storage.drop()
