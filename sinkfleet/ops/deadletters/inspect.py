"""Dead letters: read them (`sinkfleet dlq inspect`) and re-drive them (`dlq replay`).

A dead letter is the original key and value (or an excerpt) plus the worker's
``sinkfleet.*`` headers, written and read by ``sinkfleet.worker.deadletter``.
Inspection reads with a group-less consumer and never commits. A replay re-publishes
matching dead letters to their original topic and keeps its place in the consumer group
``sinkfleet.dlq-replay.<dlq topic>`` (see ``ReplayCursor``), committed only after
Kafka acknowledged the re-published records. See docs/dead-letters.md.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, SinkfleetError
from sinkfleet.kafka.bounds import OversizeBatch
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs
from sinkfleet.worker.deadletter import (
    DLQ_LAST_OFFSET,
    ERROR_CLASS,
    ERROR_MESSAGE,
    STAGE,
    STAGES,
    DeadLetterInfo,
    parse_dead_letter,
    when,
)

STALL_SECONDS = 30.0


@dataclass(frozen=True)
class DeadRecord:
    """One record of a dead-letter topic, its headers read by ``parse_dead_letter`` (so
    a forged header is shown as sent, or as unknown, never trusted)."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    info: DeadLetterInfo

    @classmethod
    def of(cls, msg: Any) -> DeadRecord:
        if isinstance(msg, OversizeBatch):  # a batch of the DLQ itself too big to inflate
            headers = [(STAGE, b"decompress"), (ERROR_CLASS, b"BatchTooLarge"),
                       (ERROR_MESSAGE, str(msg.error).encode()),
                       (DLQ_LAST_OFFSET, str(msg.offset).encode())]
            return cls(msg.topic, msg.partition, msg.first_offset, msg.timestamp, None,
                       msg.compressed, parse_dead_letter(headers))
        return cls(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key, msg.value,
                   parse_dead_letter(msg.headers))

    @property
    def headers(self) -> dict[str, str]:
        return self.info.headers

    @property
    def topic(self) -> str | None:
        return self.info.topic

    @property
    def stage(self) -> str:
        return self.info.stage

    @property
    def error_class(self) -> str:
        return self.info.error_class

    @property
    def dead_at(self) -> datetime | None:
        """When it was dead-lettered (``sinkfleet.dead_at_ms``), or None if unreadable."""
        return self.info.dead_at

    @property
    def where(self) -> str:
        """``topic[partition]@offset`` of the original record."""
        return self.info.where

    @property
    def is_batch(self) -> bool:
        return self.info.is_batch

    @property
    def coordinates(self) -> str:
        """``dlq[partition]@offset``: where this dead letter is."""
        return f"{self.dlq_topic}[{self.dlq_partition}]@{self.dlq_offset}"

    @property
    def replayed_from(self) -> str:
        return f"{self.dlq_topic}:{self.dlq_partition}:{self.dlq_offset}"

    def as_dict(self) -> dict[str, Any]:
        import base64

        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode()

        info, dead_at = self.info, self.dead_at
        return {
            "dlq_topic": self.dlq_topic, "dlq_partition": self.dlq_partition,
            "dlq_offset": self.dlq_offset, "dlq_timestamp_ms": self.timestamp_ms,
            "topic": info.topic, "partition": info.partition, "offset": info.offset,
            "last_offset": info.last_offset, "stage": info.stage, "error_class": info.error_class,
            "error_message": info.error_message, "worker": info.worker,
            "dead_at": None if dead_at is None else dead_at.isoformat(),
            "key": b64(self.key), "value": b64(self.value),
            "value_size": len(self.value or b""),
            "truncated": {"key": info.key_cut and info.key_cut.as_dict(),
                          "value": info.value_cut and info.value_cut.as_dict()},
            "headers": info.headers,
        }


@dataclass(frozen=True)
class Filter:
    """Which dead letters a command looks at; empty sets match everything."""

    stages: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()
    since: datetime | None = None

    @classmethod
    def make(cls, stages: list[str] | None = None, error_classes: list[str] | None = None,
             since: str | None = None) -> Filter:
        unknown = sorted(set(stages or ()) - set(STAGES))
        if unknown:
            raise ConfigError(f"unknown stage {unknown[0]!r}: use decompress, decode,"
                              " validate or write")
        return cls(frozenset(stages or ()), frozenset(error_classes or ()),
                   parse_since(since) if since else None)

    def matches(self, rec: DeadRecord) -> bool:
        # Without a readable dead_at_ms, Kafka's timestamp of the dead letter decides.
        when_dead = rec.dead_at or when(rec.timestamp_ms)
        return ((not self.stages or rec.stage in self.stages)
                and (not self.error_classes or rec.error_class in self.error_classes)
                and (self.since is None or (when_dead is not None
                                            and when_dead >= self.since)))


def parse_since(text: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r} is not an ISO date-time such as"
                          " 2026-11-25T10:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def dlq_topics(catalogue: Catalogue, topic: str | None = None, all_: bool = False
               ) -> list[str]:
    """The dead-letter topics to read: of ``topic`` (a source topic or its DLQ), or of
    every catalogue topic."""
    if topic and all_:
        raise ConfigError("give --topic or --all, not both")
    specs = list(catalogue.topics.values())
    if topic:
        specs = [s for s in specs if topic in (s.name, s.dlq)]
        if not specs:
            known = ", ".join(sorted(catalogue.topics)) or "none"
            raise ConfigError(f"no topic {topic!r} in topics/ (known: {known})")
    return sorted({s.dlq for s in specs})


def dlq_sources(catalogue: Catalogue) -> dict[str, frozenset[str]]:
    """Each dead-letter topic and the source topics whose dead letters it takes: the only
    topics a replay of it may send to (a forged ``sinkfleet.topic`` names another)."""
    sources: dict[str, set[str]] = {}
    for spec in catalogue.topics.values():
        sources.setdefault(spec.dlq, set()).add(spec.name)
    return {dlq: frozenset(names) for dlq, names in sources.items()}


async def start(client: Any, settings: Settings) -> None:
    """Start an aiokafka client; a failure is one line saying why and what to do."""
    try:
        await client.start()
    except KafkaError as exc:
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise SinkfleetError(await explain_kafka_error(settings, exc)) from None


async def partitions(settings: Settings, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``; an error naming the first that does not exist."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), request_timeout_ms=15_000)
    await start(admin, settings)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            raise ConfigError(f"dead-letter topic {missing[0]} does not exist in Kafka; create"
                              " it with `sinkfleet topics apply`")
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    return sorted(TopicPartition(t["topic"], p["partition"]) for t in described
                  for p in t["partitions"])


async def scan(consumer: AIOKafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]]
                ) -> AsyncIterator[dict[TopicPartition, list[DeadRecord]]]:
    """Read each assigned partition from ``start`` up to ``end`` (exclusive), in order."""
    todo = {tp: end for tp, (first, end) in ranges.items() if first < end}
    consumer.pause(*(set(ranges) - set(todo)))
    for tp in todo:
        consumer.seek(tp, ranges[tp][0])
    progress = time.monotonic()
    while todo:
        data = await consumer.getmany(*todo, timeout_ms=1000, max_records=1000)
        batch = {tp: [DeadRecord.of(m) for m in msgs if m.offset < todo[tp]]
                 for tp, msgs in data.items() if tp in todo}
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp]:
                del todo[tp]
                consumer.pause(tp)
        if any(batch.values()):
            progress = time.monotonic()
            yield batch
        elif todo and time.monotonic() - progress > STALL_SECONDS:
            raise SinkfleetError(f"reading {sorted(f'{tp.topic}[{tp.partition}]' for tp in todo)}"
                                 f" made no progress for {STALL_SECONDS:.0f}s; is Kafka healthy?")


# --- inspect ----------------------------------------------------------------------------
@dataclass
class Inspection:
    records: list[DeadRecord]  # the first ``limit`` matching, in (topic, partition, offset)
    matched: int = 0
    scanned: int = 0
    summary: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, class)

    def as_dict(self) -> dict[str, Any]:
        return {"scanned": self.scanned, "matched": self.matched, "shown": len(self.records),
                "summary": [{"stage": s, "error_class": c, "count": n}
                            for (s, c), n in sorted(self.summary.items())],
                "records": [r.as_dict() for r in self.records]}


async def inspect(settings: Settings, topics: list[str], flt: Filter, limit: int = 0
                  ) -> Inspection:
    """Read ``topics`` from their beginning (read-only: no group, no commit)."""
    tps = await partitions(settings, topics)
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, client_id="sinkfleet-dlq-inspect")
    await start(consumer, settings)
    result = Inspection([])
    try:
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        found: list[DeadRecord] = []
        async for batch in scan(consumer, {tp: (starts[tp], ends[tp]) for tp in tps}):
            for records in batch.values():
                result.scanned += len(records)
                for rec in filter(flt.matches, records):
                    result.matched += 1
                    result.summary[(rec.stage, rec.error_class)] += 1
                    found.append(rec)
            found.sort(key=lambda r: (r.dlq_topic, r.dlq_partition, r.dlq_offset))
            del found[limit or len(found):]
        result.records = found
    finally:
        await consumer.stop()
    return result
