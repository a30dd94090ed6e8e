"""A summary of the rows a query's filters select: how many, and the sum, min, max and
mean of numeric columns — one aggregate row, no rows shipped.

    summary = SinkSummary(SinkQuery(sink)).plan([Filter("source_id", "=", node)], ["weight"])

Seed 001's node statistics are two of them over graph connections (out: ``source_id =
node``, in: ``target_id = node``: the degree is the count, the weight sum the sum). The
filters are the query model's (same operators, same text form, same tenant view), so any
sink and any indexed filter serve; a filter nothing indexes is a scan, as for a query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sinkfleet.read.query import _NUMERIC, Filter, QueryError, SinkQuery, _Built
from sinkfleet.sink.postgres.ddl import quote_ident as q

AGGREGATES = ("sum", "min", "max", "avg")


class SinkSummary:
    def __init__(self, planner: SinkQuery) -> None:
        self.planner = planner

    def plan(self, filters: Sequence[Filter], of: Sequence[str] = ()) -> tuple[str, list[Any]]:
        """SELECT text and bound values: ``rows`` and ``<agg>_<column>`` for ``of``."""
        p = self.planner
        if isinstance(of, str):
            raise QueryError("of must be a list of column names")
        built = _Built()
        for f in filters:
            p._filter(f, built)
        select = ["count(*) AS rows"]
        for name in dict.fromkeys(of):
            p.column(name, "summary")
            if p.types[name] not in _NUMERIC:
                raise QueryError(f"column {name!r} is {p.types[name]}: a summary sums"
                                 " numeric columns only")
            select += [f"{agg}({q(name)}) AS {q(f'{agg}_{name}')}" for agg in AGGREGATES]
        where = f" WHERE {' AND '.join(built.clauses)}" if built.clauses else ""
        return f"SELECT {', '.join(select)} FROM {p.relation}{where}", built.args
