"""The worker: consume → decode → batch → one PostgreSQL transaction → commit.

Position lives in PostgreSQL: each batch's rows and its next offsets commit in
one transaction, partitions seek to those offsets when assigned, and the same
offsets are then committed to Kafka for lag tools. When to flush and commit is
decided here and only here; sinks just write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.cache import CacheWriter
from sinkfleet.catalogue import Catalogue
from sinkfleet.catalogue.models import WorkerSpec
from sinkfleet.config import Settings
from sinkfleet.errors import DecodeError, ValidationError
from sinkfleet.http import Health, route, serve
from sinkfleet.kafka import kafka_client_kwargs
from sinkfleet.sink.postgres.audit_writer import AuditWriter
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect
from sinkfleet.sink.postgres.offsets import load_offsets, save_offsets
from sinkfleet.sink.postgres.state_writer import StateWriter
from sinkfleet.sink.postgres.writer import AppendWriter, SinkWriter
from sinkfleet.worker.batching import Batch, BatchPolicy, DeadLetter
from sinkfleet.worker.deadletter import CARRIED_HEADERS, dead_letter_headers
from sinkfleet.worker.heartbeat import heartbeat
from sinkfleet.worker.isolate import ROW_ERRORS, write_isolating
from sinkfleet.worker.metrics import WorkerMetrics
from sinkfleet.worker.rows import RowBuilder
from sinkfleet.worker.schemas import WriterSchemas

log = logging.getLogger("sinkfleet.worker")
WRITERS: dict[str, type[AppendWriter | StateWriter | AuditWriter]] = {
    "append": AppendWriter, "state": StateWriter, "audit": AuditWriter}  # by sink mode


@dataclass
class Route:
    """Where one topic's records go: its codec and (sink name, row builder) pairs."""

    codec: Codec
    dlq: str
    sinks: list[tuple[str, RowBuilder]] = field(default_factory=list)
    tombstones: bool = False  # every sink is a state sink: a null value deletes


@dataclass
class WorkerStats:
    consumed: int = 0
    stored: int = 0
    duplicates_skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    rebalances: int = 0
    flush_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Flush what we hold before another worker takes these partitions over, and
        # the cache writes behind it: a late write of ours must not land after the new
        # owner's (a tombstone's delete, say).
        await self.worker.checkpoint()
        if self.worker.cache is not None:
            await self.worker.cache.drain(timeout=5.0)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.on_assigned(assigned)


def _dead(msg: Any, stage: str, exc: BaseException) -> DeadLetter:
    carried = tuple((k, v) for k, v in (msg.headers or ()) if k in CARRIED_HEADERS)
    return DeadLetter(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value,
                      stage, exc, carried)


def format_partitions(tps: set[TopicPartition]) -> str:
    """``topic[0,2,5] other[1]``: the same notation in logs, CLI output and tests."""
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items())
                    ) or "-"


class Worker:
    """One stateless worker process of a group; start more to share the partitions."""

    def __init__(self, settings: Settings, catalogue: Catalogue, spec: WorkerSpec, *,
                 worker_id: str | None = None, metrics_port: int | None = None,
                 registry: CollectorRegistry | None = None,
                 instance_id: str | None = None) -> None:
        self.settings = settings
        self.spec = spec
        # Static group membership (KIP-345): a restart with the same id gets the same
        # partitions back at once, without a rebalance or waiting out the session.
        self.instance_id = instance_id
        self.worker_id = worker_id or f"{spec.name}-{socket.gethostname()}-{os.getpid()}"
        self.policy = BatchPolicy(spec.batch.max_records, spec.batch.max_bytes,
                                  spec.batch.max_age_ms)
        store = SchemaStore(settings.schema_registry_url)
        self.routes: dict[str, Route] = {}
        self.writers: dict[str, SinkWriter] = {}
        for sink_name in spec.sinks:
            sink = catalogue.sinks[sink_name]
            topic = sink.topic
            route = self.routes.get(topic.name)
            if route is None:
                codec = Codec(catalogue.schemas[topic.schema_], store,
                              max_message_bytes=settings.max_message_bytes,
                              max_depth=settings.avro_max_depth)
                route = Route(codec, topic.dlq)
                self.routes[topic.name] = route
            builder = RowBuilder(sink)
            route.sinks.append((sink_name, builder))
            self.writers[sink_name] = WRITERS[sink.spec.mode](sink, builder.names)
        for route in self.routes.values():
            route.tombstones = all(catalogue.sinks[name].spec.mode == "state"
                                   for name, _ in route.sinks)
        self.writer_schemas = WriterSchemas(  # registered versions, looked up when unknown
            settings, store, {catalogue.sinks[n].topic.schema_ for n in spec.sinks})
        self.batch = Batch()
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(spec.group, registry)
        cached = [catalogue.sinks[name] for name in spec.sinks
                  if catalogue.sinks[name].spec.cache is not None]
        # Redis is written after each commit, in the background: never instead of it.
        self.cache = (CacheWriter(settings, cached, group=spec.group,
                                  registry=self.metrics.registry) if cached else None)
        self.health = Health()
        self.metrics_port = metrics_port
        self.metrics_bound: int | None = None
        self.assignment: set[TopicPartition] = set()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._stored_offsets: dict[TopicPartition, int] = {}  # last stored, per partition
        self._paused = False
        self._seeking: set[TopicPartition] = set()  # paused until sought to PG offsets
        self.stop_timeout = 30.0
        self.undrained = False  # stopped before everything consumed was stored
        self._consumer: AIOKafkaConsumer | None = None
        self.hold_reason: str | None = None  # set by the heartbeat: leave the group
        self._dlq: AIOKafkaProducer | None = None

    def stop(self) -> None:
        """Ask the loop to drain, store what it holds, commit, and leave the group."""
        self.health.state = "stopping"
        self.health.ready = False
        self._stop.set()

    # --- PostgreSQL -------------------------------------------------------------------
    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(self.settings)
            for writer in self.writers.values():
                await writer.prepare(conn)
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()

    async def _with_retry(self, what: str, fn: Any) -> Any:
        """Run ``fn(conn)``, reconnecting with jittered back-off while PostgreSQL is down."""
        delay = 0.2
        while True:
            try:
                result = await fn(await self._connection())
            except RETRIABLE_STORAGE as exc:
                await self._drop_connection()
                self.health.state = f"degraded: PostgreSQL unavailable ({type(exc).__name__})"
                self.health.ready = False
                self.metrics.storage_retries.labels(self.spec.group).inc()
                log.warning("%s: PostgreSQL unavailable (%s); retrying in %.1fs", what,
                            type(exc).__name__, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
            else:
                if self.health.state.startswith("degraded"):
                    log.info("%s: PostgreSQL is back", what)
                if self.health.state != "stopping":
                    self.health.state, self.health.ready = "ok", True
                return result

    # --- rebalance --------------------------------------------------------------------
    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.stats.rebalances += 1
        self.assignment = set(assigned)
        self.metrics.on_assigned(self.assignment)
        assert self._consumer is not None
        # Nothing may be fetched from Kafka's position before we seek to PostgreSQL's
        # (loading may wait out an outage while the fetcher is already running).
        self._seeking = set(assigned)
        self._consumer.pause(*assigned)
        try:
            offsets = await self._with_retry(
                "loading offsets", lambda conn: load_offsets(conn, self.spec.group, assigned))
        finally:
            self._seeking = set()
        self._stored_offsets = dict(offsets)  # another worker may have moved them since
        for tp, offset in offsets.items():
            self._consumer.seek(tp, offset)
        if not self._paused:
            self._consumer.resume(*assigned)
        await self._mark_unconsumed(assigned - offsets.keys())
        log.info("assigned %d partition(s): %s; resuming %d from PostgreSQL offsets",
                 len(assigned), format_partitions(assigned), len(offsets))

    async def _mark_unconsumed(self, tps: set[TopicPartition]) -> None:
        """Partitions nobody has consumed yet start at their log start: say so in Kafka
        too (with the next commit), so lag tools count their backlog instead of
        reporting it as unknown."""
        assert self._consumer is not None
        try:
            fresh = [tp for tp in tps if await self._consumer.committed(tp) is None]
            starts = await self._consumer.beginning_offsets(fresh) if fresh else {}
            for tp, start in starts.items():
                # setdefault: a batch stored while we asked has the real position
                self._stored_offsets.setdefault(tp, start)
        except KafkaError as exc:
            log.info("could not read log starts (%s); lag tools may miss idle partitions", exc)

    # --- the loop ---------------------------------------------------------------------
    async def run(self) -> WorkerStats:
        server = None
        if self.metrics_port is not None:
            registry, health = self.metrics.registry, self.health
            server = await serve(self.settings.metrics_host, self.metrics_port,
                                 lambda path, _: route(path, registry, health), self._bound)
        beat = asyncio.create_task(heartbeat(self))
        if self.cache is not None:
            await self.cache.start()
        try:
            return await self._run()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            if self.cache is not None:
                await self.cache.close()
            if server is not None:
                server.close()

    def _bound(self, port: int) -> None:
        self.metrics_bound = port
        log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)",
                 self.settings.metrics_host, port)

    async def _run(self) -> WorkerStats:
        await self._with_retry("connecting", lambda conn: asyncio.sleep(0))
        await self._with_retry("loading writer schemas", self.writer_schemas.load)
        consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(self.settings),
            group_id=self.spec.group,
            client_id=self.worker_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=self.spec.fetch_max_bytes,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.kafka_session_timeout_ms // 6),
            group_instance_id=self.instance_id,
        )
        self._consumer = consumer
        self.writer_schemas.attach(consumer, self.health)  # holds back, during registry outages
        self._dlq = AIOKafkaProducer(**kafka_client_kwargs(self.settings),
                                     acks="all", enable_idempotence=True)
        consumer.subscribe(list(self.routes), listener=_Rebalance(self))
        log.info("joining group %s as %s", self.spec.group,
                 f"static member {self.instance_id}" if self.instance_id else "a dynamic member")
        await consumer.start()
        await self._dlq.start()
        try:
            while not self._stop.is_set():
                if self.hold_reason is not None:
                    await self._held(consumer)
                    continue
                batch = self.batch
                full = self.policy.should_flush(batch.records, batch.nbytes, batch.age())
                if full and self._inflight is not None and not self._inflight.done():
                    # Storage is behind (or down): stop fetching but keep polling, so
                    # the group keeps us and nothing piles up in memory.
                    self._pause(consumer)
                    await asyncio.wait({self._inflight}, timeout=0.5)
                    await consumer.getmany(timeout_ms=0)
                    continue
                self._resume(consumer)
                if full:
                    await self._hand_off()
                    continue
                wait = min(self.policy.wait_ms(batch.records, batch.age()), 500)
                room = max(1, self.policy.max_records - batch.records)
                data = await consumer.getmany(timeout_ms=wait, max_records=room)
                if data:
                    # Unknown writer schemas are looked up before decoding (keeps offset
                    # order); under the lock, a rebalance's checkpoint sees this chunk.
                    async with self._lock:
                        await self.writer_schemas.prepare(data)
                        self._absorb(data)
            await self._final_checkpoint()
        finally:
            if self._inflight is not None:  # only when failing: PostgreSQL keeps the truth
                self._inflight.cancel()
            for what, closing in (("consumer", consumer.stop()), ("producer", self._dlq.stop())):
                try:
                    await asyncio.wait_for(closing, 15)
                except TimeoutError:
                    log.warning("closing the Kafka %s timed out", what)
            await self._drop_connection()
            await self.writer_schemas.close()
        return self.stats

    async def _held(self, consumer: AIOKafkaConsumer) -> None:
        """An operator holds the group (`replay apply --stop-fleet`): store everything
        consumed, leave the group, wait for the release, rejoin. On rejoining, the
        partitions seek to their PostgreSQL offsets, which the replay has moved."""
        log.info("group %s is held (%s): storing what was consumed and leaving the group",
                 self.spec.group, self.hold_reason)
        await self.checkpoint()
        await self._commit_kafka({})
        consumer.unsubscribe()
        self.assignment = set()
        self.metrics.on_assigned(self.assignment)
        self._resume(consumer)
        self.health.state, self.health.ready = f"held: {self.hold_reason}", False
        while self.hold_reason is not None and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.2)
        if not self._stop.is_set():
            consumer.subscribe(list(self.routes), listener=_Rebalance(self))
            self.health.state, self.health.ready = "ok", True
            log.info("hold released: rejoining group %s", self.spec.group)

    def _pause(self, consumer: AIOKafkaConsumer) -> None:
        if not self._paused:
            self._paused = True
            consumer.pause(*consumer.assignment())
            self.metrics.paused.labels(self.spec.group).set(len(consumer.assignment()))
            log.debug("paused %d partition(s) until the batch in flight is stored",
                      len(consumer.assignment()))

    def _resume(self, consumer: AIOKafkaConsumer) -> None:
        if self._paused:
            self._paused = False
            consumer.resume(*(consumer.paused() - self._seeking))
            self.metrics.paused.labels(self.spec.group).set(0)
            log.debug("resumed fetching")

    async def _final_checkpoint(self) -> None:
        """Drain on stop, but not forever: with PostgreSQL down, give up after
        ``stop_timeout`` — nothing is lost, the records are re-read next time."""
        try:
            await asyncio.wait_for(self.checkpoint(), self.stop_timeout)
        except TimeoutError:
            self.undrained = True
            log.warning("stopping without storing the last batch (storage unavailable for"
                        " %.0fs); its records will be consumed again", self.stop_timeout)
            return
        await self._commit_kafka({})  # repair any commit refused along the way

    def _absorb(self, data: dict[TopicPartition, list[Any]]) -> None:
        batch = self.batch
        if not batch:
            batch.started = time.monotonic()
        rows, sources = batch.rows, batch.sources
        for tp, messages in data.items():
            route = self.routes[tp.topic]
            decode = route.codec.decode
            for msg in messages:
                try:
                    built: list[tuple[str, tuple[Any, ...]]]
                    if msg.value is None and route.tombstones:
                        built = [(name, build.tombstone(msg.key)) for name, build in route.sinks]
                    else:
                        record = decode(msg.value)
                        built = [(name, build(record)) for name, build in route.sinks]
                except (DecodeError, ValidationError) as exc:
                    stage = "decode" if isinstance(exc, DecodeError) else "validate"
                    batch.dead.append(_dead(msg, stage, exc))
                else:
                    for name, row in built:
                        rows.setdefault(name, []).append(row)
                        sources.setdefault(name, []).append(msg)
                batch.nbytes += len(msg.value) if msg.value else 0
            batch.records += len(messages)
            self.metrics.consumed.labels(self.spec.group, tp.topic).inc(len(messages))
            batch.offsets[tp] = messages[-1].offset + 1
            batch.last_timestamp[tp] = messages[-1].timestamp

    async def _send_dead(self, dead: list[DeadLetter]) -> None:
        assert self._dlq is not None
        futures = []
        for dl in dead:
            futures.append(await self._dlq.send(
                self.routes[dl.topic].dlq, dl.value, key=dl.key,
                headers=dead_letter_headers(dl, self.worker_id)))
            log.warning("dead letter %s[%d]@%d (%s): %s", dl.topic, dl.partition, dl.offset,
                        dl.stage, dl.error)
        await asyncio.gather(*futures)

    async def checkpoint(self) -> None:
        """Store everything consumed so far, including the batch in flight."""
        await self._hand_off()
        async with self._lock:
            await self._drain_locked()

    async def _hand_off(self) -> None:
        """Start storing the pending batch in the background while the next one fills.

        At most one batch is in flight: this waits for the previous one first, so
        batches (and their offsets) reach PostgreSQL in order.
        """
        async with self._lock:
            await self._drain_locked()
            if not self.batch:
                return
            batch, self.batch = self.batch, Batch()
            self._inflight = asyncio.create_task(self._store(batch))

    async def _drain_locked(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            await task  # re-raises a failure that is not retriable

    async def _store(self, batch: Batch) -> None:
        """Dead letters first, then rows and offsets in one transaction, then Kafka."""
        started = time.monotonic()
        if batch.dead:
            await self._send_dead(batch.dead)

        isolate = False

        async def store(conn: asyncpg.Connection
                        ) -> tuple[dict[str, tuple[int, int]], list[DeadLetter]]:
            counts: dict[str, tuple[int, int]] = {}  # sink -> (inserted, written)
            refused: list[DeadLetter] = []
            for writer in self.writers.values():
                writer.changes = []  # a retried transaction starts over
            async with conn.transaction():
                for name, rows in batch.rows.items():
                    write, sources = self.writers[name].write, batch.sources[name]
                    if isolate:
                        n, bad = await write_isolating(conn, write, rows, sources)
                        refused += [_dead(msg, "write", exc) for msg, exc in bad]
                        counts[name] = (n, len(rows) - len(bad))
                    else:
                        counts[name] = (await write(conn, rows, sources), len(rows))
                await save_offsets(conn, self.spec.group, batch.offsets)
                if refused:  # acknowledged by Kafka before the offsets move past them
                    await self._send_dead(refused)
            return counts, refused

        try:
            counts, refused = await self._with_retry("storing batch", store)
        except ROW_ERRORS as exc:
            # Fast path refused: store again, isolating the records PostgreSQL refuses.
            log.warning("PostgreSQL refused a batch (%s); isolating the bad records", exc)
            isolate = True
            counts, refused = await self._with_retry("storing batch", store)
        self._account(batch, counts, refused, time.monotonic() - started)
        if self.cache is not None:
            for name, writer in self.writers.items():
                if writer.changes:
                    self.cache.submit(name, writer.changes)
                    writer.changes = []
        committed = time.monotonic()
        await self._commit_kafka(batch.offsets)
        self.metrics.commit_seconds.labels(self.spec.group).observe(time.monotonic() - committed)

    def _account(self, batch: Batch, counts: dict[str, tuple[int, int]],
                 refused: list[DeadLetter], seconds: float) -> None:
        st, m, group = self.stats, self.metrics, self.spec.group
        for name, (inserted, written) in counts.items():
            st.stored += inserted
            st.duplicates_skipped += written - inserted
            m.stored.labels(group, name).inc(inserted)
            m.duplicates.labels(group, name).inc(written - inserted)
        for dl in batch.dead + refused:
            m.dead.labels(group, dl.topic, dl.stage).inc()
        st.consumed += batch.records
        st.dead_lettered += len(batch.dead) + len(refused)
        st.batches += 1
        st.flush_seconds += seconds
        m.batch_records.labels(group).observe(batch.records)
        m.flush_seconds.labels(group).observe(seconds)
        m.on_stored(batch.offsets, batch.last_timestamp)

    async def _commit_kafka(self, offsets: dict[TopicPartition, int]) -> None:
        """Mirror the stored offsets to Kafka, for lag tools.

        PostgreSQL already holds them, so a commit refused during a rebalance loses
        nothing; every later commit carries all owned partitions' stored offsets, so a
        refused one is repaired by the next (and by the one at shutdown)."""
        assert self._consumer is not None
        self._stored_offsets.update(offsets)
        assigned = self._consumer.assignment()
        owned = {tp: off for tp, off in self._stored_offsets.items() if tp in assigned}
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except (KafkaError, AssertionError) as exc:
            log.info("Kafka commit skipped (%s); PostgreSQL has the offsets", exc)
