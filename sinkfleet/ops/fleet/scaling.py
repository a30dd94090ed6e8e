"""How many workers a group needs: the formula and its inputs' arithmetic, all pure.

    needed = ceil((ingress + lag / drain_seconds) / (per_worker_rate * headroom))

clamped to [1, partitions] (a worker beyond the partition count gets nothing to do).
See docs/scaling.md; ``sinkfleet scale-advice`` measures the inputs (advice.py).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from sinkfleet.errors import ConfigError

HEADROOM = 0.8
DRAIN_SECONDS = 300.0
CONSUMED = "sinkfleet_records_consumed_total"
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Advice:
    workers: int  # the recommendation, in [1, partitions]
    uncapped: int  # ceil(demand / planned capacity per worker), before the clamp
    demand: float  # records/s to absorb: ingress + lag / drain_seconds
    planned_per_worker: float  # per_worker_rate * headroom
    partitions: int
    capped: bool  # the partitions limit the fleet below what the demand asks
    notes: tuple[str, ...] = field(default_factory=tuple)


def workers_needed(*, ingress: float, lag: float, per_worker_rate: float, partitions: int,
                   drain_seconds: float = DRAIN_SECONDS, headroom: float = HEADROOM) -> Advice:
    """Workers to keep up with ``ingress`` and clear ``lag`` within ``drain_seconds``."""
    if partitions < 1:
        raise ConfigError(f"the group's topics have {partitions} partitions; need at least 1")
    if drain_seconds <= 0:
        raise ConfigError(f"drain seconds must be > 0, not {drain_seconds:g}")
    if not 0 < headroom <= 1:
        raise ConfigError(f"headroom must be in (0, 1], not {headroom:g}")
    if ingress < 0 or lag < 0:
        raise ConfigError("ingress and lag cannot be negative")
    demand = ingress + lag / drain_seconds
    planned = per_worker_rate * headroom
    notes: list[str] = []
    if demand == 0:
        uncapped = 0
        notes.append("no records arriving and no lag: the minimum of 1 worker is enough")
    elif per_worker_rate <= 0:
        raise ConfigError(f"per-worker rate must be > 0 records/s, not {per_worker_rate:g}")
    else:
        uncapped = math.ceil(demand / planned - 1e-9)  # 2.0000000001 is 2
    workers = max(1, min(partitions, uncapped))
    capped = uncapped > partitions
    if capped:
        notes.append(f"capped at {partitions} partitions: {uncapped} workers would be needed,"
                     " but workers beyond the partition count sit idle; add partitions to"
                     " scale further")
        spare = partitions * planned - ingress
        if spare <= 0:
            notes.append(f"even {partitions} workers ({partitions * planned:,.0f} records/s"
                         f" planned) cannot keep up with {ingress:,.0f} records/s arriving:"
                         " the lag will grow")
        elif lag:
            notes.append(f"with {partitions} workers the lag clears in about"
                         f" {lag / spare:,.0f}s instead of {drain_seconds:g}s")
    return Advice(workers, uncapped, demand, planned, partitions, capped, tuple(notes))


def cap_at_current(advice: Advice, current: int, per_worker_rate: float) -> Advice:
    """Workers that kept up (no backlog left) were measured at the load they were given,
    a lower bound on what they can do, so the formula always asks for more; what they
    showed is that the current count suffices."""
    if current < 1 or advice.workers <= current:
        return advice
    note = (f"the {current} worker(s) kept up during the window: {per_worker_rate:,.0f}"
            " records/s per worker is the load they were given, not their capacity, so the"
            f" advice stays at {current} (the formula says {advice.workers}); pass"
            " --per-worker-rate to see whether fewer would do")
    return replace(advice, workers=current, notes=(*advice.notes, note))


def rate(before: Mapping[K, int], after: Mapping[K, int], seconds: float) -> float:
    """Records per second from two offset snapshots (keys new in ``after`` count 0)."""
    if seconds <= 0:
        raise ValueError("the window must be longer than 0 seconds")
    return sum(max(0, end - before.get(k, end)) for k, end in after.items()) / seconds


def backlog(ends: Mapping[K, int], starts: Mapping[K, int], stored: Mapping[K, int]) -> int:
    """Records waiting: log end minus the group's position (the log start if it has none
    or points before it, since retention deleted what lay there)."""
    total = 0
    for k, end in ends.items():
        start = starts.get(k, 0)
        total += max(0, end - max(stored.get(k, start), start))
    return total


def counter_increase(before: float, after: float) -> float:
    """Increase of a Prometheus counter; a restarted process starts again from 0."""
    return after - before if after >= before else after


def consumed_total(metrics_text: str, group: str) -> float | None:
    """Sum of ``sinkfleet_records_consumed_total`` for ``group`` in a /metrics page; None
    when the page has no sinkfleet metric of that group at all (not one of its workers)."""
    total, seen = 0.0, False
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.labels.get("group") != group or not sample.name.startswith("sinkfleet_"):
                continue
            seen = True
            if sample.name == CONSUMED:
                total += sample.value
    return total if seen else None
