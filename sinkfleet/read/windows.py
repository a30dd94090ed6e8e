"""A sink's summary windows across its retention tiers: one answer for "per day, the
count and sum of … over the last year", whether the days are still detail rows or only
their summary (docs/retention.md, "Summary").

    sql, args = SinkWindows(SinkQuery(sink)).plan([Filter("verdict", "=", "pass")],
                                                  start=year_ago, end=now)

Each window of the sink's ``summary.grain`` (UTC; weeks start on Monday) and each group
of its ``summary.by`` columns gives ``rows`` and, per ``summary.values`` column,
``<v>_count``, ``<v>_sum`` (exact numeric), ``<v>_min``, ``<v>_max`` and ``<v>_avg``. A
window adds two sources that never overlap:

* the detail rows still in the table's attached partitions, grouped as retention would;
* the summary parts of partitions no longer attached. A partition is summarised once
  while still attached and again in the transaction that drops it, so a part whose
  partition is still attached is skipped (its rows are counted from the detail).

Filters are the query model's, on ``by`` columns only (they are all a summary keeps);
the tenant view applies to both sources. The range is widened to whole windows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sinkfleet.catalogue.retention import SummarySpec, summary_stat_column
from sinkfleet.read.query import MAX_LIMIT, Filter, QueryError, SinkQuery, _Built
from sinkfleet.read.sql import parse_time
from sinkfleet.sink.postgres.ddl import floor_time, next_bound
from sinkfleet.sink.postgres.ddl import quote_ident as q
from sinkfleet.sink.postgres.summary_sql import FLOATS, parts_table
from sinkfleet.sink.postgres.tenancy import tenant_parts_view

STATS = ("count", "sum", "min", "max")


def window_range(start: Any, end: Any, grain: str, max_windows: int = MAX_LIMIT
                 ) -> tuple[dt.datetime, dt.datetime, int]:
    """``[start, end)`` widened to whole windows: (first window's start, the end of the
    last, how many windows). Windows are the partitions' (``floor_time``: as PostgreSQL's
    ``date_trunc(grain, t, 'UTC')``, weeks from Monday); the catalogue checks the grain."""
    lo = floor_time(parse_time(start, "start"), grain)
    end_t = parse_time(end, "end")
    if end_t <= lo:
        raise QueryError(f"end ({end_t.isoformat()}) must come after start"
                         f" ({lo.isoformat()})")
    try:
        hi = floor_time(end_t, grain)
        if hi < end_t:
            hi = next_bound(hi, grain)
        n, at = 0, lo
        while at < hi:
            n += 1
            if n > max_windows:
                raise QueryError(f"{start} to {end} spans more than {max_windows:,}"
                                 f" {grain} windows: ask for a shorter range")
            at = next_bound(at, grain)
    except (OverflowError, ValueError):  # a window past year 9999
        raise QueryError(f"end {end_t.isoformat()}: its {grain} window ends after the"
                         " last time there is (year 9999)") from None
    return lo, hi, n


class SinkWindows:
    """Plans window reads of one sink with a summary tier (``planner``: its SinkQuery,
    which carries the tenant)."""

    def __init__(self, planner: SinkQuery) -> None:
        spec = planner.spec
        policy = spec.retention
        if policy is None or policy.summary is None or spec.time_column is None:
            raise QueryError(f"sink {spec.name!r} keeps no summary tier (retention.summary"
                             " in its spec), so it has no windows: summary() counts any"
                             " sink's rows")
        self.planner = planner
        self.summary: SummarySpec = policy.summary

    def plan(self, filters: Sequence[Filter], *, start: Any, end: Any
             ) -> tuple[str, list[Any]]:
        p, s = self.planner, self.summary
        lo, hi, _ = window_range(start, end, s.grain)
        built = _Built()
        kept = set(s.by)
        for f in filters:
            if not isinstance(f, Filter):
                raise QueryError(f"filters must be Filter(column, op, value), got {f!r}")
            if not isinstance(f.column, str) or not set(f.column.split("+")) <= kept:
                raise QueryError(
                    f"filter on {f.column!r}: a summary keeps only its by columns"
                    f" ({', '.join(s.by) or 'none'}) beside the windows; filter on those,"
                    " or read the detail rows with query()")
            p._filter(f, built)
        where = "".join(f" AND {c}" for c in built.clauses)
        lo_arg, hi_arg = built.bind(lo), built.bind(hi)
        by = [q(c) for c in s.by]
        time = q(p.spec.time_column or "")
        types = p.types
        detail = [f"date_trunc('{s.grain}', {time}, 'UTC') AS window_start", *by,
                  "count(*) AS rows"]
        parts = ["window_start", *by, "rows"]
        final = ["window_start", *by, "sum(rows)::bigint AS rows"]
        for v in s.values:
            n, total, low, high = (q(summary_stat_column(v, k)) for k in STATS)
            col = q(v)
            # a float as its shortest exact text, as retention sums it (extra_float_digits
            # is set to 1 for the read): equal, digit for digit, to the stored parts
            exact = f"{col}::text::numeric" if types[v] in FLOATS else f"{col}::numeric"
            detail += [f"count({col}) AS {n}", f"sum({exact}) AS {total}",
                       f"min({col}) AS {low}", f"max({col}) AS {high}"]
            parts += [n, total, low, high]
            final += [f"sum({n})::bigint AS {n}", f"sum({total}) AS {total}",
                      f"min({low}) AS {low}", f"max({high}) AS {high}",
                      f"sum({total}) / NULLIF(sum({n}), 0) AS"
                      f" {q(summary_stat_column(v, 'avg'))}"]
        group = ", ".join(["1", *by])
        parts_rel = (tenant_parts_view(p.sink) if p.tenant is not None
                     else parts_table(p.sink))
        attached = ("ARRAY(SELECT c.relname::text FROM pg_catalog.pg_inherits i JOIN"
                    " pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE i.inhparent ="
                    f" to_regclass({built.bind(p.spec.qualified_table)}))")
        grain = built.bind(s.grain)
        sql = (f"SELECT {', '.join(final)} FROM ("
               f"SELECT {', '.join(detail)} FROM {p.relation}"
               f" WHERE {time} >= {lo_arg} AND {time} < {hi_arg}{where} GROUP BY {group}"
               f" UNION ALL SELECT {', '.join(parts)} FROM {parts_rel}"
               f" WHERE grain = {grain} AND window_start >= {lo_arg}"
               f" AND window_start < {hi_arg}{where}"
               f" AND detail_partition <> ALL({attached})) w"
               f" GROUP BY {group} ORDER BY {group} LIMIT {built.bind(MAX_LIMIT + 1)}")
        return sql, built.args


__all__ = ["SinkWindows", "window_range"]
