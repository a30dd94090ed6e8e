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
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.cache import CacheWriter
from sinkfleet.catalogue import Catalogue
from sinkfleet.catalogue.models import WorkerSpec
from sinkfleet.config import Settings
from sinkfleet.errors import DecodeError, SinkfleetError, ValidationError
from sinkfleet.http import Health, Phase, route, serve
from sinkfleet.http_server import Guard, HttpLimits
from sinkfleet.kafka.bounds import OversizeBatch
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.sink.postgres.audit_writer import AuditWriter
from sinkfleet.sink.postgres.merge_writer import MergeWriter
from sinkfleet.sink.postgres.offsets import load_offsets
from sinkfleet.sink.postgres.state_writer import StateWriter
from sinkfleet.sink.postgres.writer import AppendWriter, SinkWriter
from sinkfleet.worker.batching import Batch, BatchPolicy
from sinkfleet.worker.deadletter import oversize_dead_letter
from sinkfleet.worker.dlq import DeadLetterQueue
from sinkfleet.worker.heartbeat import heartbeat
from sinkfleet.worker.metrics import WorkerMetrics
from sinkfleet.worker.rows import RowBuilder
from sinkfleet.worker.schemas import WriterSchemas
from sinkfleet.worker.storage import Storage
from sinkfleet.worker.store import Fenced, KafkaMirror, Stored, StoreStep, dead_letter

log = logging.getLogger("sinkfleet.worker")
WRITERS: dict[str, type[AppendWriter | StateWriter | AuditWriter | MergeWriter]] = {
    "append": AppendWriter, "state": StateWriter, "audit": AuditWriter,
    "merge": MergeWriter}  # by sink mode


@dataclass
class Route:
    """Where one topic's records go: its codec and (sink name, row builder) pairs."""

    codec: Codec
    dlq: str
    sinks: list[tuple[str, RowBuilder]] = field(default_factory=list)
    deletes_on_tombstone: bool = False  # every sink is a state sink: a null value deletes


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


class WorkerFailed(SinkfleetError):
    """A failure inside the worker that retrying will not fix (a missing grant, say):
    the worker stops and says where and why."""


class _Rebalance(ConsumerRebalanceListener):
    """aiokafka logs and swallows what a listener raises; these hand every failure to
    the loop instead, which raises it (as Kafka Connect's WorkerSinkTask does)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.guard("revoking partitions", self.worker.on_revoked())

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.guard("assigning partitions", self.worker.on_assigned(assigned))


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
            route.deletes_on_tombstone = all(catalogue.sinks[name].spec.mode == "state"
                                             for name, _ in route.sinks)
        self.writer_schemas = WriterSchemas(  # registered versions, looked up when unknown
            settings, store, {catalogue.sinks[n].topic.schema_ for n in spec.sinks})
        self.batch = Batch()
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(spec.group, registry)
        self.health = Health()
        self.metrics.watch(self.health)
        cached = [catalogue.sinks[name] for name in spec.sinks
                  if catalogue.sinks[name].spec.cache is not None]
        # Redis is written after each commit, in the background: never instead of it.
        self.cache = (CacheWriter(settings, cached, group=spec.group,
                                  registry=self.metrics.registry) if cached else None)
        if self.cache is not None:
            cache = self.cache
            self.health.probes["cache"] = lambda: cache.degraded
        self.storage = Storage(settings, self.writers.values(), self.health, self.metrics,
                               spec.group)
        self.dead_letters = DeadLetterQueue(
            settings, {t: r.dlq for t, r in self.routes.items()}, self.worker_id,
            self.health, self.metrics, spec.group)
        self.mirror = KafkaMirror()
        self.store = StoreStep(spec.group, self.writers, self.storage, self.dead_letters,
                               self.mirror)
        self.metrics_port = metrics_port
        self.metrics_bound: int | None = None
        self.assignment: set[TopicPartition] = set()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._inflight: asyncio.Task[None] | None = None
        self._paused = False
        self._seeking: set[TopicPartition] = set()  # paused until sought to PG offsets
        self.stop_timeout = 30.0
        # A revoke waits this long for the batches held to be stored; then they are
        # dropped (the next owner re-reads them from PostgreSQL's offsets) rather than
        # holding up the whole group's rebalance while PostgreSQL is down.
        self.revoke_timeout = max(5.0, settings.kafka_session_timeout_ms / 1000)
        self.undrained = False  # stopped before everything consumed was stored
        self._consumer: AIOKafkaConsumer | None = None
        self.hold_reason: str | None = None  # set by the heartbeat: leave the group
        self._failure: WorkerFailed | None = None  # raised by the loop at its next turn
        # after a fenced batch: partition -> first offset dropped; the loop seeks back
        self._refenced: dict[TopicPartition, int] = {}

    def stop(self) -> None:
        """Ask the loop to drain, store what it holds, commit, and leave the group."""
        self.health.phase = Phase.STOPPING
        self._stop.set()

    # --- failures anywhere reach the loop -----------------------------------------------
    async def guard(self, where: str, work: Awaitable[None]) -> None:
        """Run ``work`` (a rebalance callback); keep what it raises for the loop."""
        try:
            await work
        except Exception as exc:
            self.fail(where, exc)

    def fail(self, where: str, exc: BaseException) -> None:
        """Record a failure the worker cannot retry its way out of; the loop raises it."""
        if self._failure is not None:
            return
        hint = ""
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            hint = (f"; the PostgreSQL role {self.settings.pg_user} lacks a grant: run"
                    " `sinkfleet db migrate` (it grants what workers need) or check"
                    " SINKFLEET_PG_USER")
        self._failure = WorkerFailed(f"group {self.spec.group}: {where} failed:"
                                     f" {type(exc).__name__}: {exc}{hint}")
        self._failure.__cause__ = exc
        self.health.phase, self.health.detail = Phase.FAILED, str(self._failure)
        self.metrics.failures.labels(self.spec.group, where).inc()
        log.error("%s", self._failure)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # --- rebalance --------------------------------------------------------------------
    async def on_revoked(self) -> None:
        """Store what we hold before another worker takes these partitions over, and
        the cache writes behind it: a late write of ours must not land after the new
        owner's (a tombstone's delete, say). Bounded: see ``revoke_timeout``."""
        try:
            await asyncio.wait_for(self.checkpoint(), self.revoke_timeout)
        except TimeoutError:
            self._abandon(f"could not store within {self.revoke_timeout:.0f}s of a revoke")
        if self.cache is not None:
            await self.cache.drain(timeout=5.0)

    def _abandon(self, why: str) -> None:
        """Forget every batch held (PostgreSQL's offsets are the truth): all partitions
        are revoked together and sought to those offsets when assigned again."""
        held = self.batch.records
        self.batch = Batch()
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None
        self.storage.drop()
        log.warning("%s: dropped %d+ consumed record(s) not yet stored; they are read again"
                    " from the offsets in PostgreSQL", why, held)

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
            offsets = await self.storage.run(
                "loading offsets", lambda conn: load_offsets(conn, self.spec.group, assigned))
        finally:
            self._seeking = set()
        # another worker may have moved them since
        self.mirror.stored = {tp: o for tp, o in self.mirror.stored.items() if tp in offsets}
        self.mirror.stored.update(offsets)
        for tp, offset in offsets.items():
            self._consumer.seek(tp, offset)
        if not self._paused:
            self._consumer.resume(*assigned)
        await self._mark_unconsumed(assigned - offsets.keys())
        if self.health.phase is Phase.JOINING:
            self.health.phase = Phase.RUNNING
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
                self.mirror.stored.setdefault(tp, start)
        except KafkaError as exc:
            log.info("could not read log starts (%s); lag tools may miss idle partitions", exc)

    # --- the loop ---------------------------------------------------------------------
    async def run(self) -> WorkerStats:
        server = None
        if self.metrics_port is not None:
            registry, health = self.metrics.registry, self.health
            server = await serve(self.settings.metrics_host, self.metrics_port,
                                 lambda path, _: route(path, registry, health), self._bound,
                                 limits=HttpLimits.from_settings(self.settings),
                                 guard=Guard.of(self.settings.http_allowed_hosts,
                                                self.settings.metrics_host))
        beat = asyncio.create_task(heartbeat(self), name="sinkfleet-heartbeat")
        beat.add_done_callback(self._background_ended)
        if self.cache is not None:
            await self.cache.start()
        try:
            return await self._run()
        finally:
            beat.remove_done_callback(self._background_ended)
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            if self.cache is not None:
                await self.cache.close()
            if server is not None:
                server.close()

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        """A background task must run until the worker stops: its end is a failure."""
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        self.fail(task.get_name(), exc or RuntimeError("ended unexpectedly"))

    def _bound(self, port: int) -> None:
        self.metrics_bound = port
        log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)",
                 self.settings.metrics_host, port)

    async def _run(self) -> WorkerStats:
        await self.storage.run("connecting", self.storage.ping)
        await self.storage.run("loading writer schemas", self.writer_schemas.load)
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
        self._consumer = self.mirror.consumer = consumer
        self.writer_schemas.attach(consumer, self.health)  # holds back, during registry outages
        consumer.subscribe(list(self.routes), listener=_Rebalance(self))
        log.info("joining group %s as %s", self.spec.group,
                 f"static member {self.instance_id}" if self.instance_id else "a dynamic member")
        if self.health.phase is Phase.STARTING:
            self.health.phase = Phase.JOINING
        await consumer.start()
        try:
            while not self._stop.is_set():
                self._raise_failure()
                if self._refenced:
                    await self._read_again(consumer)
                    continue
                if self.hold_reason is not None:
                    await self._leave_until_released(consumer)
                    continue
                batch = self.batch
                full = self.policy.should_flush(batch.records, batch.nbytes, batch.age())
                if full and self._inflight is not None and not self._inflight.done():
                    # Storage (or the dead-letter topic) is behind or down: stop fetching
                    # but keep polling, so the group keeps us and nothing piles up.
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
                        self._add_to_batch(data)
            self._raise_failure()
            await self._final_checkpoint()
        finally:
            if self._inflight is not None:  # only when failing: PostgreSQL keeps the truth
                self._inflight.cancel()
            try:
                await asyncio.wait_for(consumer.stop(), 15)
            except TimeoutError:
                log.warning("closing the Kafka consumer timed out")
            await self.dead_letters.close()
            self.storage.drop()
            await self.writer_schemas.close()
        return self.stats

    async def _leave_until_released(self, consumer: AIOKafkaConsumer) -> None:
        """An operator holds the group (`replay apply --stop-fleet`): store everything
        consumed, leave the group, wait for the release, rejoin. On rejoining, the
        partitions seek to their PostgreSQL offsets, which the replay has moved."""
        log.info("group %s is held (%s): storing what was consumed and leaving the group",
                 self.spec.group, self.hold_reason)
        await self.checkpoint()
        await self.mirror.commit({})
        consumer.unsubscribe()
        self.assignment = set()
        self.metrics.on_assigned(self.assignment)
        self._resume(consumer)
        self.health.phase, self.health.detail = Phase.HELD, str(self.hold_reason)
        while self.hold_reason is not None and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.2)
        if not self._stop.is_set():
            consumer.subscribe(list(self.routes), listener=_Rebalance(self))
            self.health.phase = Phase.JOINING
            log.info("hold released: rejoining group %s", self.spec.group)

    async def _read_again(self, consumer: AIOKafkaConsumer) -> None:
        """After a fenced batch: drop what is held (it continues the refused batch) and
        seek to PostgreSQL's offsets, so that nothing after the refused batch is skipped.
        A zombie is then revoked when it reaches the group again; an owner goes on."""
        async with self._lock:
            await self._drain_locked()  # one in flight continues the refused one too
            held, self.batch = self.batch, Batch()
            firsts = dict(held.first)
            firsts.update(self._refenced)  # earlier than what is held
            self._refenced = {}
            tps = {tp for tp in firsts if tp in consumer.assignment()}
            offsets = await self.storage.run(
                "loading offsets", lambda conn: load_offsets(conn, self.spec.group, tps))
            for tp in tps:
                consumer.seek(tp, offsets.get(tp, firsts[tp]))
        log.info("reading %d partition(s) again from PostgreSQL's offsets (%d held record(s)"
                 " dropped)", len(tps), held.records)

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
        await self.mirror.commit({})  # repair any commit refused along the way

    def _add_to_batch(self, data: dict[TopicPartition, list[Any]]) -> None:
        """Decode fetched records into the batch's rows (or its dead letters)."""
        batch = self.batch
        if not batch:
            batch.started = time.monotonic()
        for tp, messages in data.items():
            route = self.routes[tp.topic]
            if len(route.sinks) == 1:
                self._add_for_one_sink(batch, route, messages)
            else:
                self._add_for_many_sinks(batch, route, messages)
            batch.records += len(messages)
            self.metrics.consumed.labels(self.spec.group, tp.topic).inc(len(messages))
            batch.offsets[tp] = messages[-1].offset + 1
            head = messages[0]
            batch.first.setdefault(tp, head.first_offset if isinstance(head, OversizeBatch)
                                   else head.offset)
            batch.last_timestamp[tp] = messages[-1].timestamp

    def _add_for_one_sink(self, batch: Batch, route: Route, messages: list[Any]) -> None:
        """``_add_for_many_sinks`` for a topic feeding one sink (the common case): the same
        rows, sources, dead letters and order, with less work per record."""
        name, build = route.sinks[0]
        rows = batch.rows.get(name) or []
        sources = batch.sources.get(name) or []
        add_row, add_source, dead = rows.append, sources.append, batch.dead.append
        decode, deletes = route.codec.decode, route.deletes_on_tombstone
        nbytes = 0
        for msg in messages:
            if isinstance(msg, OversizeBatch):  # a whole batch, not inflated
                dead(oversize_dead_letter(msg))
                continue
            value = msg.value
            try:
                if value is None and deletes:
                    row: tuple[Any, ...] = build.tombstone(msg.key)
                else:
                    row = build(decode(value))
            except (DecodeError, ValidationError) as exc:
                stage = "decode" if isinstance(exc, DecodeError) else "validate"
                dead(dead_letter(msg, stage, exc))
            else:
                add_row(row)
                add_source(msg)
            if value:
                nbytes += len(value)
        batch.nbytes += nbytes
        if rows:  # as _add_for_many_sinks: a sink gets an entry with its first row
            batch.rows[name], batch.sources[name] = rows, sources

    def _add_for_many_sinks(self, batch: Batch, route: Route, messages: list[Any]) -> None:
        rows, sources = batch.rows, batch.sources
        decode = route.codec.decode
        for msg in messages:
            if isinstance(msg, OversizeBatch):  # a whole batch, not inflated
                batch.dead.append(oversize_dead_letter(msg))
                continue
            try:
                built: list[tuple[str, tuple[Any, ...]]]
                if msg.value is None and route.deletes_on_tombstone:
                    built = [(name, build.tombstone(msg.key)) for name, build in route.sinks]
                else:
                    record = decode(msg.value)
                    built = [(name, build(record)) for name, build in route.sinks]
            except (DecodeError, ValidationError) as exc:
                stage = "decode" if isinstance(exc, DecodeError) else "validate"
                batch.dead.append(dead_letter(msg, stage, exc))
            else:
                for name, row in built:
                    rows.setdefault(name, []).append(row)
                    sources.setdefault(name, []).append(msg)
            batch.nbytes += len(msg.value) if msg.value else 0

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
        try:
            stored = await self.store.store(batch)
        except Fenced as exc:
            self.metrics.fenced.labels(self.spec.group).inc()
            for tp, first in batch.first.items():
                self._refenced[tp] = min(first, self._refenced.get(tp, first))
            log.warning("fenced: %s; the batch held %s", exc, batch.ranges())
            return
        except Exception as exc:  # retriable trouble is retried inside: this is final
            self.fail("storing a batch", exc)
            assert self._failure is not None
            raise self._failure from exc
        self._account(batch, stored)
        if self.cache is not None:
            for name, changes in stored.changes.items():
                self.cache.submit(name, changes)

    def _account(self, batch: Batch, stored: Stored) -> None:
        st, m, group = self.stats, self.metrics, self.spec.group
        for name, (inserted, written) in stored.counts.items():
            st.stored += inserted
            st.duplicates_skipped += written - inserted
            m.stored.labels(group, name).inc(inserted)
            m.duplicates.labels(group, name).inc(written - inserted)
        for name, conflicts in stored.conflicts.items():
            m.state_conflicts.labels(group, name).inc(conflicts)
        for dl in batch.dead + stored.refused:
            m.dead.labels(group, dl.topic, dl.stage).inc()
        st.consumed += batch.records
        st.dead_lettered += len(batch.dead) + len(stored.refused)
        st.batches += 1
        st.flush_seconds += stored.seconds
        m.batch_records.labels(group).observe(batch.records)
        m.flush_seconds.labels(group).observe(stored.seconds)
        m.commit_seconds.labels(group).observe(stored.commit_seconds)
        m.on_stored(batch.offsets, batch.last_timestamp)
