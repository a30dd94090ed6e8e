"""DDL for sink tables and their time partitions (pure: strings and dates only)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sinkfleet.catalogue import Sink
from sinkfleet.catalogue.models import IDENT_RE


def quote_ident(name: str) -> str:
    """Quote an identifier that already passed the catalogue's strict pattern."""
    if not IDENT_RE.fullmatch(name):
        raise ValueError(f"refusing unsafe SQL identifier {name!r}")
    return f'"{name}"'


def derived_name(*parts: str) -> str:
    """An identifier ≤ 63 bytes built from parts; long ones keep a hash suffix."""
    name = "_".join(parts)
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54]}_{digest}"


def _column_lines(sink: Sink, *, all_nullable_but: frozenset[str] | None = None
                  ) -> list[str]:
    lines = []
    for col in sink.columns:
        line = f"    {quote_ident(col.name)} {col.pg_type}"
        nullable = col.nullable if all_nullable_but is None else col.name not in all_nullable_but
        if not nullable:
            line += " NOT NULL"
        if col.default == "now()":
            line += " DEFAULT now()"
        lines.append(line)
    return lines


# Columns the audit writer adds: the per-tenant hash chain (docs/sink-modes.md).
AUDIT_CHAIN_COLUMNS = ("chain_seq", "prev_hash", "chain_hash")
# Columns of a state sink's history table besides the sink's own.
HISTORY_COLUMNS = ("parent_version", "op", "kafka_partition", "kafka_offset", "recorded_at")


def history_table_sql(sink: Sink) -> list[str]:
    """Every version of every id (and every deletion), with lineage and source offset."""
    spec = sink.spec
    assert spec.state is not None
    table = f"{quote_ident(spec.db_schema)}.{quote_ident(spec.history_table)}"
    keep = frozenset((*spec.id, spec.state.version))
    lines = _column_lines(sink, all_nullable_but=keep)
    key = ", ".join(quote_ident(c) for c in (*spec.id, spec.state.version))
    lines += ["    parent_version bigint",
              "    op text NOT NULL CHECK (op IN ('upsert', 'delete'))",
              "    kafka_partition integer NOT NULL",
              "    kafka_offset bigint NOT NULL",
              "    recorded_at timestamptz NOT NULL DEFAULT now()",
              f"    PRIMARY KEY ({key}, op)",
              "    UNIQUE (kafka_partition, kafka_offset)"]
    return [f"CREATE TABLE {table} (\n" + ",\n".join(lines) + "\n)"]


# Added to every history table by the sink's second migration (a separate migration:
# the first one's text, hence its checksum, must not change for deployed tables).
HISTORY_RANK_COLUMNS = ("produced_at", "content_hash")


def history_rank_sql(sink: Sink) -> str:
    """What same-version conflicts are decided by: the stored content's latest producer
    timestamp and its SHA-256 (NULL on rows recorded before: computed when needed)."""
    spec = sink.spec
    assert spec.state is not None
    table = f"{quote_ident(spec.db_schema)}.{quote_ident(spec.history_table)}"
    return (f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS produced_at timestamptz,"
            " ADD COLUMN IF NOT EXISTS content_hash bytea;\n")


def audit_guard_sql(sink: Sink) -> list[str]:
    """Append-only, enforced by the database: no UPDATE, DELETE or TRUNCATE."""
    spec = sink.spec
    trigger = quote_ident(derived_name(spec.table, "append_only"))
    return [
        "CREATE OR REPLACE FUNCTION sinkfleet.refuse_audit_change() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION"
        " 'audit table %.% is append-only (% refused)', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP"
        " USING ERRCODE = 'insufficient_privilege'; END $$",
        f"CREATE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON {spec.qualified_table}"
        " FOR EACH ROW EXECUTE FUNCTION sinkfleet.refuse_audit_change()",
        f"CREATE TRIGGER {quote_ident(derived_name(spec.table, 'no_truncate'))}"
        f" BEFORE TRUNCATE ON {spec.qualified_table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION sinkfleet.refuse_audit_change()",
    ]


def create_table_sql(sink: Sink, columns: list[str] | None = None) -> str:
    """The sink's table(s); ``columns``: its column definitions, if not the sink's own
    columns (a merge sink's values and states: sinkfleet.sink.postgres.merge_sql)."""
    spec = sink.spec
    lines = _column_lines(sink) if columns is None else list(columns)
    if spec.audit is not None:
        lines += ["    chain_seq bigint NOT NULL", "    prev_hash bytea NOT NULL",
                  "    chain_hash bytea NOT NULL",
                  f"    UNIQUE ({quote_ident(spec.audit.tenant)}, chain_seq)"]
    pk = ", ".join(quote_ident(c) for c in spec.id)
    lines.append(f"    PRIMARY KEY ({pk})")
    sql = f"CREATE TABLE {spec.qualified_table} (\n" + ",\n".join(lines) + "\n)"
    if spec.partitioning is not None:
        assert spec.time_column is not None
        sql += f" PARTITION BY RANGE ({quote_ident(spec.time_column)})"
    statements = [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(spec.db_schema)}", sql]
    if any(index.using == "cube" for index in spec.indexes):
        # contrib, trusted: a database owner may create it (docs/column-types.md)
        statements.insert(0, "CREATE EXTENSION IF NOT EXISTS cube")
    if spec.partitioning is not None:
        default = quote_ident(derived_name(spec.table, "default"))
        statements.append(f"CREATE TABLE {quote_ident(spec.db_schema)}.{default}"
                          f" PARTITION OF {spec.qualified_table} DEFAULT")
    for index in spec.indexes:
        name = quote_ident(derived_name(spec.table, *index.columns, index.using, "idx"))
        cols = ", ".join(quote_ident(c) for c in index.columns)
        method: str = index.using
        if method == "cube":  # the vector as a point: region (<@) and k-NN (<->) scans
            method, cols = "gist", f"cube({cols}::float8[])"
        statements.append(f"CREATE INDEX {name} ON {spec.qualified_table}"
                          f" USING {method} ({cols})")
    if spec.state is not None:
        statements += history_table_sql(sink)
    if spec.audit is not None:
        statements += audit_guard_sql(sink)
    return ";\n".join(statements) + ";\n"


_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


def floor_time(ts: datetime, interval: str) -> datetime:
    ts = ts.astimezone(UTC)
    if interval == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_bound(start: datetime, interval: str) -> datetime:
    if interval in _STEP:
        return start + _STEP[interval]
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month)


def _prev_bound(start: datetime, interval: str) -> datetime:
    if interval in _STEP:
        return start - _STEP[interval]
    year, month = (start.year - 1, 12) if start.month == 1 else (start.year, start.month - 1)
    return start.replace(year=year, month=month)


def partition_suffix(start: datetime, interval: str) -> str:
    fmt = {"hour": "%Y%m%d%H", "day": "%Y%m%d", "week": "%Y%m%d", "month": "%Y%m"}[interval]
    return "p" + start.strftime(fmt)


def partition_plan(interval: str, now: datetime, history: int, premake: int
                   ) -> list[tuple[str, datetime, datetime]]:
    """(suffix, start, end) of each partition from ``history`` back to ``premake`` ahead."""
    start = floor_time(now, interval)
    for _ in range(history):
        start = _prev_bound(start, interval)
    plan = []
    for _ in range(history + premake + 1):
        end = next_bound(start, interval)
        plan.append((partition_suffix(start, interval), start, end))
        start = end
    return plan
