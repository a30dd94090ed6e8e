"""`sinkfleet dlq replay`: re-publish dead letters to their original topics, once.

Each matching dead letter's original key and value go back to the topic named by its
``sinkfleet.topic`` header, with ``sinkfleet.replayed_from=<dlq>:<partition>:<offset>``
(idempotent producer, acks=all). Only to a source topic of that dead-letter topic: a
dead letter naming another is refused (anyone who can write to the DLQ can forge one).
A dead letter whose key or value was cut to an excerpt is replayed from the original,
re-read from the source topic at its coordinates and checked against its SHA-256, or
refused when that record is gone. Refused dead letters stay in the DLQ, each with a
reason. Progress is committed to the consumer group
``sinkfleet.dlq-replay.<dlq topic>`` only after Kafka acknowledged the re-published
records (``ReplayCursor`` says what), so running the replay again sends nothing twice;
a crash between the two re-sends at most the unacknowledged batch (at least once).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from sinkfleet.config import Settings
from sinkfleet.errors import PublishError, SinkfleetError
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.ops.deadletters.cursor import ReplayCursor, parse_ranges
from sinkfleet.ops.deadletters.inspect import DeadRecord, Filter, partitions, scan, start
from sinkfleet.worker.deadletter import DLQ_RECORD_LIMIT, REPLAYED_FROM

SAMPLE = 1000  # replayed (and refused) records listed in the result
READ_SECONDS = 30.0  # to fetch one original record


def replay_group(dlq_topic: str) -> str:
    return f"sinkfleet.dlq-replay.{dlq_topic}"


@dataclass(frozen=True)
class Refusal:
    rec: DeadRecord
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"dlq_topic": self.rec.dlq_topic, "dlq_partition": self.rec.dlq_partition,
                "dlq_offset": self.rec.dlq_offset, "topic": self.rec.topic,
                "reason": self.reason}


@dataclass
class ReplayResult:
    dry_run: bool
    replayed: int = 0  # or would be, when dry
    already: int = 0  # replayed by an earlier run
    left: int = 0  # not matching the filter, or not replayable: left in the DLQ
    refused: int = 0  # of those left: matching, but not replayable (see refusals)
    records: list[DeadRecord] = field(default_factory=list)  # the first SAMPLE replayed
    refusals: list[Refusal] = field(default_factory=list)  # the first SAMPLE refused
    summary: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, class)
    warnings: list[str] = field(default_factory=list)

    def add(self, rec: DeadRecord) -> None:
        self.replayed += 1
        self.summary[(rec.stage, rec.error_class)] += 1
        if len(self.records) < SAMPLE:
            self.records.append(rec)

    def refuse(self, rec: DeadRecord, reason: str) -> None:
        self.refused += 1
        if len(self.refusals) < SAMPLE:
            self.refusals.append(Refusal(rec, reason))

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "replayed": self.replayed,
                "already_replayed": self.already, "left": self.left,
                "refused": self.refused, "refusals": [r.as_dict() for r in self.refusals],
                "warnings": self.warnings,
                "summary": [{"stage": s, "error_class": c, "count": n}
                            for (s, c), n in sorted(self.summary.items())],
                "records": [{"dlq_topic": r.dlq_topic, "dlq_partition": r.dlq_partition,
                             "dlq_offset": r.dlq_offset, "topic": r.topic, "stage": r.stage,
                             "error_class": r.error_class, "replayed_from": r.replayed_from}
                            for r in self.records]}


def _record_limit(settings: Settings) -> int:
    """The biggest record (key + value) a replay sends: what a worker would read."""
    return max(settings.max_message_bytes, DLQ_RECORD_LIMIT)


async def replay(settings: Settings, topics: list[str], flt: Filter, *,
                 sources: Mapping[str, frozenset[str]], apply: bool = False,
                 say: Callable[[str], None] = print) -> ReplayResult:
    """Re-publish matching dead letters of ``topics`` to their original topics (only with
    ``apply``), each only to one of its DLQ's ``sources`` (see ``dlq_sources``)."""
    result = ReplayResult(dry_run=not apply)
    producer = None
    originals = Originals(settings)
    if apply:
        # Originals re-read for cut dead letters may be bigger than the 1 MiB default;
        # zstd brings them back under the source topic's limit as their producer did.
        producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all",
                                    enable_idempotence=True, client_id="sinkfleet-dlq-replay",
                                    compression_type="zstd",
                                    max_request_size=_record_limit(settings) + 64 * 1024)
        await start(producer, settings)
    try:
        for topic in topics:
            await _replay_topic(settings, topic, flt, sources.get(topic, frozenset()),
                                producer, originals, result, say)
    finally:
        await originals.close()
        if producer is not None:
            await producer.stop()
    return result


class Originals:
    """Reads source records by their coordinates, for dead letters that hold an excerpt
    (a group-less consumer, started on first use; read-only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[str, set[int]] = {}

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _start(self, topic: str) -> AIOKafkaConsumer:
        if topic not in self._partitions:
            tps = await partitions(self.settings, [topic])
            self._partitions[topic] = {tp.partition for tp in tps}
        if self._consumer is None:
            fetch = _record_limit(self.settings) + 1024 * 1024
            consumer = AIOKafkaConsumer(**kafka_client_kwargs(self.settings), group_id=None,
                                        enable_auto_commit=False, fetch_max_bytes=fetch,
                                        max_partition_fetch_bytes=fetch,
                                        client_id="sinkfleet-dlq-replay-originals")
            await start(consumer, self.settings)
            self._consumer = consumer
        return self._consumer

    async def original(self, rec: DeadRecord) -> tuple[Any, str | None]:
        """(the original record, None), or (None, why it cannot be replayed)."""
        info = rec.info
        cut = "the value was cut to an excerpt" if info.value_cut else "the key was cut"
        topic, p, o = info.topic, info.partition, info.offset
        if topic is None or p is None or o is None:
            return None, f"{cut} and its coordinates are unreadable ({info.where})"
        consumer = await self._start(topic)
        if p not in self._partitions[topic]:
            return None, f"{cut} and {topic} has no partition {p} ({info.where})"
        tp = TopicPartition(topic, p)
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if o < first:
            return None, (f"{cut} and the original {info.where} is no longer in the topic"
                          f" (its log starts at offset {first})")
        msg = None
        if o < end:
            consumer.seek(tp, o)
            deadline = asyncio.get_running_loop().time() + READ_SECONDS
            while msg is None and asyncio.get_running_loop().time() < deadline:
                got = (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp)
                msg = got[0] if got else None
        if msg is None or msg.offset != o:
            return None, (f"{cut} and the original {info.where} is not in the topic (its"
                          f" offsets run from {first} to {end - 1})")
        for part, was, kept in (("value", info.value_cut, rec.value),
                                ("key", info.key_cut, rec.key)):
            data = msg.value if part == "value" else msg.key
            if not (was.matches(data) if was is not None else data == kept):
                return None, (f"{cut} and the record at {info.where} is not the original"
                              f" (its {part} differs in size or SHA-256)")
        return msg, None


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


async def _replay_topic(settings: Settings, dlq: str, flt: Filter, sources: frozenset[str],
                        producer: AIOKafkaProducer | None, originals: Originals,
                        result: ReplayResult, say: Callable[[str], None]) -> None:
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
        checks = _Checks(settings, dlq, sources, existing, originals, result, warn)
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
                    payload = None
                    if (flt.matches(rec) and checks.allowed(rec)
                            and cursor.can_add(rec.dlq_offset)):
                        payload = await checks.payload(rec)
                    if payload is None:
                        cursor.mark(rec.dlq_offset, done=False)
                        result.left += 1
                        continue
                    if producer is not None:
                        key, value = payload
                        sends.append(await producer.send(
                            rec.topic, value, key=key,
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


@dataclass
class _Checks:
    """Whether a matching dead letter of ``dlq`` may be replayed, and what to send."""

    settings: Settings
    dlq: str
    sources: frozenset[str]  # where its dead letters may go
    existing: set[str]  # topics in Kafka
    originals: Originals
    result: ReplayResult
    warn: Callable[[str], None]
    missing: set[str] = field(default_factory=set)  # sources warned about
    batches: int = 0  # decompress dead letters left

    def allowed(self, rec: DeadRecord) -> bool:
        """False (refused, or its topic is missing) leaves ``rec`` in the DLQ."""
        if rec.is_batch:  # compressed bytes of a whole batch, not a record to send
            if not self.batches:
                first = rec.where if rec.topic else rec.replayed_from
                self.warn(f"dead letters of stage decompress in {self.dlq} are whole record"
                          " batches too big to inflate, not records: they stay. Raise"
                          " SINKFLEET_MAX_BATCH_BYTES and `sinkfleet replay` the source"
                          f" offsets they name (first: {first})")
            self.batches += 1
            return False
        if rec.topic is None:
            self.result.refuse(rec, "no sinkfleet.topic header: its original topic is"
                                    " unknown")
            return False
        if rec.topic not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none in topics/"
            self.result.refuse(rec, f"sinkfleet.topic {rec.topic!r} is not a source topic"
                                    f" of {self.dlq} ({known})")
            return False
        if rec.topic not in self.existing:
            if rec.topic not in self.missing:
                self.warn(f"original topic {rec.topic} does not exist; its dead letters stay"
                          " in the DLQ")
            self.missing.add(rec.topic)
            return False
        return True

    async def payload(self, rec: DeadRecord) -> tuple[bytes | None, bytes | None] | None:
        """(key, value) to send: the dead letter's, or for a cut one the original's;
        None when it is refused."""
        if not rec.info.truncated:
            return rec.key, rec.value
        original, reason = await self.originals.original(rec)
        if original is not None:
            size = len(original.key or b"") + len(original.value or b"")
            limit = _record_limit(self.settings)
            if size <= limit:
                return original.key, original.value
            reason = (f"the original {rec.info.where} is {size:,} bytes, over"
                      f" max_message_bytes ({limit:,})")
        self.result.refuse(rec, reason or "?")
        return None


async def _acknowledged(sends: list[asyncio.Future[Any]]) -> None:
    results = await asyncio.gather(*sends, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise PublishError(f"{len(failed)} of {len(sends)} re-published record(s) were not"
                           f" acknowledged (first: {failed[0]}); the replay cursor did not"
                           " move past them: run the replay again")
