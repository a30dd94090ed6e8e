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
from aiokafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError
from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata

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
        self._linger = linger_ms / 1000
        # publish()'s own batches, per (topic, partition): the one being filled, the
        # filled ones waiting for their turn, and the task handing them over in order
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: dict[tuple[str, int], list[_Batch]] = {}
        self._submitters: dict[tuple[str, int], asyncio.Task[None]] = {}

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise PublishError(await explain_kafka_error(self.settings, exc),
                               retriable=exc.retriable) from None

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
        if key is None:
            key = default_key
        partition = self._partition(topic, key)
        if partition is None or value is None:  # keyless, or no metadata yet
            return await self.send_raw(topic, value, key)
        # The fast path: append to this partition's own open batch (aiokafka's C batch
        # builder), no per-record send() coroutine chain nor delivery callback.
        if self._slots.locked():
            await self._acquire()
        else:
            self._slots._value -= 1  # what an uncontended acquire() does, without await
        self.buffered += 1
        tp = (topic, partition)
        batch = self._open.get(tp)
        if batch is None:
            batch = self._open_batch(tp)
        fut = batch.append(key, value)
        if fut is None:  # full: queue it, open the next one
            self._close_batch(tp)
            fut = self._open_batch(tp).append(key, value)
            if fut is None:
                self._release()
                raise PublishError(f"a {family} record of {len(value)} bytes does not fit"
                                   " in an empty batch: raise max_batch_bytes")
        self.sent += 1
        return fut

    def _open_batch(self, tp: tuple[str, int]) -> _Batch:
        batch = self._open[tp] = _Batch(self._producer.create_batch())
        batch.timer = asyncio.get_running_loop().call_later(self._linger, self._lingered,
                                                            tp, batch)
        return batch

    def _lingered(self, tp: tuple[str, int], batch: _Batch) -> None:
        if self._open.get(tp) is batch:
            self._close_batch(tp)

    def _close_batch(self, tp: tuple[str, int]) -> None:
        """Queue ``tp``'s open batch for its submitter (one task per partition, so the
        partition's batches reach aiokafka in the order they were filled)."""
        batch = self._open.pop(tp)
        if batch.timer is not None:
            batch.timer.cancel()
        self._ready.setdefault(tp, []).append(batch)
        if tp not in self._submitters:
            self._submitters[tp] = asyncio.get_running_loop().create_task(self._submit_all(tp))

    async def _submit_all(self, tp: tuple[str, int]) -> None:
        try:
            queue = self._ready[tp]
            while queue:
                batch = queue.pop(0)
                batch.builder.close()
                try:
                    done = await self._producer.send_batch(batch.builder, tp[0],
                                                           partition=tp[1])
                except Exception as exc:  # each record's future carries it
                    error: BaseException = exc
                    try:
                        if isinstance(exc, KafkaTimeoutError):
                            # queued behind this partition's unacknowledged batches for
                            # longer than the request timeout: never sent; say why
                            why = await self._why_unacknowledged()
                            error = PublishTimeout(
                                f"{tp[0]}[{tp[1]}]: {len(batch.futures)} record(s) not sent:"
                                " the partition's earlier records stayed unacknowledged for"
                                " longer than the request timeout" + (f"; {why}" if why
                                                                      else ""))
                    finally:
                        self._batch_done(batch, tp, None, error)
                else:
                    done.add_done_callback(
                        lambda f, b=batch: self._batch_done(b, tp, f, None))
        finally:
            del self._submitters[tp]
            if not self._ready.get(tp):  # else cancelled midway: _drain_own restarts it
                self._ready.pop(tp, None)

    def _batch_done(self, batch: _Batch, tp: tuple[str, int], fut: asyncio.Future[Any] | None,
                    error: BaseException | None) -> None:
        n = len(batch.futures)
        self._release(n)
        if error is None and fut is not None and fut.cancelled():
            error = PublishError("delivery cancelled")
        if error is None and fut is not None:
            error = fut.exception()
        if error is not None:
            error = publish_error(f"{tp[0]}[{tp[1]}]: not acknowledged: ", error)
            for f, _ in batch.futures:
                if not f.done():
                    f.set_exception(error)
            self._failures.extend([error] * n)
            return
        assert fut is not None
        meta = fut.result()
        self.acked += n
        for i, (f, stamp) in enumerate(batch.futures):
            if not f.done():
                f.set_result(RecordMetadata(tp[0], tp[1], meta.topic_partition,
                                            meta.offset + i,
                                            stamp if meta.timestamp == -1 else meta.timestamp,
                                            meta.timestamp_type, meta.log_start_offset))

    async def _drain_own(self, tp: tuple[str, int] | None = None) -> None:
        """Hand over publish()'s open batches (of ``tp`` only, when given) and wait
        until aiokafka holds them all."""
        for key in [tp] if tp is not None else list(self._open):
            if key in self._open:
                self._close_batch(key)
        while True:
            for key, queue in list(self._ready.items()):
                if queue and key not in self._submitters and (tp is None or key == tp):
                    self._submitters[key] = asyncio.get_running_loop().create_task(
                        self._submit_all(key))
            tasks = [t for k, t in self._submitters.items() if tp is None or k == tp]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

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
            raise publish_error(f"send to {topic} failed: ", exc) from None
        await self._drain_own()  # publish()'s records buffered before these go first
        pending: list[tuple[asyncio.Future[Any], int]] = []
        open_: dict[int, tuple[Any, list[int]]] = {}  # partition -> (builder, [count])
        try:
            for _, key, value in framed:
                if self._slots.locked():
                    # the buffer is full: hand over what this call holds before waiting
                    for held in list(open_):
                        pending.append(await self._submit(topic, held, *open_.pop(held)))
                await self._acquire()
                self.buffered += 1
                known = self._partition(topic, key) if key is not None else None
                p: int = (known if known is not None
                          else self._producer._partitioner(key, partitions, partitions))
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
                               f" acknowledged; first: {failed[0][0]}",
                               retriable=all_retriable(e for e, _ in failed if e))
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
                raise publish_error(f"send to {topic} failed: ", exc) from None
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
                                 " acknowledging; " + (await self._why_unacknowledged()
                                                       or "is the broker up?")) from None

    async def _why_unacknowledged(self) -> str:
        """What fresh metadata says about the catalogue's partitions ("" if nothing): those
        without a leader or with fewer replicas in sync than they have (with acks=all, a leader
        refuses writes below the topic's min.insync.replicas, and the producer retries
        until the replicas are back: its futures just wait)."""
        answered = True
        try:
            meta = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 3)
        except (KafkaError, TimeoutError):
            # one broker down may be the one asked: the client's own last metadata then
            answered, meta = False, self._producer.client.cluster
        short = []
        for spec in self.catalogue.topics.values():
            # aiokafka keeps the ISR only in ClusterMetadata's private map
            for p, pm in sorted(meta._partitions.get(spec.name, {}).items()):
                if pm.leader < 0:
                    short.append(f"{spec.name}[{p}] has no leader")
                elif len(pm.isr) < len(pm.replicas):
                    short.append(f"{spec.name}[{p}] has {len(pm.isr)} of"
                                 f" {len(pm.replicas)} replicas in sync")
        if not short:
            # right after a broker dies its partitions still look whole (the controller
            # fences it only after its session): say what is known, not a guess
            return "" if answered else ("Kafka did not answer a metadata request within 3 s:"
                                        " a broker down or unreachable? (`sinkfleet stack"
                                        " status`)")
        more = f" (and {len(short) - 3} more)" if len(short) > 3 else ""
        return ("; ".join(short[:3]) + more + ": with acks=all a leader refuses writes while"
                " fewer replicas than the topic's min.insync.replicas are in sync"
                " (NotEnoughReplicas); records wait until the replicas are back (see"
                " `sinkfleet stack status` for under-replicated partitions)")

    async def send_raw(self, topic: str, value: bytes | None, key: bytes | None = None,
                       headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Send already-framed bytes (used by replays and dead-letter tools)."""
        partition = self._partition(topic, key)
        if partition is not None and ((topic, partition) in self._open
                                      or (topic, partition) in self._submitters):
            await self._drain_own((topic, partition))  # keep the partition's order
        await self._acquire()
        self.buffered += 1
        try:
            fut = await self._producer.send(topic, value, key=key, headers=headers,
                                            partition=partition)
        except BaseException as exc:
            # Whatever ends the send (a Kafka error, a bad argument, cancellation), no
            # delivery callback will free the slot: free it here, or the buffer shrinks.
            self._release()
            if isinstance(exc, KafkaError):
                raise publish_error(f"send to {topic} failed: ", exc) from None
            raise
        self.sent += 1
        # the caller's future carries a PublishError (retriable as Kafka's error was),
        # the same as publish()'s own batches give, never aiokafka's classes
        mine: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: self._delivered(f, mine))
        return mine

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

    def _delivered(self, fut: asyncio.Future[Any], mine: asyncio.Future[Any]) -> None:
        self._release()
        error: BaseException | None = None
        if fut.cancelled():
            error = PublishError("delivery cancelled")
        elif fut.exception() is not None:
            error = publish_error("not acknowledged: ", fut.exception())  # type: ignore[arg-type]
        else:
            self.acked += 1
        if error is not None:
            self._failures.append(error)
        if mine.done():  # the caller cancelled its future
            return
        if error is None:
            mine.set_result(fut.result())
        else:
            mine.set_exception(error)

    async def flush(self) -> None:
        """Wait until every buffered record is acknowledged; raise if any failed."""
        await self._drain_own()
        await self._producer.flush()
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishError(f"{len(failures)} record(s) were not acknowledged; first:"
                               f" {failures[0]}", retriable=all_retriable(failures))

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


def publish_error(prefix: str, exc: BaseException) -> BaseException:
    """Kafka's error as a ``PublishError`` that is retriable when Kafka's was (aiokafka
    flags each class: NotEnoughReplicas, NotLeaderForPartition, timeouts and lost
    connections are; MessageSizeTooLarge or TopicAuthorizationFailed are not). Ours pass
    through unchanged, and so does anything that is not Kafka's (a bug stays visible)."""
    if isinstance(exc, PublishError) or not isinstance(exc, KafkaError):
        return exc
    hint = ""
    if isinstance(exc, UnknownTopicOrPartitionError):
        # the usual cause is a first run: the catalogue's topics were never created
        hint = ("; the topic does not exist on this cluster: create the catalogue's"
                " topics with `sinkfleet topics apply`")
    return PublishError(f"{prefix}{exc}{hint}",  # aiokafka's str() names its class
                        retriable=bool(getattr(exc, "retriable", False)))


def all_retriable(errors: Iterable[BaseException]) -> bool:
    """An aggregate failure is retriable only if each of its failures is."""
    return all(getattr(e, "retriable", False) for e in errors)


class _Batch:
    """One of publish()'s own batches: aiokafka's builder and each record's future."""

    __slots__ = ("builder", "futures", "timer")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.futures: list[tuple[asyncio.Future[Any], int]] = []
        self.timer: asyncio.TimerHandle | None = None

    def append(self, key: bytes | None, value: bytes) -> asyncio.Future[Any] | None:
        meta = self.builder.append(timestamp=None, key=key, value=value)
        if meta is None:
            return None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append((fut, meta.timestamp))
        return fut


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
