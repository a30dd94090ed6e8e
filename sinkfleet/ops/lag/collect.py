"""Collect every consumer group's lag from Kafka: committed offsets, log bounds, and the
timestamp of the first unconsumed record (for lag in seconds, exact, not interpolated)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka import explain_kafka_error, kafka_client_kwargs
from sinkfleet.ops.lag.model import PartitionHistory, Sample, partition_status, worst


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
                "lag_seconds": s.lag_seconds, "status": self.status}


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
    def lag_seconds(self) -> float | None:
        known = [p.sample.lag_seconds for p in self.partitions]
        values = [v for v in known if v is not None]
        return max(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "state": self.state, "members": self.members,
                "status": self.status, "lag_records": self.lag_records,
                "lag_seconds": self.lag_seconds,
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


class _DescribeGroupsV2(Request[DescribeGroupsRequest_v2]):
    """DescribeGroups pinned to v2: aiokafka 0.14 parses the v3 response with the v2
    schema (a missing authorized_operations field), which breaks on groups with members."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[DescribeGroupsRequest_v2]
              ) -> DescribeGroupsRequest_v2:
        return DescribeGroupsRequest_v2(self._groups)


class LagCollector:
    """Polls Kafka; keeps a bounded history per (group, partition) for status rules."""

    def __init__(self, settings: Settings, *, groups: list[str] | None = None,
                 stall_seconds: float = 60.0, window_seconds: float = 120.0) -> None:
        self.settings = settings
        self.only = set(groups) if groups else None
        self.stall_seconds = stall_seconds
        self.window_seconds = max(window_seconds, stall_seconds)
        self.history: dict[tuple[str, TopicPartition], PartitionHistory] = {}
        self._ts: dict[tuple[TopicPartition, int], float] = {}  # (tp, offset) -> ts seconds
        kw = {**kafka_client_kwargs(settings), "request_timeout_ms": 10_000}
        self._admin = AIOKafkaAdminClient(**kw)
        self._meta = AIOKafkaConsumer(enable_auto_commit=False, **kw)
        self._peek = AIOKafkaConsumer(enable_auto_commit=False, max_partition_fetch_bytes=65536,
                                      **kw)

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

    async def _groups(self) -> dict[str, tuple[str, int]]:
        listed = [g[0] for g in await self._admin.list_consumer_groups()
                  if len(g) < 2 or g[1] in ("consumer", "")]
        names = sorted(g for g in listed if self.only is None or g in self.only)
        if not names:
            return {}
        described: dict[str, tuple[str, int]] = {}
        by_node: dict[int, list[str]] = {}
        for name in names:
            by_node.setdefault(await self._admin.find_coordinator(name), []).append(name)
        responses = await asyncio.gather(*(
            self._admin._send_request(_DescribeGroupsV2(groups), node)
            for node, groups in by_node.items()))
        for response in responses:
            for g in response.to_object()["groups"]:
                described[g["group"]] = (g["state"], len(g["members"]))
        return described

    async def _timestamps(self, wanted: set[tuple[TopicPartition, int]]) -> None:
        """Fill the cache with the timestamp of the record at each wanted (tp, offset).

        Several groups may wait at different offsets of one partition: one round per
        distinct offset of a partition, every partition of a round in one fetch."""
        todo = sorted(pair for pair in wanted if pair not in self._ts)
        rounds: list[dict[TopicPartition, int]] = []
        for tp, off in todo:
            for r in rounds:
                if tp not in r:
                    r[tp] = off
                    break
            else:
                rounds.append({tp: off})
        for r in rounds:
            await self._peek_round(r)
        if len(self._ts) > 200_000:  # offsets only move forward; old entries are dead
            self._ts.clear()

    async def _peek_round(self, todo: dict[TopicPartition, int]) -> None:
        self._peek.assign(list(todo))
        for tp, off in todo.items():
            self._peek.seek(tp, off)
        deadline = time.monotonic() + 5
        while todo and time.monotonic() < deadline:
            fetched = await self._peek.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in fetched.items():
                if tp in todo and records:
                    self._ts[(tp, todo.pop(tp))] = records[0].timestamp / 1000
                    self._peek.pause(tp)

    async def collect(self) -> Snapshot:
        started = time.monotonic()
        now = time.time()
        groups = await self._groups()
        committed: dict[str, dict[TopicPartition, int | None]] = {}
        offsets = await asyncio.gather(
            *(self._admin.list_consumer_group_offsets(g) for g in groups))
        existing = set(await self._admin.list_topics())
        for g, offs in zip(groups, offsets, strict=True):
            committed[g] = {tp: (m.offset if m.offset >= 0 else None)
                            for tp, m in offs.items() if tp.topic in existing}
        dlq_topics = sorted(t for t in existing if t.endswith(".dlq"))
        described = await self._admin.describe_topics(dlq_topics) if dlq_topics else []
        dlq_tps = [TopicPartition(t["topic"], p["partition"]) for t in described
                   for p in t["partitions"]]
        all_tps = sorted({tp for c in committed.values() for tp in c} | set(dlq_tps))
        # Tell the metadata client every topic up front: for a topic it has not seen,
        # end_offsets() otherwise waits 100 ms and retries, once per topic.
        await self._meta._client.set_topics(sorted({tp.topic for tp in all_tps}))
        ends = await self._meta.end_offsets(all_tps) if all_tps else {}
        starts = await self._meta.beginning_offsets(all_tps) if all_tps else {}
        wanted = {(tp, off) for c in committed.values() for tp, off in c.items()
                  if off is not None and starts[tp] <= off < ends[tp]}
        await self._timestamps(wanted)
        result = []
        for g, (state, members) in groups.items():
            glag = GroupLag(g, state, members)
            for tp, off in sorted(committed.get(g, {}).items()):
                sample = Sample(now, off, starts[tp], ends[tp], self._ts.get((tp, off or 0)))
                hist = self.history.setdefault((g, tp), PartitionHistory())
                hist.add(sample)
                status = partition_status(hist.window(self.window_seconds), self.stall_seconds)
                glag.partitions.append(PartitionLag(tp.topic, tp.partition, sample, status))
            glag.status = worst([p.status for p in glag.partitions])
            result.append(glag)
        dlq: dict[str, int] = {}
        for tp in dlq_tps:
            dlq[tp.topic] = dlq.get(tp.topic, 0) + ends[tp] - starts[tp]
        return Snapshot(now, result, dlq, time.monotonic() - started)
