"""Every source partition rolled up in offset order, none skipped, whatever faust drops.

Windows close on event time, so a record rolled up after a later one may find its
window already closed and written final: it would be lost. faust does hand records over
out of order, and drops some for good (found by the kill -9 tests, a few records short):

* when a rebalance or a recovery ends, faust empties its agents' queues (records fetched,
  not processed) and counts on having sought back to the committed offsets to read them
  again; but that seek happens *before* the queues are emptied, and aiokafka does not
  seek a partition with no committed offset (or 0), so the emptied records never return;
* faust discards a record below the partition's last *read* offset, so records still
  arriving from before a seek make it discard the ones read again.

So the app keeps, per source partition, the next offset it must roll up. A record past
it means records were skipped: it is dropped without an ack (the commit cannot pass
it) and the partition is sought back; records below it are read again and skipped by
the entries (docs/rollups.md). faust's read-offset filter is off for the source topics,
and after every rebalance the partitions are sought back to where the app is.

The guard assumes offsets without holes, as sinkfleet's publishers write them. Holes
(transaction markers of a transactional producer, a compacted topic) are accepted after
``MAX_SEEKS`` rewinds that did not bring the missing offsets back, with a warning.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.positions import KafkaPositions

log = logging.getLogger("sinkfleet.rollups")

MAX_SEEKS = 5
SEEK_INTERVAL = 2.0  # s between two rewinds to the same offset


class _ReadOffsets(defaultdict):
    """faust's per-partition read offsets, never reported for the source topics (faust
    would discard every record read again below the last one read)."""

    def __init__(self, topics: set[str]) -> None:
        super().__init__(lambda: None)
        self.topics = topics

    def __getitem__(self, tp: Any) -> Any:
        return None if tp.topic in self.topics else super().__getitem__(tp)


class InOrder:
    """Admits one source topic's records to the roll-ups in offset order per partition."""

    def __init__(self, app: faust.App, settings: Settings, topic: str) -> None:
        self.app = app
        self.settings = settings
        self.topic = topic
        self.next: dict[int, int] = {}  # partition -> next offset to roll up
        self.assigned: set[int] | None = None  # None: unknown (admit every partition)
        # p -> (when last sought, seeks) back to next[p]; cleared whenever next[p] moves
        self._rewinding: dict[int, tuple[float, int]] = {}
        self.rewinds = 0
        self.holes = 0

    @property
    def consumer(self) -> Any:  # faust's internals below are not in its types
        return self.app.consumer

    async def start_at_committed(self, partitions: set[int]) -> None:
        """After an assignment, before the stream resumes: every partition starts at its
        committed offset, or its first offset when none is committed (or it is gone).
        Asked of Kafka by a client of its own (faust's consumer is mid-rebalance)."""
        self.next.clear()
        self._rewinding.clear()
        self.assigned = set(partitions)
        if not partitions:
            return
        try:
            async with KafkaPositions(self.settings) as kafka:
                committed = await kafka.committed(self.app.conf.id)
                bounds = await kafka.bounds([self.topic])
        except (SinkfleetError, KafkaError) as exc:  # each partition starts where it starts
            log.warning("%s: committed offsets unknown (%s): records skipped before the"
                        " first one rolled up would go unnoticed", self.topic, exc)
            return
        for p in partitions:
            tp = TopicPartition(self.topic, p)
            start = bounds[tp][0] if tp in bounds else 0
            self.next[p] = max(committed.get(tp, start), start)

    async def admit(self, message: Any) -> bool:
        """Whether ``message`` is rolled up now: the partition's next offset, or one read
        again. A later one is dropped (unacked) and the partition sought back."""
        p, offset = message.partition, message.offset
        if self.assigned is not None and p not in self.assigned:
            return False  # fetched before a rebalance took the partition away
        expected = self.next.get(p)
        if expected is not None and offset < expected:
            return True  # read again: the entries skip it
        if expected is None or offset == expected or self._hole(p, expected, offset):
            self.next[p] = offset + 1
            self._rewinding.pop(p, None)
            return True
        message.acked = True  # faust's ack becomes a no-op: the commit stops below it
        self.consumer._unacked_messages.discard(message)
        await self._rewind(p, expected)
        return False

    def _hole(self, p: int, expected: int, offset: int) -> bool:
        _, seeks = self._rewinding.get(p, (0.0, 0))
        if seeks < MAX_SEEKS:
            return False
        self.holes += 1
        log.warning("%s[%d]: offsets %d to %d did not come back after %d rewinds: taken as a"
                    " hole in the log (transaction markers?)", self.topic, p, expected,
                    offset - 1, seeks)
        return True

    async def _rewind(self, p: int, to: int) -> None:
        at, seeks = self._rewinding.get(p, (0.0, 0))
        now = time.monotonic()
        if seeks and now - at < SEEK_INTERVAL:
            return  # sought already: the records before it are on their way
        self._rewinding[p] = (now, seeks + 1)
        self.rewinds += 1
        log.info("%s[%d]: records before the one at hand were skipped; reading again from"
                 " %d", self.topic, p, to)
        await self._seek({p: to})

    async def reread(self) -> None:
        """After a rebalance has emptied faust's queues: seek every partition back to the
        next offset to roll up."""
        await self._seek(dict(self.next))

    async def _seek(self, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        try:
            await self.consumer.seek_wait(
                {TopicPartition(self.topic, p): o for p, o in offsets.items()})
        except (TimeoutError, IllegalStateError, AssertionError) as exc:
            # a rebalance started: it ends with another reread
            log.info("%s: not sought back (%s: %s)", self.topic, type(exc).__name__, exc)


def keep_order(app: faust.App, guards: list[InOrder]) -> None:
    """Switch faust's read-offset filter off for the guarded topics, and seek them back
    after every rebalance (once faust has emptied its queues)."""
    consumer: Any = app.consumer
    consumer._read_offset = _ReadOffsets({g.topic for g in guards})  # before it is bound
    rebalance_end = app.on_rebalance_end

    def on_rebalance_end() -> None:
        rebalance_end()
        for guard in guards:
            app.loop.create_task(guard.reread())

    setattr(app, "on_rebalance_end", on_rebalance_end)  # noqa: B010
