"""What each rolled-up record family contributes to its windows, and where it is stored.

* ``learning_metric`` → ``sinkfleet.rollup_metric_parts`` (view ``rollup_metrics``): per
  ``metric_type``, a record count (``field = '*'``) and, for every numeric top-level field
  of ``metric_data``, count, sum, min and max (avg = sum / count in the view).
* ``worker_event`` → ``sinkfleet.rollup_worker_event_parts`` (view
  ``rollup_worker_events``): event counts per ``worker_id``, ``job_id`` and ``event_type``.

Event time is the record's own time field (``ts``, ``occurred_at``), never its arrival.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sinkfleet.rollups.windows import Dims

RECORDS = "*"  # the learning-metric "field" that counts records


class Unusable(ValueError):
    """A record that decodes but cannot be rolled up (its detail row is refused too)."""


@dataclass(frozen=True)
class Family:
    """A rolled-up family: its time field, its contributions, its summary table."""

    name: str
    time_field: str
    contributions: Callable[[dict[str, Any]], list[tuple[Dims, Decimal | None]]]
    table: str  # sinkfleet.<table>: one row per window, key and source partition
    dims: tuple[str, ...]  # key columns, in the order of Dims
    values: bool  # whether the table has sum/min/max (else counts only)
    # windows kept (windows.GRAINS: minute, hour, day, week); the summary tables accept
    # all four. Day and week windows stay open (in the changelog) until they close.
    grains: tuple[str, ...] = ("minute", "hour")


def _numbers(text: str) -> dict[str, Decimal]:
    """Numeric top-level fields of a JSON object, exact (as PostgreSQL's jsonb numerics)."""
    try:
        data = json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise Unusable(f"metric_data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Unusable("metric_data is not a JSON object")
    # bool is an int in Python but not a number in JSON; NaN/Infinity are floats here
    # (parse_constant) and not valid jsonb: neither is a value.
    return {k: Decimal(v) if isinstance(v, int) else v for k, v in data.items()
            if isinstance(v, Decimal | int) and not isinstance(v, bool)}


def learning_metric(record: dict[str, Any]) -> list[tuple[Dims, Decimal | None]]:
    kind = record["metric_type"]
    out: list[tuple[Dims, Decimal | None]] = [((kind, RECORDS), None)]
    out.extend(((kind, name), value)
               for name, value in sorted(_numbers(record["metric_data"]).items()))
    return out


def worker_event(record: dict[str, Any]) -> list[tuple[Dims, Decimal | None]]:
    return [((record["worker_id"], record["job_id"] or "", record["event_type"]), None)]


FAMILIES: dict[str, Family] = {
    "learning_metric": Family("learning_metric", "ts", learning_metric,
                              "rollup_metric_parts", ("metric_type", "field"), True),
    "worker_event": Family("worker_event", "occurred_at", worker_event,
                           "rollup_worker_event_parts", ("worker_id", "job_id",
                                                         "event_type"), False),
}
