"""The store step and the dead-letter sender, driven by fakes (no servers): the order of
the steps, what a refused record costs, retries and what health says meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from sinkfleet.config import Settings
from sinkfleet.http import Health, Phase
from sinkfleet.sink.changes import Change, Written
from sinkfleet.worker.batching import Batch, DeadLetter
from sinkfleet.worker.dlq import DeadLetterQueue
from sinkfleet.worker.metrics import WorkerMetrics
from sinkfleet.worker.storage import Storage
from sinkfleet.worker.store import KafkaMirror, StoreStep

TP = TopicPartition("t", 0)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Msg:
    offset: int
    topic: str = "t"
    partition: int = 0
    timestamp: int = 1
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    headers: tuple[Any, ...] = ()


class Tx:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> Tx:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        self.log.append("rollback" if exc_type else "commit")

    async def start(self) -> None:
        self.log.append("begin")

    async def rollback(self) -> None:
        self.log.append("rollback")


class Conn:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def transaction(self) -> Tx:
        return Tx(self.log)

    async def execute(self, sql: str, *args: Any) -> str:
        assert "consumer_offsets" in sql
        self.log.append(f"offsets {args[3]}")
        return "INSERT 0 1"

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        assert "FOR UPDATE" in sql  # the offsets fence: no other writer has stored here
        return []

    def is_closed(self) -> bool:
        return False

    def terminate(self) -> None:
        self.log.append("terminate")


class Writer:
    """Refuses rows whose value is in ``bad`` (as PostgreSQL would: a DataError)."""

    def __init__(self, log: list[str], bad: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.log, self.bad = log, bad

    async def prepare(self, conn: Any) -> None:
        pass

    async def write(self, conn: Any, rows: list[tuple[Any, ...]], sources: Sequence[Any]
                    ) -> Written:
        if any(r[0] in self.bad for r in rows):
            raise asyncpg.DataError("value out of range")
        self.log.append(f"write {[r[0] for r in rows]}")
        return Written(len(rows), [Change("append", {"v": r[0]}) for r in rows])


@dataclass
class FakeDlq:
    log: list[str]
    sent: list[DeadLetter] = field(default_factory=list)

    async def send(self, dead: list[DeadLetter]) -> None:
        if dead:
            self.log.append(f"dlq {[d.offset for d in dead]}")
            self.sent += dead


def batch_of(values: list[int], dead: list[DeadLetter] = ()) -> Batch:  # type: ignore[assignment]
    b = Batch()
    b.rows["s"] = [(v,) for v in values]
    b.sources["s"] = [Msg(offset=i) for i in range(len(values))]
    b.offsets[TP] = len(values)
    b.dead = list(dead)
    b.records = len(values)
    return b


def step(log: list[str], writer: Writer) -> tuple[StoreStep, FakeDlq, KafkaMirror]:
    storage = Storage(Settings(), [writer], Health(), WorkerMetrics("g"), "g")
    storage._conn = Conn(log)  # type: ignore[assignment]
    dlq, mirror = FakeDlq(log), KafkaMirror()
    return StoreStep("g", {"s": writer}, storage, dlq, mirror), dlq, mirror  # type: ignore[arg-type]


async def test_dead_letters_are_acknowledged_before_the_rows_and_offsets_commit() -> None:
    log: list[str] = []
    store, _, mirror = step(log, Writer(log))
    poison = DeadLetter("t", 0, 3, 1, b"k", b"x", "decode", ValueError("bad"))
    stored = await store.store(batch_of([10, 11, 12], [poison]))
    assert log == ["dlq [3]", "begin", "write [10, 11, 12]", "offsets [3]", "commit"]
    assert stored.counts == {"s": (3, 3)} and stored.refused == []
    assert [c.row["v"] for c in stored.changes["s"]] == [10, 11, 12]
    assert mirror.stored == {TP: 3}  # mirrored to Kafka only after the commit


async def test_refused_records_are_found_in_a_rolled_back_transaction_then_dead_lettered(
        ) -> None:
    log: list[str] = []
    store, _, _ = step(log, Writer(log, bad={11, 13}))
    stored = await store.store(batch_of([10, 11, 12, 13]))
    # 1: the fast path fails; 2: bisection under savepoints, all rolled back; 3: the
    # refused records' dead letters are acknowledged; 4: the rest commits with offsets.
    assert log[:2] == ["begin", "rollback"]
    isolating = log[2:log.index("dlq [1, 3]")]
    assert isolating[0] == "begin" and isolating[-1] == "rollback"
    assert "dlq" not in " ".join(isolating)  # savepoints inside; the outer one rolls back
    assert log[log.index("dlq [1, 3]"):] == [
        "dlq [1, 3]", "begin", "write [10, 12]", "offsets [4]", "commit"]
    assert [(d.offset, d.stage) for d in stored.refused] == [(1, "write"), (3, "write")]
    assert stored.counts == {"s": (2, 2)}
    assert [c.row["v"] for c in stored.changes["s"]] == [10, 12]  # only what committed


async def test_a_storage_outage_is_retried_and_shown_then_cleared() -> None:
    log: list[str] = []
    writer = Writer(log)
    store, _, _ = step(log, writer)
    health = store.storage.health
    health.phase = Phase.RUNNING
    failures = [ConnectionResetError("gone"), ConnectionResetError("gone")]
    seen: list[str] = []
    real = writer.write

    async def flaky(conn: Any, rows: Any, sources: Any) -> Written:
        if failures:
            seen.append(health.state)
            raise failures.pop()
        return await real(conn, rows, sources)

    writer.write = flaky  # type: ignore[method-assign]

    async def reconnect() -> Any:
        store.storage._conn = Conn(log)  # type: ignore[assignment]
        return store.storage._conn

    store.storage.connection = reconnect  # type: ignore[method-assign]
    store.storage.max_delay = 0.01
    stored = await store.store(batch_of([1, 2]))
    assert stored.counts == {"s": (2, 2)}
    assert seen[1].startswith("degraded: storage: PostgreSQL unavailable while storing batch")
    assert health.state == "ok" and health.ready


class Producer:
    """Fails the first ``fail`` sends with ``error``, then acknowledges."""

    def __init__(self, fail: int, error: type[Exception]) -> None:
        self.fail, self.error = fail, error
        self.acked: list[tuple[str, bytes | None, int]] = []
        self.limits: list[int] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None,
                   headers: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            future.set_exception(self.error("no"))
        else:
            self.acked.append((topic, value, len(value or b"")))
            future.set_result(None)
        return future


def queue(producer: Producer, health: Health) -> DeadLetterQueue:
    q = DeadLetterQueue(Settings(), {"t": "t.dlq"}, "w", health, WorkerMetrics("g"), "g",
                        max_delay=0.01)
    q._producer = producer  # type: ignore[assignment]
    return q


async def test_an_unreachable_dead_letter_topic_is_retried_until_acknowledged() -> None:
    health = Health()
    health.phase = Phase.RUNNING
    producer = Producer(fail=3, error=KafkaTimeoutError)
    q = queue(producer, health)
    states: list[str] = []
    real_attempt = q._attempt

    async def watched(dead: list[DeadLetter]) -> Any:
        states.append(health.state)
        return await real_attempt(dead)

    q._attempt = watched  # type: ignore[method-assign]
    dead = [DeadLetter("t", 0, o, 1, b"k", b"x", "decode", ValueError("bad")) for o in (1, 2)]
    await q.send(dead)
    assert [a[0] for a in producer.acked] == ["t.dlq", "t.dlq"]  # each exactly once
    assert states[0] == "ok"
    assert states[1].startswith("degraded: dead-letters: cannot send")
    assert health.state == "ok"


async def test_a_dead_letter_the_broker_finds_too_large_is_rebuilt_smaller(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sinkfleet.worker import dlq as module

    limits: list[int] = []
    real = module.dead_letter_record

    def spy(dl: DeadLetter, worker_id: str, *, limit: int) -> Any:
        limits.append(limit)
        return real(dl, worker_id, limit=limit)

    monkeypatch.setattr(module, "dead_letter_record", spy)
    producer = Producer(fail=2, error=MessageSizeTooLargeError)
    q = queue(producer, Health())
    await q.send([DeadLetter("t", 0, 7, 1, b"k", b"x" * 10, "decode", ValueError("bad"))])
    assert limits == [module.DLQ_RECORD_LIMIT, module.DLQ_RECORD_LIMIT // 4,
                      module.DLQ_RECORD_LIMIT // 16]
    assert len(producer.acked) == 1


async def test_a_rebalance_callback_failure_is_kept_and_raised_by_the_loop(
        tmp_path: Any) -> None:
    """aiokafka swallows what a listener raises: the worker keeps it, says so at once and
    raises it at the loop's next turn, with a hint for what to fix."""
    from sinkfleet.catalogue import load_catalogue
    from sinkfleet.worker.loop import Worker, WorkerFailed

    root = ROOT
    catalogue = load_catalogue(root)
    worker = Worker(Settings(home=root, state_dir=tmp_path), catalogue,
                    catalogue.worker("events"))
    worker.health.phase = Phase.RUNNING

    async def assign() -> None:
        raise asyncpg.InsufficientPrivilegeError("permission denied for table consumer_offsets")

    await worker.guard("assigning partitions", assign())  # returns: the listener is calm
    assert worker.health.phase is Phase.FAILED
    assert worker.health.state.startswith("failed: group ")
    assert not worker.health.alive and not worker.health.ready
    with pytest.raises(WorkerFailed, match="assigning partitions failed:"
                       " InsufficientPrivilegeError: permission denied .* `sinkfleet db migrate`"):
        worker._raise_failure()
    await worker.guard("revoking partitions", assign())  # the first failure is the one kept
    assert "assigning partitions" in str(worker._failure)


class Coordinator:
    """A consumer whose group coordinator does not answer until ``answer`` is set
    (aiokafka's commit waits for it without bound)."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.committed: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP, TopicPartition("t", 1)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.answer.wait()
        self.committed.append(dict(offsets))


async def test_a_kafka_commit_that_never_answers_is_given_up_and_repaired_by_the_next(
        caplog: pytest.LogCaptureFixture) -> None:
    """A worker cut off from Kafka but not from PostgreSQL must not stall in its store
    step (nor hang on stop): the mirror gives up, says so, and the next commit carries
    every stored offset."""
    mirror, consumer = KafkaMirror(timeout=0.2), Coordinator()
    mirror.consumer = consumer  # type: ignore[assignment]
    started = asyncio.get_running_loop().time()
    await mirror.commit({TP: 5})
    assert asyncio.get_running_loop().time() - started < 2
    assert consumer.committed == []
    assert "Kafka commit gave up after 0.2s" in caplog.text
    assert "PostgreSQL has the offsets" in caplog.text
    consumer.answer.set()
    await mirror.commit({TopicPartition("t", 1): 9})
    assert consumer.committed == [{TP: 5, TopicPartition("t", 1): 9}]
