"""Safe topic replay as plan → apply (docs/replay.md).

A plan says, per partition, where a group is (its PostgreSQL offset — the source of
truth — else its Kafka commit, else the log start) and where it should be. It is
written as CSV in the format of Kafka's own
``kafka-consumer-groups --reset-offsets --from-file`` (``topic,partition,offset``).
Applying moves the group's PostgreSQL offsets (the workers seek to them when a
partition is assigned) and its Kafka commits (for lag tools), and records the replay
so dashboards mark it. A group with live members is refused — a member would
overwrite the moved offsets — unless the apply holds the group: every worker of it
stores what it consumed, leaves the group and waits; the hold is released after the
offsets moved and the workers rejoin at the new positions. The hold is a lease the
apply renews while it runs: if the command dies, the workers rejoin by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, SinkfleetError
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.kafka.positions import KafkaPositions
from sinkfleet.ops.lag.protocol import DescribeGroupsV2
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect, pg
from sinkfleet.sink.postgres.offsets import group_offsets, move_offsets

HOLD_WAIT_SECONDS = 60.0
HOLD_LEASE_SECONDS = 15.0  # a killed apply holds its group at most this long


class ReplayError(SinkfleetError):
    """A replay cannot be planned or applied as asked."""


@dataclass(frozen=True)
class Target:
    """Where to move: exactly one of the ways Kafka's reset-offsets tool offers."""

    kind: str  # datetime | offset | shift | earliest | latest | duration
    value: Any = None

    def describe(self) -> str:
        if self.kind in ("earliest", "latest"):
            return f"to the {self.kind} offset"
        return {"datetime": "to {} ", "offset": "to offset {}", "shift": "shifted by {}",
                "duration": "back by {}"}[self.kind].format(self.value).strip()


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_ISO_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def parse_duration(text: str) -> timedelta:
    """``1h30m``, ``2d``, ``45s`` or ISO-8601 ``PT1H30M`` / ``P2D``."""
    m = _DURATION.fullmatch(text) or _ISO_DURATION.fullmatch(text.upper())
    if not text or m is None or not any(m.groups()):
        raise ConfigError(f"--by-duration {text!r}: use e.g. 90m, 1h30m, 2d or PT1H30M")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def parse_datetime(text: str) -> datetime:
    """An ISO-8601 time with an explicit timezone (a replay must not guess one)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--to-datetime {text!r} is not an ISO-8601 time, e.g."
                          " 2026-11-25T09:30:00+00:00") from None
    if when.tzinfo is None:
        raise ConfigError(f"--to-datetime {text!r} has no timezone: add one, e.g."
                          f" {text}+00:00 or {text}Z")
    return when


def make_target(*, to_datetime: str | None = None, to_offset: int | None = None,
                shift_by: int | None = None, to_earliest: bool = False,
                to_latest: bool = False, by_duration: str | None = None) -> Target:
    chosen = [t for t in (
        to_datetime is not None and Target("datetime", parse_datetime(to_datetime)),
        to_offset is not None and Target("offset", to_offset),
        shift_by is not None and Target("shift", shift_by),
        to_earliest and Target("earliest"),
        to_latest and Target("latest"),
        by_duration is not None and Target("duration", parse_duration(by_duration)),
    ) if t]
    if len(chosen) != 1:
        raise ConfigError("say where to move with exactly one of --to-datetime, --to-offset,"
                          " --shift-by, --to-earliest, --to-latest, --by-duration")
    return chosen[0]


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    current: int
    source: str  # where ``current`` came from: postgres | kafka | log-start
    target: int
    log_start: int
    log_end: int
    warning: str | None = None

    @property
    def records(self) -> int:
        """Records re-read (negative: skipped)."""
        return self.current - self.target


@dataclass
class Plan:
    group: str
    target: str
    partitions: list[PartitionPlan] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def warnings(self) -> list[str]:
        return [p.warning for p in self.partitions if p.warning]

    def offsets(self) -> dict[TopicPartition, int]:
        return {TopicPartition(p.topic, p.partition): p.target for p in self.partitions}

    def to_csv(self) -> str:
        """Kafka's reset-offsets ``--from-file`` format: topic,partition,offset."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for p in sorted(self.partitions, key=lambda p: (p.topic, p.partition)):
            writer.writerow([p.topic, p.partition, p.target])
        return out.getvalue()

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "target": self.target, "created_at": self.created_at,
                "records": self.records, "warnings": self.warnings,
                "partitions": [{**asdict(p), "records": p.records} for p in self.partitions]}


def read_plan_csv(path: Path) -> dict[TopicPartition, int]:
    """A plan file: ``topic,partition,offset`` lines (Kafka's format); errors name the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the plan {path}: {exc.strerror}") from None
    offsets: dict[TopicPartition, int] = {}
    for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or row[0].startswith("#"):
            continue
        try:
            topic, partition, offset = (c.strip() for c in row)
            tp, target = TopicPartition(topic, int(partition)), int(offset)
        except ValueError:
            raise ConfigError(f"{path}:{n}: expected 'topic,partition,offset', got"
                              f" {','.join(row)!r}") from None
        if target < 0 or tp.partition < 0:
            raise ConfigError(f"{path}:{n}: partition and offset must be ≥ 0")
        if tp in offsets:
            raise ConfigError(f"{path}:{n}: {topic}[{partition}] appears twice")
        offsets[tp] = target
    if not offsets:
        raise ConfigError(f"{path}: the plan names no partition")
    return offsets


async def commit_empty_group(settings: Settings, group: str,
                             offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for a group with no live members (generation -1, as Kafka's own
    tool does)."""
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


class _ReplayCluster(KafkaPositions):
    """The Kafka side of a replay: log bounds, time lookups, group state, commits."""

    @property
    def admin(self) -> AIOKafkaAdminClient:
        return self._admin

    @property
    def meta(self) -> AIOKafkaConsumer:
        return self._meta

    async def __aenter__(self) -> _ReplayCluster:
        try:
            await super().__aenter__()
        except SinkfleetError as exc:
            raise ReplayError(str(exc)) from None
        return self

    async def partitions(self, topic: str) -> list[TopicPartition]:
        parts = self.meta.partitions_for_topic(topic)
        if not parts:
            await self.meta._client.force_metadata_update()
            parts = self.meta.partitions_for_topic(topic)
        if not parts:
            raise ReplayError(f"topic {topic!r} does not exist on the cluster"
                              " (sinkfleet topics apply creates the catalogue's topics)")
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def members(self, group: str) -> tuple[str, int]:
        """Kafka's state of ``group`` and its number of live members."""
        node = await self.admin.find_coordinator(group)
        response = await self.admin._send_request(DescribeGroupsV2([group]), node)
        [described] = response.to_object()["groups"]
        return described["state"], len(described["members"])

    async def commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        await commit_empty_group(self.settings, group, offsets)


async def stored_positions(settings: Settings, group: str, tps: list[TopicPartition]
                           ) -> dict[TopicPartition, int]:
    """The group's PostgreSQL offsets (its position) for the topics of ``tps``."""
    async with pg(settings) as conn:
        return await group_offsets(conn, group, {tp.topic for tp in tps})


def consumed_topics(catalogue: Catalogue, group: str) -> list[str]:
    """The topics the worker spec of ``group`` consumes."""
    for spec in catalogue.workers.values():
        if spec.group == group:
            return sorted({catalogue.sinks[s].topic.name for s in spec.sinks})
    known = ", ".join(sorted(w.group for w in catalogue.workers.values())) or "none"
    raise ConfigError(f"no worker spec in workers/ has group {group!r} (groups: {known});"
                      " name the topic with --topic")


async def plan_replay(settings: Settings, catalogue: Catalogue, group: str,
                      topics: list[str] | None, target: Target,
                      partitions: list[int] | None = None) -> Plan:
    """Where the group is and where ``target`` puts it, per partition (read-only)."""
    topics = topics or consumed_topics(catalogue, group)
    plan = Plan(group, target.describe())
    async with _ReplayCluster(settings) as kafka:
        tps = [tp for t in topics for tp in await kafka.partitions(t)
               if partitions is None or tp.partition in partitions]
        if not tps:
            raise ConfigError(f"none of partitions {partitions} exist in {', '.join(topics)}")
        starts = await kafka.meta.beginning_offsets(tps)
        ends = await kafka.meta.end_offsets(tps)
        in_pg = await stored_positions(settings, group, tps)
        wanted = set(tps)
        in_kafka = {tp: off for tp, off in (await kafka.committed(group)).items()
                    if tp in wanted and tp not in in_pg}
        by_time: dict[TopicPartition, Any] = {}
        if target.kind in ("datetime", "duration"):
            when = (target.value if target.kind == "datetime"
                    else datetime.now(UTC) - target.value)
            ms = int(when.timestamp() * 1000)
            by_time = await kafka.meta.offsets_for_times({tp: ms for tp in tps})
        for tp in tps:
            start, end = starts[tp], ends[tp]
            if tp in in_pg:
                current, source = in_pg[tp], "postgres"
            elif tp in in_kafka:
                current, source = in_kafka[tp], "kafka"
            else:
                current, source = start, "log-start"
            if target.kind == "earliest":
                wanted = start
            elif target.kind == "latest":
                wanted = end
            elif target.kind == "offset":
                wanted = target.value
            elif target.kind == "shift":
                wanted = current + target.value
            else:  # the first record at or after the time; none → the log end
                found = by_time.get(tp)
                wanted = end if found is None else found.offset
            warning = None
            if wanted < start:
                warning = (f"{tp.topic}[{tp.partition}]: target {wanted} is below the log"
                           f" start {start}: records {wanted}…{start - 1} were deleted by"
                           f" retention; starting at {start}")
                wanted = start
            elif wanted > end:
                warning = (f"{tp.topic}[{tp.partition}]: target {wanted} is past the log end"
                           f" {end}; using {end}")
                wanted = end
            plan.partitions.append(PartitionPlan(tp.topic, tp.partition, current, source,
                                                 wanted, start, end, warning))
    return plan


# --- holding a group ----------------------------------------------------------------------
class _Hold:
    """A lease on ``group``'s hold row (sinkfleet.group_holds), renewed every third of
    ``lease`` seconds while the apply runs. Workers ignore an expired hold, so a killed
    command lets its group go within ``lease`` seconds. A lease that lapsed (PostgreSQL
    unreachable for longer than ``lease``) is never silently taken back: workers may
    have rejoined meanwhile, so the move refuses (``check`` in its transaction)."""

    def __init__(self, settings: Settings, group: str, reason: str, lease: float) -> None:
        if lease < 3:
            raise ConfigError(f"--hold-lease {lease:g}: use at least 3 seconds")
        self.settings, self.group, self.reason, self.lease = settings, group, reason, lease
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Hold:
        async with pg(self.settings) as conn:
            taken = await conn.fetchrow(
                "INSERT INTO sinkfleet.group_holds AS h (group_id, reason, holder, expires_at)"
                " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
                " ON CONFLICT (group_id) DO UPDATE SET reason = EXCLUDED.reason,"
                " holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, held_at = now()"
                " WHERE h.expires_at <= now() RETURNING group_id", self.group, self.reason,
                self.holder, self.lease)
            if taken is None:
                other = await conn.fetchrow(
                    "SELECT reason, holder, expires_at FROM sinkfleet.group_holds"
                    " WHERE group_id = $1", self.group)
                raise ReplayError(
                    f"group {self.group} is already held by {other['holder'] or 'an older'}"
                    f" sinkfleet ({other['reason']}) until {other['expires_at']}: another"
                    " replay is running; wait for it to finish")
        self._renewer = asyncio.create_task(self._renew())
        return self

    async def _renew(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await asyncio.sleep(self.lease / 3)
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self.settings, timeout=self.lease / 3)
                    if await self._extend(conn) is None:
                        return  # lapsed: the move will refuse
                except (*RETRIABLE_STORAGE, asyncpg.PostgresError):
                    conn = None  # again next time: the lease outlives two misses
        finally:
            if conn is not None:
                conn.terminate()

    async def _extend(self, conn: asyncpg.Connection) -> Any:
        return await conn.fetchval(
            "UPDATE sinkfleet.group_holds SET expires_at = now() + make_interval(secs => $3)"
            " WHERE group_id = $1 AND holder = $2 AND expires_at > now() RETURNING expires_at",
            self.group, self.holder, self.lease)

    async def check(self, conn: asyncpg.Connection) -> None:
        """Inside the move's transaction: the hold is still ours and alive."""
        if await self._extend(conn) is None:
            raise ReplayError(
                f"the hold on group {self.group} lapsed (this command could not renew it"
                f" within {self.lease:g}s, so its workers may have rejoined); nothing was"
                " moved: apply the plan again")

    async def __aexit__(self, *exc: object) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        async with pg(self.settings) as conn:
            await conn.execute("DELETE FROM sinkfleet.group_holds WHERE group_id = $1"
                               " AND holder = $2", self.group, self.holder)


async def _wait_empty(kafka: _ReplayCluster, group: str, timeout: float,
                      say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    state, members = await kafka.members(group)
    while members:
        if time.monotonic() > deadline:
            raise ReplayError(
                f"group {group} still has {members} live member(s) after {timeout:.0f}s of"
                " hold; are they sinkfleet workers older than this version (they do not"
                " know holds)? Stop them and apply again")
        say(f"waiting for {members} member(s) of {group} to store and leave ({state})")
        await asyncio.sleep(1.0)
        state, members = await kafka.members(group)


@dataclass
class Applied:
    group: str
    partitions: int
    records: int
    executed: bool
    kafka_committed: bool = False
    held: bool = False
    replay_id: int | None = None


async def apply_replay(settings: Settings, group: str, offsets: dict[TopicPartition, int], *,
                       execute: bool, stop_fleet: bool = False,
                       hold_timeout: float = HOLD_WAIT_SECONDS,
                       hold_lease: float = HOLD_LEASE_SECONDS,
                       say: Callable[[str], None] = lambda m: None) -> Applied:
    """Move ``group`` to ``offsets`` (PostgreSQL first, then Kafka); dry run by default."""
    tps = list(offsets)
    async with _ReplayCluster(settings) as kafka:
        for topic in sorted({tp.topic for tp in tps}):
            known = set(await kafka.partitions(topic))
            unknown = [tp.partition for tp in tps if tp.topic == topic and tp not in known]
            if unknown:
                raise ReplayError(f"the plan names partitions {unknown} of {topic}, which"
                                  f" has {len(known)}")
        current = await stored_positions(settings, group, tps)
        records = sum(current.get(tp, off) - off for tp, off in offsets.items())
        result = Applied(group, len(tps), records, execute)
        state, members = await kafka.members(group)
        if members and not stop_fleet:
            raise ReplayError(
                f"group {group} has {members} live member(s) ({state}): a running worker"
                " would overwrite the moved offsets. Stop its workers first, or pass"
                " --stop-fleet to hold the group while the offsets move")
        if not execute:
            return result
        held = bool(members) and stop_fleet
        async with contextlib.AsyncExitStack() as stack:
            hold = None
            if held:
                say(f"holding group {group} (a lease of {hold_lease:g}s, renewed while this"
                    " runs): its workers store what they consumed and leave")
                hold = await stack.enter_async_context(
                    _Hold(settings, group, "replay apply", hold_lease))
                stack.callback(say, f"released group {group}: its workers rejoin")
                result.held = True
                await _wait_empty(kafka, group, hold_timeout, say)
            result.replay_id = await _move_postgres(settings, group, offsets, current, hold)
            try:
                await kafka.commit(group, offsets)
                result.kafka_committed = True
            except KafkaError as exc:  # PostgreSQL holds the position; lag tools lag behind
                say(f"warning: Kafka refused the commit ({exc}); workers resume from the"
                    " PostgreSQL offsets, lag tools show the old position until they commit")
    return result


async def _move_postgres(settings: Settings, group: str, offsets: dict[TopicPartition, int],
                         before: dict[TopicPartition, int], hold: _Hold | None) -> int:
    tps = list(offsets)
    detail = [{"topic": tp.topic, "partition": tp.partition, "from": before.get(tp),
               "to": offsets[tp]} for tp in tps]
    digest = hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()[:16]
    async with pg(settings) as conn, conn.transaction():
        if hold is not None:
            await hold.check(conn)
        await move_offsets(conn, group, offsets)
        return int(await conn.fetchval(
            "INSERT INTO sinkfleet.replays (group_id, records, partitions, plan, digest)"
            " VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id", group,
            sum((before.get(tp, o) - o) for tp, o in offsets.items()), len(tps),
            json.dumps(detail), digest))
