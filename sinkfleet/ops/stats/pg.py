"""PostgreSQL side of `sinkfleet stats`: rows, bytes, partitions and time range per sink.

Rows are PostgreSQL's statistics unless ``exact`` (``count(*)``, a full scan): the
statistics collector's live-tuple count, else the planner's ``reltuples``, summed over
the leaf partitions (a table with data but no statistics yet is counted if small, else
its rows are unknown). Bytes are ``pg_total_relation_size`` (heap, indexes, TOAST) summed
over the partition tree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.ops.stats.sizes import Component, components
from sinkfleet.sink.postgres.ddl import quote_ident

SMALL_TABLE_BYTES = 64 * 2**20  # without statistics, tables up to this size are counted
TIME_RANGE_TIMEOUT_S = 120  # min/max of an unindexed time column is a full scan

_SIZES = (
    # pg_partition_tree() has no rows for a table that is not partitioned: use the table.
    "WITH tree AS (SELECT relid, isleaf, level FROM pg_partition_tree($1::regclass)"
    " UNION ALL SELECT $1::regclass, true, 0"
    " WHERE NOT EXISTS (SELECT FROM pg_partition_tree($1::regclass)))"
    " SELECT count(*) FILTER (WHERE t.isleaf AND t.level > 0) AS partitions,"
    " coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint AS bytes,"
    " coalesce(sum(CASE WHEN coalesce(s.n_live_tup, 0) > 0 THEN s.n_live_tup"
    "   ELSE greatest(c.reltuples, 0) END) FILTER (WHERE t.isleaf), 0)::bigint AS estimate,"
    " coalesce(sum(pg_relation_size(t.relid)), 0)::bigint AS heap"
    " FROM tree t JOIN pg_class c ON c.oid = t.relid"
    " LEFT JOIN pg_stat_all_tables s ON s.relid = t.relid")


@dataclass
class TableStats:
    table: str  # schema.table
    exists: bool = True
    rows: int | None = None
    exact: bool = False
    bytes: int | None = None
    partitions: int = 0
    parts: list[Component] | None = None  # heap, maps, TOAST, each index (sizes.py)

    @property
    def bytes_per_row(self) -> float | None:
        if not self.rows or self.bytes is None:
            return None
        return self.bytes / self.rows

    def as_dict(self) -> dict[str, Any]:
        bpr = self.bytes_per_row
        return {"table": self.table, "exists": self.exists, "rows": self.rows,
                "rows_exact": self.exact, "bytes": self.bytes,
                "bytes_per_row": None if bpr is None else round(bpr, 1),
                "partitions": self.partitions,
                "components": None if self.parts is None else [
                    {"name": p.name, "bytes": p.bytes,
                     "bytes_per_row": round(p.bytes / self.rows, 1) if self.rows else None}
                    for p in self.parts]}


@dataclass
class SinkStats:
    sink: str
    family: str
    mode: str
    main: TableStats
    history: TableStats | None = None
    time_column: str | None = None  # what oldest/newest are measured by
    oldest: dt.date | None = None  # a datetime, or a date for a date column
    newest: dt.date | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"sink": self.sink, "family": self.family, "mode": self.mode,
                **self.main.as_dict(),
                "history": self.history.as_dict() if self.history else None,
                "time_column": self.time_column,
                "oldest": self.oldest.isoformat() if self.oldest else None,
                "newest": self.newest.isoformat() if self.newest else None,
                "note": self.note}


def time_source(sink: Sink) -> tuple[str, str] | None:
    """(table, column) that dates a sink's records: its time_column, else ingested_at,
    else (state sinks) the history's recorded_at."""
    spec = sink.spec
    names = {c.name for c in sink.columns}
    if spec.time_column:
        return spec.table, spec.time_column
    if "ingested_at" in names:
        return spec.table, "ingested_at"
    if spec.state is not None:
        return spec.history_table, "recorded_at"
    return None


async def table_stats(conn: asyncpg.Connection, schema: str, table: str, exact: bool
                      ) -> TableStats:
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    stats = TableStats(f"{schema}.{table}")
    if await conn.fetchval("SELECT to_regclass($1)", qualified) is None:
        stats.exists = False
        return stats
    row = await conn.fetchrow(_SIZES, qualified)
    stats.partitions, stats.bytes = row["partitions"], row["bytes"]
    stats.parts = await components(conn, qualified)
    # No statistics yet (never analysed, collector not flushed) but data on disk: a small
    # table is counted, a large one is left unknown rather than shown as empty.
    unknown = row["estimate"] == 0 and row["heap"] > 0
    if exact or (unknown and row["heap"] <= SMALL_TABLE_BYTES):
        stats.rows, stats.exact = await conn.fetchval(f"SELECT count(*) FROM {qualified}"), True
    elif not unknown:
        stats.rows = row["estimate"]
    return stats


async def _time_range(conn: asyncpg.Connection, schema: str, table: str, column: str
                      ) -> tuple[Any, Any]:
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    col = quote_ident(column)
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = '{TIME_RANGE_TIMEOUT_S}s'")
        row = await conn.fetchrow(f"SELECT min({col}) AS lo, max({col}) AS hi FROM {qualified}")
    return row["lo"], row["hi"]


async def sink_stats(conn: asyncpg.Connection, sink: Sink, exact: bool) -> SinkStats:
    spec = sink.spec
    out = SinkStats(spec.name, sink.topic.schema_, spec.mode,
                    await table_stats(conn, spec.db_schema, spec.table, exact))
    if spec.state is not None:
        out.history = await table_stats(conn, spec.db_schema, spec.history_table, exact)
    source = time_source(sink)
    if source is None or not out.main.exists:
        return out
    table, column = source
    out.time_column = column if table == spec.table else f"{table}.{column}"
    if table != spec.table and not (out.history and out.history.exists):
        return out
    try:
        lo, hi = await _time_range(conn, spec.db_schema, table, column)
    except asyncpg.QueryCanceledError:
        out.note = f"oldest/newest: gave up after {TIME_RANGE_TIMEOUT_S}s"
        return out
    if isinstance(lo, dt.date):
        out.oldest, out.newest = lo, hi
    elif lo is not None:
        out.note = f"{column} is not a timestamp ({type(lo).__name__})"
    return out
