"""Collect every consumer group's lag from Kafka: committed offsets, log bounds, and the
timestamp of the first unconsumed record (for lag in seconds, exact, not interpolated)."""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.structs import ConsumerRecord

from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs
from sinkfleet.ops.lag.model import PartitionHistory, Sample, worst
from sinkfleet.ops.lag.protocol import DescribeGroupsV2, OffsetFetchAll

# Peeking at first-unconsumed records: a fetch brings at most this much of a partition
# (one producer batch, typically), and one getmany() decodes at most PEEK_RECORDS, so
# that the event loop (and a scrape) never waits long on decoding.
PEEK_FETCH_BYTES = 16_384
PEEK_RECORDS = 2_000
PEEK_TIMEOUT_S = 10.0
YIELD_EVERY = 500  # group-partitions built between two yields to the event loop
FORGET_SECONDS = 3600.0  # a partition no group has reported for this long loses its history
_COORDINATOR_MOVED = frozenset({14, 15, 16})  # load in progress, not available, not coordinator
_offset = attrgetter("offset")
log = logging.getLogger("sinkfleet.lag")


@dataclass
class PartitionLag:
    topic: str
    partition: int
    sample: Sample
    status: str

    def as_dict(self) -> dict[str, Any]:
        s = self.sample
        return {"topic": self.topic, "partition": self.partition,
                "committed_offset": s.committed, "log_start_offset": s.log_start,
                "log_end_offset": s.log_end, "lag_records": s.lag_records,
                "expired_records": s.expired_records, "lag_seconds": s.lag_seconds,
                "status": self.status}


@dataclass
class GroupLag:
    group: str
    state: str  # Kafka's group state: Stable, Empty, PreparingRebalance, …
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)
    status: str = "OK"

    @property
    def lag_records(self) -> int:
        return sum(p.sample.lag_records or 0 for p in self.partitions)

    @property
    def expired_records(self) -> int:
        return sum(p.sample.expired_records or 0 for p in self.partitions)

    @property
    def lag_seconds(self) -> float | None:
        known = [p.sample.lag_seconds for p in self.partitions]
        values = [v for v in known if v is not None]
        return max(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "state": self.state, "members": self.members,
                "status": self.status, "lag_records": self.lag_records,
                "expired_records": self.expired_records, "lag_seconds": self.lag_seconds,
                "partitions": [p.as_dict() for p in self.partitions]}


@dataclass
class Snapshot:
    at: float
    groups: list[GroupLag]
    dlq_records: dict[str, int]
    seconds: float  # how long the collection took

    def as_dict(self) -> dict[str, Any]:
        return {"generated_at": self.at, "collect_seconds": round(self.seconds, 4),
                "groups": [g.as_dict() for g in self.groups], "dlq_records": self.dlq_records}


class LagCollector:
    """Polls Kafka; keeps a bounded history per (group, partition) for status rules.

    A poll costs, whatever the number of groups: one ListGroups, one DescribeGroups per
    coordinator, one OffsetFetch per group (coordinators are cached), two ListOffsets,
    and only for committed offsets not seen before, fetches that read each partition
    forward from its lowest such offset (a round per cluster of offsets, not per offset).
    """

    def __init__(self, settings: Settings, *, groups: list[str] | None = None,
                 stall_seconds: float = 60.0, window_seconds: float = 120.0) -> None:
        self.settings = settings
        self.only = set(groups) if groups else None
        self.stall_seconds = stall_seconds
        self.window_seconds = max(window_seconds, stall_seconds)
        self.history: dict[tuple[str, TopicPartition], PartitionHistory] = {}
        self._ts: dict[tuple[TopicPartition, int], float] = {}  # (tp, offset) -> ts seconds
        self._coordinators: dict[str, int] = {}  # group -> node id
        self._refused: set[str] = set()  # groups whose offsets the broker would not give
        kw = {**kafka_client_kwargs(settings), "request_timeout_ms": 10_000}
        self._admin = AIOKafkaAdminClient(**kw)
        self._meta = AIOKafkaConsumer(enable_auto_commit=False, **kw)
        self._peek = AIOKafkaConsumer(enable_auto_commit=False,
                                      max_partition_fetch_bytes=PEEK_FETCH_BYTES,
                                      fetch_max_bytes=8 * 2**20, **kw)

    async def start(self) -> None:
        try:
            await self._admin.start()
            await self._meta.start()
            await self._peek.start()
        except KafkaError as exc:
            raise SinkfleetError(await explain_kafka_error(self.settings, exc)) from None

    async def close(self) -> None:
        for client in (self._peek, self._meta):
            await client.stop()
        await self._admin.close()

    async def __aenter__(self) -> LagCollector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _find_coordinators(self, names: list[str]) -> None:
        missing = [n for n in names if n not in self._coordinators]
        found = await asyncio.gather(*(self._admin.find_coordinator(n) for n in missing))
        self._coordinators.update(zip(missing, found, strict=True))

    async def _describe(self, names: list[str]) -> dict[str, tuple[str, int, int]]:
        """(state, members, error code) of each group, from its coordinator."""
        await self._find_coordinators(names)
        by_node: dict[int, list[str]] = {}
        for name in names:
            by_node.setdefault(self._coordinators[name], []).append(name)
        responses = await asyncio.gather(*(
            self._admin._send_request(DescribeGroupsV2(groups), node)
            for node, groups in by_node.items()))
        return {g["group"]: (g["state"], len(g["members"]), g["error_code"])
                for response in responses for g in response.to_object()["groups"]}

    async def _groups(self) -> dict[str, tuple[str, int]]:
        # The brokers as the last poll's metadata saw them (None: ask for metadata).
        brokers = sorted(b.nodeId for b in self._admin._client.cluster.brokers()
                         if isinstance(b.nodeId, int)) or None
        listed = [g[0] for g in await self._admin.list_consumer_groups(brokers)
                  if len(g) < 2 or g[1] in ("consumer", "")]
        names = sorted(g for g in listed if self.only is None or g in self.only)
        if not names:
            return {}
        described = await self._describe(names)
        moved = [g for g, d in described.items() if d[2] in _COORDINATOR_MOVED]
        if moved:  # a cached coordinator went stale: ask again, once
            for g in moved:
                self._coordinators.pop(g, None)
            described |= await self._describe(moved)
        return {g: (described[g][0], described[g][1]) for g in names if g in described}

    async def _committed(self, group: str) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None: none, or the broker could not say); none
        at all when the broker refuses (e.g. not authorised), logged once."""
        for attempt in (1, 2):
            await self._find_coordinators([group])
            response = await self._admin._send_request(OffsetFetchAll(group),
                                                       self._coordinators[group])
            error = getattr(response, "error_code", 0)  # v2+
            if error in _COORDINATOR_MOVED and attempt == 1:
                self._coordinators.pop(group, None)
                continue
            if error:
                if group not in self._refused:
                    self._refused.add(group)
                    log.warning("group=%s committed offsets unavailable: %s", group,
                                for_code(error).__name__)
                return {}
            self._refused.discard(group)
            return {TopicPartition(topic, p): (off if off >= 0 and not err else None)
                    for topic, partitions in response.topics
                    for p, off, _meta, err in partitions}
        raise AssertionError("unreachable")

    async def _topics(self) -> dict[str, list[int]]:
        """Every topic and its partitions, from one metadata request, which also keeps
        the brokers fresh for the next poll's ListGroups."""
        metadata = await self._admin._get_cluster_metadata()
        self._admin._client.cluster.update_metadata(metadata)
        return {t["topic"]: [p["partition"] for p in t["partitions"]]
                for t in metadata.to_object()["topics"]}

    async def _timestamps(self, wanted: set[tuple[TopicPartition, int]]) -> None:
        """Fill the cache with the timestamp of the first record at or after each wanted
        (tp, offset) not cached yet.

        All partitions are read at once, each forward from its lowest such offset: one
        fetch answers every offset it covers, and a partition seeks ahead only over a
        gap, so several groups at different offsets of a partition cost one fetch, not
        one round each."""
        todo: dict[TopicPartition, list[int]] = {}
        for tp, off in wanted:
            if (tp, off) not in self._ts:
                todo.setdefault(tp, []).append(off)
        if not todo:
            return
        for offsets in todo.values():
            offsets.sort(reverse=True)  # lowest last: pop() it
        self._peek.assign(list(todo))
        for tp, offsets in todo.items():
            self._peek.seek(tp, offsets[-1])
        deadline = time.monotonic() + PEEK_TIMEOUT_S
        try:
            while todo and time.monotonic() < deadline:
                fetched = await self._peek.getmany(*todo, timeout_ms=500,
                                                   max_records=PEEK_RECORDS)
                for tp, records in fetched.items():
                    pending = todo.get(tp)
                    if pending is None or not records:
                        continue
                    self._resolve(tp, pending, records)
                    if not pending:
                        del todo[tp]
                        self._peek.pause(tp)
                    elif pending[-1] > records[-1].offset + 1:  # a gap: skip it
                        self._peek.seek(tp, pending[-1])
        finally:  # nothing fetches in the background between polls
            self._peek.pause(*self._peek.assignment())

    def _resolve(self, tp: TopicPartition, offsets: list[int],
                 records: list[ConsumerRecord[Any, Any]]) -> None:
        """Each wanted offset up to the last record takes the timestamp of the first
        record at or after it (records are in offset order, from the lowest wanted)."""
        i, last = 0, records[-1].offset
        while offsets and offsets[-1] <= last:
            off = offsets.pop()
            i = bisect_left(records, off, lo=i, key=_offset)
            self._ts[(tp, off)] = records[i].timestamp / 1000

    async def collect(self) -> Snapshot:
        started = time.monotonic()
        now = time.time()
        groups = await self._groups()
        committed: dict[str, dict[TopicPartition, int | None]] = {}
        offsets = await asyncio.gather(*(self._committed(g) for g in groups))
        existing = await self._topics()
        for g, offs in zip(groups, offsets, strict=True):
            committed[g] = {tp: off for tp, off in offs.items() if tp.topic in existing}
        dlq_tps = [TopicPartition(t, p) for t in sorted(existing) if t.endswith(".dlq")
                   for p in sorted(existing[t])]
        all_tps = sorted({tp for c in committed.values() for tp in c} | set(dlq_tps))
        # Tell the metadata client every topic up front: for a topic it has not seen,
        # end_offsets() otherwise waits 100 ms and retries, once per topic.
        await self._meta._client.set_topics(sorted({tp.topic for tp in all_tps}))
        ends = await self._meta.end_offsets(all_tps) if all_tps else {}
        starts = await self._meta.beginning_offsets(all_tps) if all_tps else {}
        # The oldest record each group still has to read: at its commit, or at the log
        # start when retention deleted the records there (they count as expired).
        wanted = {(tp, max(off, starts[tp])) for c in committed.values()
                  for tp, off in c.items() if off is not None and max(off, starts[tp]) < ends[tp]}
        await self._timestamps(wanted)
        result = await self._build(now, groups, committed, starts, ends)
        self._forget(now, wanted)
        dlq: dict[str, int] = {}
        for tp in dlq_tps:
            dlq[tp.topic] = dlq.get(tp.topic, 0) + ends[tp] - starts[tp]
        return Snapshot(now, result, dlq, time.monotonic() - started)

    async def _build(self, now: float, groups: dict[str, tuple[str, int]],
                     committed: dict[str, dict[TopicPartition, int | None]],
                     starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
                     ) -> list[GroupLag]:
        """Samples, history and statuses; yields to the event loop now and then so that
        a scrape is served while thousands of partitions are processed."""
        result, since_yield = [], 0
        window, stall = self.window_seconds, self.stall_seconds
        for g, (state, members) in groups.items():
            glag = GroupLag(g, state, members)
            for tp, off in sorted(committed.get(g, {}).items()):
                ts = None if off is None else self._ts.get((tp, max(off, starts[tp])))
                sample = Sample(now, off, starts[tp], ends[tp], ts)
                hist = self.history.get((g, tp))
                if hist is None:
                    hist = self.history[(g, tp)] = PartitionHistory()
                hist.add(sample)
                glag.partitions.append(PartitionLag(tp.topic, tp.partition, sample,
                                                    hist.status(window, stall)))
            glag.status = worst([p.status for p in glag.partitions])
            result.append(glag)
            since_yield += len(glag.partitions)
            if since_yield >= YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)
        return result

    def _forget(self, now: float, wanted: set[tuple[TopicPartition, int]]) -> None:
        """Drop what no group needs any more: timestamps of offsets no group waits at
        (offsets move forward), the history of partitions unreported for an hour."""
        if len(self._ts) > 2 * len(wanted) + 10_000:
            self._ts = {k: self._ts[k] for k in wanted if k in self._ts}
        cutoff = now - FORGET_SECONDS
        stale = [k for k, h in self.history.items() if h.last is None or h.last.at < cutoff]
        for key in stale:
            del self.history[key]
