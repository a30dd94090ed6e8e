"""What the workers will do after a restore, per partition and per group (pure logic).

The restored ``sinkfleet.consumer_offsets`` are the truth: on assignment a worker seeks
to them. Kafka usually holds records newer than the backup — they are re-read, and the
idempotent sinks (and version-guarded state sinks) make that safe. If Kafka's retention
already deleted some of them (the log start is past the restored offset), those records
are gone from Kafka: the rows they made exist only in the database the backup replaced
(or in a cold archive).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sinkfleet.kafka.positions import PartitionPosition

REREAD, LOST, AHEAD, UNSTORED, NO_TOPIC, CURRENT = (
    "re-read", "lost to retention", "ahead of Kafka", "no stored offset", "topic missing",
    "current")


@dataclass(frozen=True)
class PartitionAdvice:
    position: PartitionPosition
    status: str
    reread: int  # records the workers will read again (or for the first time)
    lost: int  # records newer than the backup that Kafka no longer has

    def as_dict(self) -> dict[str, Any]:
        return {**self.position.as_dict(), "status": self.status, "reread": self.reread,
                "lost": self.lost}


def advise(p: PartitionPosition) -> PartitionAdvice:
    """One partition: where its worker will start and what that costs."""
    if p.log_start is None or p.log_end is None:
        return PartitionAdvice(p, NO_TOPIC, 0, 0)
    if p.stored is None:  # nothing of it was stored when the backup was taken
        return PartitionAdvice(p, UNSTORED, p.log_end - p.log_start, 0)
    if p.stored > p.log_end:  # the topic was recreated or truncated since
        return PartitionAdvice(p, AHEAD, 0, 0)
    if p.stored < p.log_start:
        return PartitionAdvice(p, LOST, p.log_end - p.log_start, p.log_start - p.stored)
    if p.stored == p.log_end:
        return PartitionAdvice(p, CURRENT, 0, 0)
    return PartitionAdvice(p, REREAD, p.log_end - p.stored, 0)


@dataclass
class GroupAdvice:
    group: str
    partitions: list[PartitionAdvice] = field(default_factory=list)

    def _count(self, status: str) -> int:
        return sum(1 for a in self.partitions if a.status == status)

    @property
    def reread(self) -> int:
        return sum(a.reread for a in self.partitions)

    @property
    def lost(self) -> int:
        return sum(a.lost for a in self.partitions)

    @property
    def ahead(self) -> int:
        return self._count(AHEAD)

    @property
    def unstored(self) -> int:
        return self._count(UNSTORED)

    @property
    def missing_topics(self) -> list[str]:
        return sorted({a.position.topic for a in self.partitions if a.status == NO_TOPIC})

    @property
    def kafka_differs(self) -> int:
        """Partitions whose Kafka commit is not the restored offset (lag tools show the
        commit until the workers commit again)."""
        return sum(1 for a in self.partitions
                   if a.position.stored is not None and a.position.committed is not None
                   and a.position.committed != a.position.stored)

    def notes(self) -> list[str]:
        out = []
        newer = sum(a.reread for a in self.partitions if a.status in (REREAD, LOST))
        if newer:
            out.append(f"{newer:,} record(s) newer than the backup will be re-read: the"
                       " sinks are idempotent, so rows already present stay as they are")
        if self.lost:
            out.append(f"{self.lost:,} record(s) newer than the backup were deleted by"
                       " Kafka's retention: their rows are not in the restored database"
                       " (restore them from an archive, or accept the gap)")
        if self.unstored:
            fresh = sum(a.reread for a in self.partitions if a.status == UNSTORED)
            out.append(f"{self.unstored} partition(s) had no stored offset: their workers"
                       f" read them from the log start ({fresh:,} records), not from a"
                       " Kafka commit")
        if self.ahead:
            out.append(f"{self.ahead} partition(s) are behind the backup's offsets (topic"
                       " recreated or truncated): workers reset to the earliest offset;"
                       " check with `sinkfleet replay plan --group"
                       f" {self.group} --to-earliest`")
        if self.missing_topics:
            out.append(f"topic(s) not on the cluster: {', '.join(self.missing_topics)}")
        if self.kafka_differs:
            out.append(f"{self.kafka_differs} Kafka commit(s) differ from the restored"
                       " offsets: lag tools show them until the workers commit")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "reread": self.reread, "lost": self.lost,
                "ahead": self.ahead, "unstored": self.unstored,
                "missing_topics": self.missing_topics, "kafka_differs": self.kafka_differs,
                "notes": self.notes(), "partitions": [a.as_dict() for a in self.partitions]}


def advise_groups(positions: Iterable[PartitionPosition]) -> list[GroupAdvice]:
    groups: dict[str, GroupAdvice] = {}
    for p in positions:
        groups.setdefault(p.group, GroupAdvice(p.group)).partitions.append(advise(p))
    return [groups[g] for g in sorted(groups)]
