"""Retention plans (pure): which time partitions of a sink go, and how.

A partition goes when it lies *entirely* before the horizon, now - detail: its upper
bound ≤ horizon. Its summary is written (``summary:`` tier) and it is archived when
the sink asks (``archive:``), then it is detached and dropped. A sink whose detail is
kept forever drops nothing; with ``archive: true`` each closed partition is copied to
the archive (again when its row count changed since). Summary windows and archive
files older than their tier's ``keep`` go too (the horizons; the runner acts).

A partition restored from the archive less than ``keep`` ago
is held (the operator brought it back to read it). The DEFAULT partition is never
dropped: rows in it older than the horizon are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sinkfleet.catalogue import Sink
from sinkfleet.ops.lifecycle.partitions import Partition

Action = Literal["archive+drop", "drop", "summary+drop", "summary+archive+drop", "archive",
                 "hold", "skip"]


@dataclass(frozen=True)
class Step:
    sink: str
    partition: str
    start: datetime
    end: datetime
    bytes: int
    action: Action
    rows: int | None = None  # counted by the caller (I/O)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out


@dataclass
class SinkPlan:
    sink: str
    table: str  # schema.table
    keep: str
    archive: bool
    horizon: datetime
    steps: list[Step] = field(default_factory=list)
    kept: int = 0  # partitions within keep
    stranded_rows: int = 0  # DEFAULT-partition rows older than the horizon
    stranded_oldest: datetime | None = None
    summary_horizon: datetime | None = None  # summary windows ending by then go
    archive_horizon: datetime | None = None  # archive files of data ending by then go
    summary_expiring: int = 0  # summary part rows past summary_horizon (counted by I/O)
    archives_expiring: list[tuple[int, str]] = field(default_factory=list)  # (id, path)

    @property
    def acting(self) -> list[Step]:
        return [s for s in self.steps if s.action not in ("hold", "skip")]

    def as_dict(self) -> dict[str, Any]:
        return {"sink": self.sink, "table": self.table, "keep": self.keep,
                "archive": self.archive, "horizon": self.horizon.isoformat(),
                "kept": self.kept, "steps": [s.as_dict() for s in self.steps],
                "stranded_rows": self.stranded_rows,
                "stranded_oldest": self.stranded_oldest.isoformat()
                if self.stranded_oldest else None,
                "summary_horizon": _iso(self.summary_horizon),
                "summary_expiring": self.summary_expiring,
                "archive_horizon": _iso(self.archive_horizon),
                "archives_expiring": [path for _, path in self.archives_expiring]}


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def horizon(now: datetime, keep: timedelta) -> datetime:
    return now - keep


def plan_sink(sink: Sink, partitions: Sequence[Partition], now: datetime,
              restored: Mapping[str, datetime] | None = None,
              pending: Mapping[str, tuple[datetime, datetime]] | None = None) -> SinkPlan:
    """The plan for one sink with a ``retention:`` policy.

    ``restored``: partition name → when `archive restore` last filled it.
    ``pending``: partitions an interrupted run detached but did not drop (name →
    bounds); they are finished first, whatever their age.
    """
    spec = sink.spec
    policy = spec.retention
    assert policy is not None, f"sink {spec.name} has no retention policy"
    keep = policy.detail_delta
    if keep is None:
        return _plan_forever(sink, partitions, now)
    cut = horizon(now, keep)
    plan = SinkPlan(spec.name, f"{spec.db_schema}.{spec.table}", policy.describe(),
                    policy.archives, cut)
    if policy.summary is not None and policy.summary.keep_delta is not None:
        plan.summary_horizon = now - policy.summary.keep_delta
    if policy.archive_keep is not None:
        plan.archive_horizon = now - policy.archive_keep
    go = drop_action(policy.summary is not None, policy.archives)
    pending = dict(pending or {})
    for part in partitions:
        if part.is_default or part.start is None or part.end is None:
            continue
        if part.name in pending:
            del pending[part.name]
            plan.steps.append(Step(spec.name, part.name, part.start, part.end, part.bytes, go,
                                   note="left by an interrupted run"))
            continue
        if part.end > cut:
            plan.kept += 1
            continue
        if part.schema and part.schema != spec.db_schema:
            plan.steps.append(Step(spec.name, part.name, part.start, part.end, part.bytes,
                                   "skip", note=f"in schema {part.schema}, not"
                                                f" {spec.db_schema}: left alone"))
            continue
        back = (restored or {}).get(part.name)
        if back is not None and back + keep > now:
            plan.steps.append(Step(spec.name, part.name, part.start, part.end, part.bytes,
                                   "hold", note=f"restored {back:%Y-%m-%d %H:%M}Z, kept until"
                                                f" {back + keep:%Y-%m-%d %H:%M}Z"))
            continue
        plan.steps.append(Step(spec.name, part.name, part.start, part.end, part.bytes, go))
    for name, (start, end) in sorted(pending.items()):  # detached already
        plan.steps.append(Step(spec.name, name, start, end, 0, go,
                               note="detached by an interrupted run"))
    return plan


def drop_action(summary: bool, archive: bool) -> Action:
    """What retiring a partition of a sink with these tiers does (shown in the plan)."""
    actions: dict[tuple[bool, bool], Action] = {
        (False, False): "drop", (False, True): "archive+drop", (True, False): "summary+drop",
        (True, True): "summary+archive+drop"}
    return actions[summary, archive]


def _plan_forever(sink: Sink, partitions: Sequence[Partition], now: datetime) -> SinkPlan:
    """Detail kept forever: nothing is dropped. With an archive tier, every closed
    partition (its end ≤ now) is a candidate copy; the caller keeps those whose row count
    differs from their last archive (or that have none)."""
    spec = sink.spec
    policy = spec.retention
    assert policy is not None
    plan = SinkPlan(spec.name, f"{spec.db_schema}.{spec.table}", policy.describe(),
                    policy.archives, now)
    for part in partitions:
        if part.is_default or part.start is None or part.end is None:
            continue
        if policy.archives and part.end <= now and part.schema in ("", spec.db_schema):
            plan.steps.append(Step(spec.name, part.name, part.start, part.end, part.bytes,
                                   "archive", note="copy: detail is kept forever"))
        else:
            plan.kept += 1
    return plan
