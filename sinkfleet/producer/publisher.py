"""The publisher SDK agents import: validate, encode, hand to Kafka, never block long.

Example::

    async with Publisher() as pub:
        await pub.publish("experience_event", event)   # returns once buffered
    # leaving the block flushes: every record is acknowledged by Kafka (acks=all)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.hashing import content_hash
from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.catalogue.audit import audit_hash_fields
from sinkfleet.catalogue.models import TopicSpec
from sinkfleet.config import Settings, load_settings
from sinkfleet.errors import PublishError, PublishTimeout, ValidationError
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs
from sinkfleet.keys import join_key, record_key

T = TypeVar("T")


class Publisher:
    """Async publisher of catalogue families to Kafka (idempotent, acks=all).

    ``publish()`` validates against the family's schema (raising
    ``ValidationError`` with nothing sent) and returns a delivery future once
    the record is buffered. At most ``max_buffered`` records wait for
    acknowledgement; beyond that ``publish()`` waits up to ``max_block_ms``
    and then raises ``PublishTimeout``. ``buffered`` counts the records holding a slot;
    a send that fails or is cancelled gives its slot back.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        catalogue: Catalogue | None = None,
        linger_ms: int = 5,
        max_batch_bytes: int = 512 * 1024,
        compression: str | None = "lz4",
        max_buffered: int = 100_000,
        max_block_ms: int = 10_000,
    ) -> None:
        self.settings = settings or load_settings()
        self.catalogue = catalogue or load_catalogue(self.settings.home)
        self._store = SchemaStore(self.settings.schema_registry_url)
        self._codecs: dict[str, tuple[TopicSpec, Codec]] = {}
        self._hash_fields = audit_hash_fields(self.catalogue)
        self._producer = AIOKafkaProducer(
            **kafka_client_kwargs(self.settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=max_batch_bytes,
            compression_type=compression,
            request_timeout_ms=30_000,
        )
        self._slots = asyncio.Semaphore(max_buffered)
        self.max_buffered = max_buffered
        self.buffered = 0  # records holding a slot: handed to Kafka, not yet acknowledged
        self._max_block = max_block_ms / 1000
        self._failures: list[BaseException] = []
        self._partitions: dict[tuple[str, bytes], tuple[int, int]] = {}
        self.sent = 0
        self.acked = 0

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise PublishError(await explain_kafka_error(self.settings, exc)) from None

    def _codec(self, family: str) -> tuple[TopicSpec, Codec]:
        entry = self._codecs.get(family)
        if entry is None:
            topic = self.catalogue.topic_for_family(family)
            entry = (topic, Codec(self.catalogue.schemas[family], self._store))
            self._codecs[family] = entry
        return entry

    def encode(self, family: str, record: dict[str, Any]) -> tuple[str, bytes | None, bytes]:
        """Validate and frame ``record``: (topic, key, value). Nothing is sent."""
        topic, codec = self._codec(family)
        hash_field = self._hash_fields.get(family)
        if hash_field is not None and record.get(hash_field) is None:
            # Audit families: fill the content hash the workers will check.
            schema = self.catalogue.schemas[family]
            record = {**record, hash_field: content_hash(record, schema, hash_field)}
        value = codec.encode(record)
        return topic.name, record_key(topic, record), value

    async def delete(self, family: str, *key_parts: Any) -> asyncio.Future[Any]:
        """Publish a tombstone for the id ``key_parts`` (state families: the values of
        the topic's key fields, in order). The state sink deletes its latest row."""
        topic, _ = self._codec(family)
        if len(key_parts) != len(topic.key) or not topic.key:
            raise ValidationError(f"{family}: a tombstone needs the key fields {topic.key},"
                                  f" got {len(key_parts)} value(s)")
        return await self.send_raw(topic.name, None, join_key(key_parts))

    async def publish(self, family: str, record: dict[str, Any], *,
                      key: bytes | None = None) -> asyncio.Future[Any]:
        topic, default_key, value = self.encode(family, record)
        return await self.send_raw(topic, value, key if key is not None else default_key)

    async def publish_many(self, family: str, records: Iterable[dict[str, Any]]) -> int:
        """Publish ``records`` in one call (seed 001's bulk insert of 1,000 tokens): every
        record is validated first — one invalid record raises ``ValidationError`` naming
        its index and nothing is sent — then all are sent and acknowledged (acks=all)
        before this returns. Returns how many were published.

        Records go to Kafka in whole batches (``create_batch``/``send_batch``), one open
        batch per partition, appended in the order given: no per-record ``send()`` or
        delivery future (a third of the cost per record), and a key's records keep their
        order since they share a partition and its batches are submitted in turn."""
        framed = []
        for i, record in enumerate(records):
            try:
                framed.append(self.encode(family, record))
            except ValidationError as exc:
                raise ValidationError(f"{family} record #{i}: {exc}; nothing was sent"
                                      ) from None
        if not framed:
            return 0
        topic = framed[0][0]
        try:
            partitions = sorted(await self._producer.partitions_for(topic))
        except KafkaError as exc:
            raise PublishError(f"send to {topic} failed: {exc}") from None
        pending: list[tuple[asyncio.Future[Any], int]] = []
        open_: dict[int, tuple[Any, list[int]]] = {}  # partition -> (builder, [count])
        try:
            for _, key, value in framed:
                if self._slots.locked():
                    # the buffer is full: hand over what this call holds before waiting
                    for p in list(open_):
                        pending.append(await self._submit(topic, p, *open_.pop(p)))
                await self._acquire()
                self.buffered += 1
                p = self._partition(topic, key) if key is not None else None
                if p is None:
                    p = self._producer._partitioner(key, partitions, partitions)
                entry = open_.get(p)
                if entry is None:
                    entry = open_[p] = (self._producer.create_batch(), [0])
                if entry[0].append(timestamp=None, key=key, value=value) is None:
                    pending.append(await self._submit(topic, p, *open_.pop(p)))
                    entry = open_[p] = (self._producer.create_batch(), [0])
                    if entry[0].append(timestamp=None, key=key, value=value) is None:
                        self._release()
                        raise PublishError(f"a {family} record of {len(value or b'')} bytes"
                                           " does not fit in an empty batch: raise"
                                           " max_batch_bytes")
                entry[1][0] += 1
            for p in list(open_):
                pending.append(await self._submit(topic, p, *open_.pop(p)))
        finally:
            for _builder, count in open_.values():  # never handed over: free their slots
                self._release(count[0])
        await asyncio.wait([f for f, _ in pending])
        failed = [(PublishError("delivery cancelled") if f.cancelled() else f.exception(), n)
                  for f, n in pending if f.cancelled() or f.exception() is not None]
        if failed:
            lost = sum(n for _, n in failed)
            raise PublishError(f"{lost} of {len(framed)} {family} record(s) were not"
                               f" acknowledged; first: {failed[0][0]}")
        return len(framed)

    async def _submit(self, topic: str, partition: int, builder: Any,
                      count: list[int]) -> tuple[asyncio.Future[Any], int]:
        """Hand a filled batch of ``count[0]`` records (holding as many slots) to Kafka."""
        n = count[0]
        builder.close()  # later send()s to this partition open a batch of their own
        try:
            fut = await self._producer.send_batch(builder, topic, partition=partition)
        except BaseException as exc:
            self._release(n)
            count[0] = 0  # the caller's finally must not free these slots again
            if isinstance(exc, KafkaError):
                raise PublishError(f"send to {topic} failed: {exc}") from None
            raise
        count[0] = 0
        self.sent += n

        def delivered(f: asyncio.Future[Any]) -> None:
            self._release(n)
            if not f.cancelled() and f.exception() is None:
                self.acked += n

        fut.add_done_callback(delivered)
        return fut, n

    async def _acquire(self) -> None:
        """A buffer slot, waiting at most ``max_block_ms`` when the buffer is full."""
        try:
            if self._slots.locked():  # buffer full: wait, bounded (no task on the fast path)
                await asyncio.wait_for(self._slots.acquire(), self._max_block)
            else:
                await self._slots.acquire()
        except TimeoutError:
            raise PublishTimeout(f"{self.buffered} of {self.max_buffered} records still"
                                 f" unacknowledged after {self._max_block}s: Kafka is not"
                                 " acknowledging; is the broker up?") from None

    async def send_raw(self, topic: str, value: bytes | None, key: bytes | None = None,
                       headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Send already-framed bytes (used by replays and dead-letter tools)."""
        await self._acquire()
        self.buffered += 1
        try:
            fut = await self._producer.send(topic, value, key=key, headers=headers,
                                            partition=self._partition(topic, key))
        except BaseException as exc:
            # Whatever ends the send (a Kafka error, a bad argument, cancellation), no
            # delivery callback will free the slot: free it here, or the buffer shrinks.
            self._release()
            if isinstance(exc, KafkaError):
                raise PublishError(f"send to {topic} failed: {exc}") from None
            raise
        self.sent += 1
        fut.add_done_callback(self._delivered)
        return fut

    def _release(self, n: int = 1) -> None:
        self.buffered -= n
        for _ in range(n):
            self._slots.release()

    def _partition(self, topic: str, key: bytes | None) -> int | None:
        """Kafka's murmur2 partition of ``key``, memoised: agents reuse a few thousand keys
        and the pure-Python hash costs ~9 us a record. None lets aiokafka decide."""
        if key is None:
            return None
        parts = self._producer.client.cluster.partitions_for_topic(topic)
        if not parts:
            return None  # metadata not loaded yet
        cached = self._partitions.get((topic, key))
        if cached is not None and cached[0] == len(parts):
            return cached[1]
        if len(self._partitions) >= 100_000:
            self._partitions.clear()
        partition = sorted(parts)[(murmur2(key) & 0x7FFFFFFF) % len(parts)]
        self._partitions[(topic, key)] = (len(parts), partition)
        return partition

    def _delivered(self, fut: asyncio.Future[Any]) -> None:
        self._release()
        if fut.cancelled():
            self._failures.append(PublishError("delivery cancelled"))
        elif fut.exception() is not None:
            self._failures.append(fut.exception())  # type: ignore[arg-type]
        else:
            self.acked += 1

    async def flush(self) -> None:
        """Wait until every buffered record is acknowledged; raise if any failed."""
        await self._producer.flush()
        if self._failures:
            first, count = self._failures[0], len(self._failures)
            self._failures.clear()
            raise PublishError(f"{count} record(s) were not acknowledged; first: {first}")

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class SyncPublisher:
    """A blocking facade over :class:`Publisher` for agents without asyncio.

    Example::

        with SyncPublisher() as pub:
            pub.publish("experience_event", event)
    """

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="sinkfleet-publisher")
        self._thread.start()
        self._pub: Publisher = self._run(self._make(settings, kwargs))
        self._run(self._pub.start())

    async def _make(self, settings: Settings | None, kwargs: dict[str, Any]) -> Publisher:
        return Publisher(settings, **kwargs)  # the semaphore must be built on our loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def publish(self, family: str, record: dict[str, Any], *, key: bytes | None = None) -> None:
        """Validate and buffer ``record``; returns before Kafka acknowledges it."""
        self._run(self._pub.publish(family, record, key=key))

    def publish_many(self, family: str, records: Iterable[dict[str, Any]]) -> int:
        return self._run(self._pub.publish_many(family, records))

    def delete(self, family: str, *key_parts: Any) -> None:
        """Buffer a tombstone for the id ``key_parts`` (see :meth:`Publisher.delete`)."""
        self._run(self._pub.delete(family, *key_parts))

    def flush(self) -> None:
        self._run(self._pub.flush())

    def close(self) -> None:
        try:
            self._run(self._pub.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
