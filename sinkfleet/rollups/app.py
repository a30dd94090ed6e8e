"""The faust app of ``sinkfleet rollups``: event-time windows in changelog-backed tables.

One agent and one table per source topic. The table is keyed by (source partition,
window size, window start, key…), so every entry is fed by one partition, in offset order,
and lives in that partition of the changelog (no repartition topic). Each entry keeps the
last source offset it absorbed: a record re-read after a crash (faust commits offsets
after the changelog, at least once) is recognised and skipped. Windows close on event
time — when the partition's newest record is ``grace`` past their end — and are then
written final and deleted from the table; open windows are written every
``flush_interval`` (docs/rollups.md).

faust's own ``.tumbling(…, expires=…)`` / ``on_window_close`` is not used: it closes
windows by wall-clock time, forgets recovered windows (they never expire) and skips
windows older than the last one closed (``last_closed_window``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import faust

from sinkfleet.avro import Codec
from sinkfleet.catalogue.models import TopicSpec
from sinkfleet.config import Settings
from sinkfleet.errors import DecodeError
from sinkfleet.kafka.client import kafka_ssl_context
from sinkfleet.rollups.families import Family, Unusable
from sinkfleet.rollups.ordering import InOrder
from sinkfleet.rollups.store import SummaryWriter
from sinkfleet.rollups.windows import (
    CLOSED,
    Entry,
    EntryKey,
    closing_horizon,
    entry_end,
    is_entry,
    plan_record,
    to_micros,
)
from sinkfleet.worker.schemas import WriterSchemas

log = logging.getLogger("sinkfleet.rollups")


@dataclass(frozen=True)
class RollupOptions:
    """``sinkfleet rollups`` knobs (see its --help)."""

    app_id: str = "sinkfleet-rollups"
    families: tuple[str, ...] = ("learning_metric", "worker_event")
    grace_seconds: float = 120.0
    flush_interval: float = 5.0
    commit_interval: float = 2.8
    web_port: int | None = None  # None: faust's web server is off
    instance_id: str | None = None  # static group membership: a restart rejoins at once
    stats_interval: float = 30.0


def broker_settings(settings: Settings) -> dict[str, Any]:
    """faust's ``broker`` and ``broker_credentials`` from sinkfleet's Kafka settings (the
    same protocols as ``kafka_client_kwargs``: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)."""
    servers = [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap.split(",") if s.strip()]
    protocol = settings.kafka_security_protocol
    credentials: faust.auth.Credentials | None = None
    if protocol == "SSL":
        credentials = faust.SSLCredentials(kafka_ssl_context(settings))
    elif protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None  # checked when settings load
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=kafka_ssl_context(settings) if protocol == "SASL_SSL" else None)
    return {"broker": servers, "broker_credentials": credentials}


@dataclass
class Stats:
    absorbed: int = 0
    duplicates: int = 0  # re-read after a restart, already in the state: skipped
    closed: int = 0  # all its windows had closed (late, or re-read): skipped
    unusable: int = 0  # undecodable or without usable fields (dead-lettered by workers)
    windows_closed: int = 0


@dataclass
class TopicRollup:
    """Roll-ups of one source topic: its agent, its table, and in-memory bookkeeping
    (which entries are open and dirty; rebuilt from the table after every recovery)."""

    app: faust.App
    topic: TopicSpec
    family: Family
    codec: Codec
    writer: SummaryWriter
    schemas: WriterSchemas  # registered writer schemas, looked up when unknown
    grace_us: int
    stats: Stats = field(default_factory=Stats)
    open: dict[int, dict[EntryKey, int]] = field(default_factory=dict)  # p -> key -> end
    dirty: set[EntryKey] = field(default_factory=set)
    horizon: dict[int, int] = field(default_factory=dict)  # p -> closed up to (µs)
    watermark: dict[int, int] = field(default_factory=dict)  # p -> newest event time

    def __post_init__(self) -> None:
        name = "rollups-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.topic.name)
        self.source = self.app.topic(self.topic.name, key_serializer="raw",
                                     value_serializer="raw", partitions=self.topic.partitions)
        self.table = self.app.Table(
            name, default=None, partitions=self.topic.partitions,  # keys and values: JSON
            help=f"{self.family.name} windows of {self.topic.name}")
        self.table.on_recover(self.recovered)
        self.order = InOrder(self.app, self.writer.settings, self.topic.name)
        self.app.agent(self.source, name=name)(self.process)

    # --- the stream --------------------------------------------------------------------
    async def process(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            msg = event.message
            if not await self.order.admit(msg):
                continue  # records before it were skipped: it comes again, in order
            value = event.value or b""
            if ((value[:2] == b"\xc3\x01" and not self.codec.store.knows(value[2:10]))
                    or value[:1] == b"\x00"):  # an unknown fingerprint, or a registry id:
                await self.schemas.prepare({msg.tp: [msg]})  # look it up (rate-limited)
            try:
                record = self.codec.decode(event.value)
            except DecodeError as exc:
                self.unusable(msg.partition, msg.offset, exc)
            else:
                self.absorb(msg.partition, msg.offset, record)
            await self.maybe_close(msg.partition)

    def unusable(self, partition: int, offset: int, exc: Exception) -> None:
        """Count and log a record that cannot be rolled up (workers dead-letter it)."""
        self.stats.unusable += 1
        log.warning("%s[%d]@%d not rolled up: %s", self.topic.name, partition, offset, exc)

    def absorb(self, partition: int, offset: int, record: dict[str, Any]) -> None:
        try:
            ts_us = to_micros(record[self.family.time_field])
            contributions = self.family.contributions(record)
        except (Unusable, KeyError, TypeError, ValueError) as exc:
            self.unusable(partition, offset, exc)
            return
        updates, verdict = plan_record(self.table.get, partition, offset, ts_us,
                                       contributions, self.closed_until(partition),
                                       self.family.grains)
        opened = self.open.setdefault(partition, {})
        for key, entry in updates:
            self.table[key] = entry  # + a changelog record in this partition
            opened[key] = entry_end(key)
            self.dirty.add(key)
        self.stats.absorbed += bool(updates)
        self.stats.duplicates += verdict.duplicate
        self.stats.closed += verdict.closed
        if ts_us > self.watermark.get(partition, -1):
            self.watermark[partition] = ts_us

    def closed_until(self, partition: int) -> int:
        if partition not in self.horizon:
            marker = self.table.get((partition, CLOSED))
            self.horizon[partition] = int(marker["h"]) if marker else -(2**62)
        return self.horizon[partition]

    async def maybe_close(self, partition: int) -> None:
        """Close the partition's windows that event time has passed by the grace period:
        write them final, then record the horizon, then delete them — in that order, so a
        crash anywhere in between only repeats an idempotent write."""
        if partition not in self.watermark:
            return
        horizon = closing_horizon(self.watermark[partition], self.grace_us)
        if horizon <= self.closed_until(partition):
            return
        opened = self.open.get(partition, {})
        due = [key for key, end in opened.items() if end <= horizon]
        async with self.writer.lock:
            rows = [(key, entry) for key in due if (entry := self.table.get(key)) is not None]
            await self.writer.write(self.topic.name, self.family, rows, final=True)
        self.table[(partition, CLOSED)] = {"h": horizon}
        self.horizon[partition] = horizon
        for key in due:
            if key in self.table:
                del self.table[key]  # a tombstone in this partition's changelog
            opened.pop(key, None)
            self.dirty.discard(key)
        self.stats.windows_closed += len(due)

    # --- recovery, flushing -------------------------------------------------------------
    def active_partitions(self) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives()
                if tp.topic == self.topic.name}

    async def recovered(self) -> None:
        """After (re)assignment: rebuild the bookkeeping from the recovered table; every
        open entry is written again (PostgreSQL may be behind or ahead of it)."""
        active = self.active_partitions()
        self.open.clear()
        self.dirty.clear()
        self.horizon.clear()
        self.watermark = {p: t for p, t in self.watermark.items() if p in active}
        await self.order.start_at_committed(active)
        for key, value in list(self.table.items()):
            if not isinstance(key, tuple) or key[0] not in active:
                continue
            if is_entry(key):
                self.open.setdefault(key[0], {})[key] = entry_end(key)
                self.dirty.add(key)
            elif key[1] == CLOSED:
                self.horizon[key[0]] = int(value["h"])
        log.info("%s: recovered %d open windows of partitions %s", self.topic.name,
                 len(self.dirty), sorted(active))

    async def flush(self) -> None:
        """Write the open windows that changed since the last flush (not final)."""
        async with self.writer.lock:
            active = self.active_partitions()
            keys, self.dirty = self.dirty, set()
            rows: list[tuple[EntryKey, Entry]] = [
                (key, entry) for key in keys
                if key[0] in active and (entry := self.table.get(key)) is not None]
            try:
                await self.writer.write(self.topic.name, self.family, rows, final=False)
            except BaseException:
                self.dirty |= keys
                raise

    def log_stats(self) -> None:
        s = self.stats
        log.info("%s: absorbed=%d duplicates=%d closed=%d unusable=%d windows_closed=%d"
                 " open=%d rows_written=%d rewinds=%d", self.topic.name, s.absorbed,
                 s.duplicates, s.closed, s.unusable, s.windows_closed,
                 sum(len(o) for o in self.open.values()), self.writer.rows_written,
                 self.order.rewinds)
