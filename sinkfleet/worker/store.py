"""Storing one batch — the one owner of "nothing is committed past what is stored".

1. Dead letters found while decoding are sent, and acknowledged by Kafka.
2. Every sink's rows and the batch's next offsets commit in ONE PostgreSQL transaction,
   fenced: it first locks the batch's offset rows, and if another worker has stored
   past where the batch begins (this worker lost the partitions without noticing: a
   zombie), nothing of it is written (``Fenced``). A batch stored already, exactly (a
   commit whose reply was lost, retried), is not written again.
   If PostgreSQL refuses a record, the batch's refused records are found by bisection
   in a transaction that is then rolled back, dead-lettered (as in 1.), and the rest
   is stored again. No dead letter is ever sent inside a transaction.
3. Only then: the changes go to the Redis caches, and the offsets to Kafka (for lag
   tools; PostgreSQL's copy is the truth a worker seeks to).

The worker's loop decides *when* to store; this module decides nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from sinkfleet.errors import SinkfleetError
from sinkfleet.sink.changes import Written
from sinkfleet.sink.postgres.offsets import lock_offsets, save_offsets
from sinkfleet.sink.postgres.writer import SinkWriter
from sinkfleet.worker.batching import Batch, DeadLetter
from sinkfleet.worker.deadletter import CARRIED_HEADERS
from sinkfleet.worker.dlq import DeadLetterQueue
from sinkfleet.worker.isolate import ROW_ERRORS, write_isolating
from sinkfleet.worker.storage import Storage

log = logging.getLogger("sinkfleet.worker")
MAX_ISOLATION_ROUNDS = 3  # a record refused only on the second try is found again


def dead_letter(msg: Any, stage: str, exc: BaseException) -> DeadLetter:
    """The dead letter for Kafka record ``msg`` that failed at ``stage``."""
    carried = tuple((k, v) for k, v in (msg.headers or ()) if k in CARRIED_HEADERS)
    return DeadLetter(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value,
                      stage, exc, carried)


class Fenced(SinkfleetError):
    """Another worker stored past the start of this batch: its partitions moved while
    this worker held it. Rolled back; the worker reads again from PostgreSQL's offsets."""

    def __init__(self, batch: Batch, ahead: Mapping[TopicPartition, int]) -> None:
        self.ahead = dict(ahead)  # partition -> the next offset stored by the other
        super().__init__(
            f"{batch.records} record(s) not stored: another worker stored past this batch"
            f" in {len(self.ahead)} partition(s)")


@dataclass
class Stored:
    """What storing one batch did, per sink: (rows new, rows written) and changes."""

    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    changes: dict[str, Sequence[Any]] = field(default_factory=dict)
    refused: list[DeadLetter] = field(default_factory=list)  # dead-lettered at step 2
    conflicts: dict[str, int] = field(default_factory=dict)  # state sinks: newly recorded
    seconds: float = 0.0  # steps 1 and 2
    commit_seconds: float = 0.0  # the Kafka commit of step 3


class KafkaMirror:
    """Commits the stored offsets to Kafka too. PostgreSQL already holds them, so a
    commit refused during a rebalance loses nothing; every commit carries all owned
    partitions' stored offsets, so a refused one is repaired by the next.

    A commit is given up after ``timeout`` seconds: aiokafka waits for the group
    coordinator without bound, so a worker cut off from Kafka (but not from PostgreSQL)
    would otherwise stall in its store step, and a stop would hang there."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.consumer: AIOKafkaConsumer | None = None
        self.stored: dict[TopicPartition, int] = {}  # last stored, per partition
        self.timeout = timeout

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.stored.update(offsets)
        if self.consumer is None:
            return
        assigned = self.consumer.assignment()
        owned = {tp: off for tp, off in self.stored.items() if tp in assigned}
        if not owned:
            return
        try:
            await asyncio.wait_for(self.consumer.commit(owned), self.timeout)
        except (KafkaError, AssertionError) as exc:
            log.info("Kafka commit skipped (%s); PostgreSQL has the offsets", exc)
        except TimeoutError:
            log.warning("Kafka commit gave up after %gs (is Kafka reachable?); PostgreSQL"
                        " has the offsets and the next commit carries them", self.timeout)


class StoreStep:
    """Steps 1 to 3 above for one worker group."""

    def __init__(self, group: str, writers: Mapping[str, SinkWriter], storage: Storage,
                 dead_letters: DeadLetterQueue, mirror: KafkaMirror) -> None:
        self.group, self.writers, self.storage = group, writers, storage
        self.dead_letters, self.mirror = dead_letters, mirror

    async def store(self, batch: Batch) -> Stored:
        started = time.monotonic()
        await self.dead_letters.send(batch.dead)                                       # 1
        skip: dict[str, set[int]] = {}  # sink -> id() of records dead-lettered for it
        stored = Stored()
        for _ in range(MAX_ISOLATION_ROUNDS):                                          # 2
            try:
                written = await self.storage.run(
                    "storing batch", lambda conn: self._transaction(conn, batch, skip))
                break
            except ROW_ERRORS as exc:
                log.warning("PostgreSQL refused a batch (%s); isolating the bad records",
                            exc)
                refused = await self.storage.run(
                    "isolating refused records", lambda conn: self._refused(conn, batch, skip))
                await self.dead_letters.send([dl for _, _, dl in refused])
                for sink, msg, dl in refused:
                    skip.setdefault(sink, set()).add(id(msg))
                    stored.refused.append(dl)
        else:
            raise RuntimeError(f"group {self.group}: PostgreSQL kept refusing a batch after"
                               f" {MAX_ISOLATION_ROUNDS} rounds of isolation")
        for name, (w, total) in written.items():
            stored.counts[name] = (w.inserted, total)
            if w.changes:
                stored.changes[name] = w.changes
            if w.conflicts:
                stored.conflicts[name] = w.conflicts
        stored.seconds = time.monotonic() - started
        await self.mirror.commit(batch.offsets)                                        # 3
        stored.commit_seconds = time.monotonic() - started - stored.seconds
        return stored

    def _rows(self, batch: Batch, name: str, skip: dict[str, set[int]]
              ) -> tuple[list[tuple[Any, ...]], list[Any]]:
        rows, sources = batch.rows[name], batch.sources[name]
        drop = skip.get(name)
        if not drop:
            return rows, sources
        kept = [(r, m) for r, m in zip(rows, sources, strict=True) if id(m) not in drop]
        return [r for r, _ in kept], [m for _, m in kept]

    async def _transaction(self, conn: asyncpg.Connection, batch: Batch,
                           skip: dict[str, set[int]]) -> dict[str, tuple[Written, int]]:
        written: dict[str, tuple[Written, int]] = {}
        async with conn.transaction():
            stored = await lock_offsets(conn, self.group, batch.offsets)
            ahead = {tp: off for tp, off in stored.items() if off > batch.first.get(tp, off)}
            if ahead:
                if all(stored.get(tp) == nxt for tp, nxt in batch.offsets.items()):
                    return written  # this very batch is stored: a lost reply, retried
                raise Fenced(batch, ahead)
            for name in batch.rows:
                rows, sources = self._rows(batch, name, skip)
                written[name] = (await self.writers[name].write(conn, rows, sources),
                                 len(rows))
            await save_offsets(conn, self.group, batch.offsets)
        return written

    async def _refused(self, conn: asyncpg.Connection, batch: Batch,
                       skip: dict[str, set[int]]) -> list[tuple[str, Any, DeadLetter]]:
        """The records PostgreSQL refuses, found under savepoints in a transaction that
        is rolled back: nothing is stored until their dead letters are acknowledged."""
        found: list[tuple[str, Any, DeadLetter]] = []
        tx = conn.transaction()
        await tx.start()
        try:
            for name in batch.rows:
                rows, sources = self._rows(batch, name, skip)
                _, bad = await write_isolating(conn, self.writers[name].write, rows, sources)
                found += [(name, msg, dead_letter(msg, "write", exc)) for msg, exc in bad]
        finally:
            await tx.rollback()
        return found
