"""`sinkfleet stats`: one report over PostgreSQL (per sink), Kafka (per group) and Redis
(per sink prefix). PostgreSQL must answer; Kafka or Redis being down is reported in the
report, not raised, so the storage figures are there when they matter most."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.positions import KafkaPositions, PartitionPosition
from sinkfleet.ops.stats.pg import SinkStats, sink_stats
from sinkfleet.ops.stats.redis import RedisStats, redis_stats
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.offsets import StoredOffset, stored_offsets
from sinkfleet.sink.postgres.references import OrphanCount, orphan_counts


@dataclass
class GroupStats:
    group: str
    worker: str
    topics: list[str]
    partitions: list[PartitionPosition] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(p.stored or 0 for p in self.partitions)

    @property
    def log_end(self) -> int | None:
        ends = [p.log_end for p in self.partitions]
        return None if not ends or None in ends else sum(e or 0 for e in ends)

    @property
    def lag(self) -> int | None:
        lags = [p.lag for p in self.partitions]
        return None if not lags or None in lags else sum(x or 0 for x in lags)

    @property
    def unstored(self) -> int:
        """Partitions with no offset in PostgreSQL (nothing stored from them yet)."""
        return sum(1 for p in self.partitions if p.stored is None)

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "worker": self.worker, "topics": self.topics,
                "stored": self.stored, "log_end": self.log_end, "lag": self.lag,
                "partitions_without_offset": self.unstored,
                "partitions": [p.as_dict() for p in self.partitions]}


@dataclass
class StatsReport:
    database: str
    exact: bool
    sinks: list[SinkStats]
    groups: list[GroupStats]
    kafka_error: str | None
    redis: RedisStats
    seconds: float
    references: list[OrphanCount] = field(default_factory=list)  # docs/references.md

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "rows_exact": self.exact,
                "collect_seconds": round(self.seconds, 3),
                "sinks": [s.as_dict() for s in self.sinks],
                "groups": [g.as_dict() for g in self.groups],
                "kafka_error": self.kafka_error, "redis": self.redis.as_dict(),
                "references": [r.as_dict() for r in self.references]}


async def _groups(settings: Settings, catalogue: Catalogue, stored: list[StoredOffset],
                  sinks: list[str]) -> tuple[list[GroupStats], str | None]:
    groups = [GroupStats(w.group, w.name,
                         sorted({catalogue.sinks[s].topic.name for s in w.sinks}))
              for w in sorted(catalogue.workers.values(), key=lambda w: w.group)
              if set(w.sinks) & set(sinks)]
    if not groups:
        return [], None
    ours = {g.group for g in groups}
    mine = [o for o in stored if o.group in ours]
    try:
        async with KafkaPositions(settings) as kafka:
            positions = await kafka.positions({g.group: set(g.topics) for g in groups},
                                             {o.key(): o.next_offset for o in mine})
    except (SinkfleetError, OSError) as exc:
        return groups, str(exc)
    by_group = {g.group: g for g in groups}
    for p in positions:
        by_group[p.group].partitions.append(p)
    return groups, None


async def collect_stats(settings: Settings, catalogue: Catalogue, *, exact: bool = False,
                        sink: str | None = None, redis_max_keys: int = 1_000_000
                        ) -> StatsReport:
    started = time.monotonic()
    names = sorted(catalogue.sinks)
    if sink is not None:
        if sink not in catalogue.sinks:
            raise SinkfleetError(f"no sink {sink!r} in sinks/ (known: {', '.join(names)})")
        names = [sink]
    async with pg(settings) as conn:
        sinks = [await sink_stats(conn, catalogue.sinks[n], exact) for n in names]
        stored = await stored_offsets(conn)
        references = await orphan_counts(conn, catalogue, names)
    groups, kafka_error = await _groups(settings, catalogue, stored, names)
    redis = await redis_stats(settings, names, max_keys=redis_max_keys)
    return StatsReport(settings.pg_database, exact, sinks, groups, kafka_error, redis,
                       time.monotonic() - started, references)
