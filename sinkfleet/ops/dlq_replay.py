"""`sinkfleet dlq replay`: re-publish dead letters to their original topics, once.

Each matching dead letter's original key and value go back to the topic named by its
``sinkfleet.topic`` header, with ``sinkfleet.replayed_from=<dlq>:<partition>:<offset>``
(idempotent producer, acks=all). Progress is committed to the consumer group
``sinkfleet.dlq-replay.<dlq topic>`` only after Kafka acknowledged the re-published
records (``ReplayCursor`` says what), so running the replay again sends nothing twice;
a crash between the two re-sends at most the unacknowledged batch (at least once).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from sinkfleet.config import Settings
from sinkfleet.errors import PublishError, SinkfleetError
from sinkfleet.kafka import kafka_client_kwargs
from sinkfleet.ops.dlq import DeadRecord, Filter, partitions, scan, start
from sinkfleet.ops.dlq_cursor import ReplayCursor, parse_ranges

REPLAYED_FROM = "sinkfleet.replayed_from"
SAMPLE = 1000  # replayed records listed in the result


def replay_group(dlq_topic: str) -> str:
    return f"sinkfleet.dlq-replay.{dlq_topic}"


@dataclass
class ReplayResult:
    dry_run: bool
    replayed: int = 0  # or would be, when dry
    already: int = 0  # replayed by an earlier run
    left: int = 0  # not matching the filter, or not replayable: left in the DLQ
    records: list[DeadRecord] = field(default_factory=list)  # the first SAMPLE replayed
    summary: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, class)
    warnings: list[str] = field(default_factory=list)

    def add(self, rec: DeadRecord) -> None:
        self.replayed += 1
        self.summary[(rec.stage, rec.error_class)] += 1
        if len(self.records) < SAMPLE:
            self.records.append(rec)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "replayed": self.replayed,
                "already_replayed": self.already, "left": self.left,
                "warnings": self.warnings,
                "summary": [{"stage": s, "error_class": c, "count": n}
                            for (s, c), n in sorted(self.summary.items())],
                "records": [{"dlq_topic": r.dlq_topic, "dlq_partition": r.dlq_partition,
                             "dlq_offset": r.dlq_offset, "topic": r.topic, "stage": r.stage,
                             "error_class": r.error_class, "replayed_from": r.replayed_from}
                            for r in self.records]}


async def replay(settings: Settings, topics: list[str], flt: Filter, *, apply: bool = False,
                 say: Callable[[str], None] = print) -> ReplayResult:
    """Re-publish matching dead letters to their original topics (only with ``apply``)."""
    result = ReplayResult(dry_run=not apply)
    producer = None
    if apply:
        producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all",
                                    enable_idempotence=True, client_id="sinkfleet-dlq-replay")
        await start(producer, settings)
    try:
        for topic in topics:
            await _replay_topic(settings, topic, flt, producer, result, say)
    finally:
        if producer is not None:
            await producer.stop()
    return result


async def _cursors(settings: Settings, group: str, tps: list[TopicPartition],
                   starts: dict[TopicPartition, int], ends: dict[TopicPartition, int],
                   warn: Callable[[str], None]) -> dict[TopicPartition, ReplayCursor]:
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), request_timeout_ms=15_000)
    await start(admin, settings)
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    cursors = {}
    for tp in tps:
        om = committed.get(tp)
        offset, meta = (om.offset, om.metadata or "") if om is not None else (-1, "")
        if offset > ends[tp]:
            warn(f"{tp.topic}[{tp.partition}]: replay cursor {offset} is past the end"
                 f" ({ends[tp]}); the topic was recreated? starting from its beginning")
            offset, meta = -1, ""
        try:
            done = parse_ranges(meta)
        except ValueError:
            warn(f"{tp.topic}[{tp.partition}]: unreadable replay metadata {meta[:40]!r};"
                 " ignoring it")
            done = []
        cursors[tp] = ReplayCursor(max(offset, starts[tp]), done)
    return cursors


async def _replay_topic(settings: Settings, dlq: str, flt: Filter,
                        producer: AIOKafkaProducer | None, result: ReplayResult,
                        say: Callable[[str], None]) -> None:
    def warn(message: str) -> None:
        result.warnings.append(message)
        say(f"warning: {message}")

    group = replay_group(dlq)
    tps = await partitions(settings, [dlq])
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=group,
                                enable_auto_commit=False, client_id="sinkfleet-dlq-replay")
    await start(consumer, settings)
    try:
        consumer.assign(tps)
        existing = await consumer.topics()
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        cursors = await _cursors(settings, group, tps, starts, ends, warn)
        missing: set[str] = set()
        batches: set[int] = set()
        async for batch in scan(consumer, {tp: (c.start, ends[tp])
                                            for tp, c in cursors.items()}):
            sends: list[asyncio.Future[Any]] = []
            for tp, records in batch.items():
                cursor = cursors[tp]
                for rec in records:
                    if cursor.is_done(rec.dlq_offset):
                        cursor.mark(rec.dlq_offset, done=True)
                        result.already += 1
                        continue
                    target = rec.topic
                    wanted = flt.matches(rec)
                    if wanted and rec.is_batch:  # compressed bytes, not a record to send
                        if not batches:
                            warn(f"dead letters of stage decompress in {dlq} are whole record"
                                 " batches too big to inflate, not records: they stay. Raise"
                                 " SINKFLEET_MAX_BATCH_BYTES and `sinkfleet replay` the source"
                                 " offsets they name (first: "
                                 f"{rec.where if rec.topic else rec.replayed_from})")
                        batches.add(rec.dlq_offset)
                        wanted = False
                    if wanted and target is not None and target not in existing:
                        if target not in missing:
                            warn(f"original topic {target} does not exist; its dead letters"
                                 " stay in the DLQ")
                        missing.add(target)
                    if wanted and target is None and "" not in missing:
                        missing.add("")
                        warn(f"dead letters in {dlq} without a sinkfleet.topic header stay")
                    if (not wanted or target is None or target in missing
                            or not cursor.can_add(rec.dlq_offset)):
                        cursor.mark(rec.dlq_offset, done=False)
                        result.left += 1
                        continue
                    if producer is not None:
                        sends.append(await producer.send(
                            target, rec.value, key=rec.key,
                            headers=[(REPLAYED_FROM, rec.replayed_from.encode())]))
                    cursor.mark(rec.dlq_offset, done=True)
                    result.add(rec)
            if producer is not None:
                await _acknowledged(sends)
                await consumer.commit({tp: cursors[tp].snapshot() for tp in batch})
        for tp, cursor in cursors.items():
            cursor.finish(ends[tp])
            if cursor.full:
                warn(f"{tp.topic}[{tp.partition}]: too many dead letters left between replayed"
                     " ones to remember them all; replay the rest without --stage/"
                     "--error-class (or with the complementary filter) to move on")
        if producer is not None:
            await consumer.commit({tp: c.snapshot() for tp, c in cursors.items()})
    except KafkaError as exc:
        raise SinkfleetError(f"replaying {dlq} failed: {exc}") from None
    finally:
        await consumer.stop()


async def _acknowledged(sends: list[asyncio.Future[Any]]) -> None:
    results = await asyncio.gather(*sends, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise PublishError(f"{len(failed)} of {len(sends)} re-published record(s) were not"
                           f" acknowledged (first: {failed[0]}); the replay cursor did not"
                           " move past them: run the replay again")
