"""Orphans of the catalogue's references (``references:`` in a sink spec): rows whose
reference columns are all set but name no row of the target sink.

Not a foreign key. Records of different topics are consumed by different workers at
their own pace, so a causal edge may be stored before the memories it joins; a foreign
key would reject that legitimate order (or stall the worker). The rows are stored, and
this after-the-fact check counts what is dangling: an orphan that lasts is a parent that
never came or was deleted (docs/references.md). Used by `sinkfleet stats` and the lag
exporter's gauge.

One anti-join per reference: a scan of the referring table, a primary-key probe of the
target per row. Bounded by a statement timeout; a reference that times out is reported
as unknown, never as zero.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.sink.postgres.ddl import quote_ident as q

ORPHAN_TIMEOUT_S = 60


@dataclass
class OrphanCount:
    sink: str
    columns: list[str]
    target: str
    orphans: int | None = None  # None: unknown (no table yet, or the count timed out)
    oldest: dt.datetime | None = None  # the arrival of the oldest orphan
    arrived_by: str | None = None  # the column ``oldest`` is measured by
    note: str | None = None

    @property
    def name(self) -> str:
        """``sink(col, …) → target``: the reference as the CLI and the gauge label it."""
        return f"{self.sink}({', '.join(self.columns)}) → {self.target}"

    def age_seconds(self, now: float | None = None) -> float | None:
        if self.oldest is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - self.oldest.timestamp())

    def as_dict(self) -> dict[str, Any]:
        return {"sink": self.sink, "columns": self.columns, "target": self.target,
                "orphans": self.orphans,
                "oldest": self.oldest.isoformat() if self.oldest else None,
                "oldest_by": self.arrived_by, "note": self.note}


def arrival_column(sink: Sink) -> str | None:
    """The column that dates a row's arrival: the first ``default: now()`` column (set
    when the row is stored), else the sink's time column (when it happened)."""
    for col in sink.columns:
        if col.default == "now()" and col.pg_type == "timestamptz":
            return col.name
    return sink.spec.time_column


def orphan_sql(catalogue: Catalogue, sink: Sink, index: int) -> str:
    """Count and oldest arrival of the orphans of ``sink``'s reference ``index``."""
    ref = sink.spec.references[index]
    target = catalogue.sinks[ref.sink]
    child, parent = sink.spec.qualified_table, target.spec.qualified_table
    present = " AND ".join(f"c.{q(col)} IS NOT NULL" for col in ref.columns)
    joined = " AND ".join(f"p.{q(pid)} = c.{q(col)}"
                          for col, pid in zip(ref.columns, target.spec.id, strict=True))
    arrived = arrival_column(sink)
    oldest = f"min(c.{q(arrived)})" if arrived else "NULL::timestamptz"
    return (f"SELECT count(*) AS n, {oldest} AS oldest FROM {child} c WHERE {present}"
            f" AND NOT EXISTS (SELECT FROM {parent} p WHERE {joined})")


async def orphan_counts(conn: asyncpg.Connection, catalogue: Catalogue,
                        sinks: list[str] | None = None, *,
                        timeout_s: float = ORPHAN_TIMEOUT_S) -> list[OrphanCount]:
    """One ``OrphanCount`` per reference of ``sinks`` (default: every sink)."""
    out = []
    for name in sorted(catalogue.sinks if sinks is None else sinks):
        sink = catalogue.sinks[name]
        for i, ref in enumerate(sink.spec.references):
            count = OrphanCount(name, list(ref.columns), ref.sink,
                                arrived_by=arrival_column(sink))
            out.append(count)
            tables = [sink.spec.qualified_table,
                      catalogue.sinks[ref.sink].spec.qualified_table]
            missing = await conn.fetchval(
                "SELECT bool_or(to_regclass(t) IS NULL) FROM unnest($1::text[]) t", tables)
            if missing:
                count.note = "no table yet (db migrate?)"
                continue
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"SET LOCAL statement_timeout = '{int(timeout_s * 1000)}ms'")
                    row = await conn.fetchrow(orphan_sql(catalogue, sink, i))
            except asyncpg.QueryCanceledError:
                count.note = f"gave up after {timeout_s:g}s"
                continue
            count.orphans, count.oldest = row["n"], row["oldest"]
    return out
