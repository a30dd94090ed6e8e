"""Where consumer groups are in Kafka: each partition's log start and end and the group's
commits, beside the offsets stored in PostgreSQL (read by sink/postgres/offsets.py, the
truth a worker seeks to).

Read by `sinkfleet backup` (the offsets snapshot), `restore` (what the workers will
re-read) and `stats` (lag per group). Topics missing from the cluster are reported as
such (``log_end`` None), never as an error: a backup must not fail because a topic is gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs


@dataclass
class PartitionPosition:
    """A group's position in one partition, as PostgreSQL and Kafka see it."""

    group: str
    topic: str
    partition: int
    stored: int | None  # PostgreSQL's next offset
    committed: int | None  # Kafka's commit
    log_start: int | None  # None: the topic is not on the cluster
    log_end: int | None

    @property
    def position(self) -> int | None:
        """Where a worker starts reading: the stored offset, else the Kafka commit, else
        the log start (the workers' ``auto_offset_reset`` is earliest)."""
        for value in (self.stored, self.committed, self.log_start):
            if value is not None:
                return value
        return None

    @property
    def lag(self) -> int | None:
        """Records between the position and the log end (None: unknown)."""
        pos = self.position
        if self.log_end is None or pos is None:
            return None
        return max(0, self.log_end - max(pos, self.log_start or 0))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag}


class KafkaPositions:
    """Log bounds and group commits, read-only. ``async with KafkaPositions(s) as k:``"""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kw = {**kafka_client_kwargs(settings), "request_timeout_ms": 15_000}
        self._admin = AIOKafkaAdminClient(**kw)
        self._meta = AIOKafkaConsumer(enable_auto_commit=False, **kw)

    async def __aenter__(self) -> KafkaPositions:
        try:
            await self._admin.start()
            await self._meta.start()
        except KafkaError as exc:
            await self._close()
            raise SinkfleetError(await explain_kafka_error(self.settings, exc)) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        await self._meta.stop()
        await self._admin.close()

    async def cluster_id(self) -> str | None:
        described = await self._admin.describe_cluster()
        return described.get("cluster_id")

    async def bounds(self, topics: Iterable[str]
                     ) -> dict[TopicPartition, tuple[int, int]]:
        """(log start, log end) of every partition of the topics that exist."""
        existing = set(await self._admin.list_topics())
        names = sorted(set(topics) & existing)
        if not names:
            return {}
        tps = [TopicPartition(t["topic"], p["partition"])
               for t in await self._admin.describe_topics(names) for p in t["partitions"]]
        # Announce every topic at once (else end_offsets waits and retries per topic).
        await self._meta._client.set_topics(names)
        starts = await self._meta.beginning_offsets(tps)
        ends = await self._meta.end_offsets(tps)
        return {tp: (starts[tp], ends[tp]) for tp in tps}

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        found = await self._admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}

    async def positions(self, wanted: Mapping[str, Iterable[str]],
                        stored: Mapping[tuple[str, str, int], int]) -> list[PartitionPosition]:
        """Every partition of each group's topics (and every stored offset, keyed by
        (group, topic, partition), even of a topic the cluster no longer has), sorted by
        group, topic, partition."""
        topics = {t for ts in wanted.values() for t in ts}
        bounds = await self.bounds(topics)
        by_key = dict(stored)
        out: dict[tuple[str, str, int], PartitionPosition] = {}
        for group in sorted(wanted):
            commits = await self.committed(group)
            keys = {(group, tp.topic, tp.partition) for tp in bounds if tp.topic in wanted[group]}
            keys |= {k for k in by_key if k[0] == group}
            for key in keys:
                tp = TopicPartition(key[1], key[2])
                start, end = bounds.get(tp, (None, None))
                out[key] = PartitionPosition(group, tp.topic, tp.partition, by_key.get(key),
                                             commits.get(tp), start, end)
        return [out[k] for k in sorted(out)]
