"""SQL of a sink's summary tier (``retention.summary``, docs/retention.md): pure strings.

``<table>_summary_parts`` holds one row per grain window, ``by`` key and *detail
partition*: retention writes a partition's rows there in the transaction that drops
the partition, so the summary of dropped detail is never lost, and summarising a
partition again replaces its rows (idempotent). A window longer than a partition (a
week of day partitions) has one part per partition; the view ``<table>_summary`` adds
the parts up. Windows are ``date_trunc(grain, time, 'UTC')``: weeks start on Monday.
"""

from __future__ import annotations

from sinkfleet.catalogue import Sink
from sinkfleet.catalogue.retention import SummarySpec, summary_stat_column
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident

FLOATS = frozenset({"real", "double precision"})
#: How long a window of each grain is, as a PostgreSQL interval.
GRAIN_INTERVAL = {"hour": "1 hour", "day": "1 day", "week": "1 week", "month": "1 month"}


def has_summary(sink: Sink) -> bool:
    """Whether the sink keeps a summary tier (``retention.summary``)."""
    policy = sink.spec.retention
    return policy is not None and policy.summary is not None


def _summary(sink: Sink) -> SummarySpec:
    policy = sink.spec.retention
    assert policy is not None and policy.summary is not None, \
        f"sink {sink.spec.name} has no summary tier"
    return policy.summary


def parts_table(sink: Sink) -> str:
    """The qualified part table of the sink's summary."""
    return (f"{quote_ident(sink.spec.db_schema)}."
            f"{quote_ident(derived_name(sink.spec.table, 'summary_parts'))}")


def summary_view(sink: Sink) -> str:
    """The qualified view adding the parts up: what readers query."""
    return (f"{quote_ident(sink.spec.db_schema)}."
            f"{quote_ident(derived_name(sink.spec.table, 'summary'))}")


def summary_table_sql(sink: Sink) -> str:
    """The part table, its key and the view (the sink's summary migration)."""
    summary = _summary(sink)
    types = {c.name: c.pg_type for c in sink.columns}
    lines = ["    grain text NOT NULL", "    window_start timestamptz NOT NULL"]
    lines += [f"    {quote_ident(c)} {types[c]}" for c in summary.by]
    lines += ["    detail_partition text NOT NULL", "    rows bigint NOT NULL"]
    for col in summary.values:
        lines += [f"    {quote_ident(summary_stat_column(col, 'count'))} bigint NOT NULL",
                  f"    {quote_ident(summary_stat_column(col, 'sum'))} numeric",
                  f"    {quote_ident(summary_stat_column(col, 'min'))} {types[col]}",
                  f"    {quote_ident(summary_stat_column(col, 'max'))} {types[col]}"]
    lines.append("    summarised_at timestamptz NOT NULL DEFAULT now()")
    key = ", ".join(["grain", "window_start", *(quote_ident(c) for c in summary.by),
                     "detail_partition"])
    # NULLS NOT DISTINCT: a NULL in a `by` column is one group, as in GROUP BY.
    lines.append(f"    UNIQUE NULLS NOT DISTINCT ({key})")
    parts, view = parts_table(sink), summary_view(sink)
    group = ", ".join(["grain", "window_start", *(quote_ident(c) for c in summary.by)])
    stats = []
    for col in summary.values:
        n, s, lo, hi = (quote_ident(summary_stat_column(col, k))
                        for k in ("count", "sum", "min", "max"))
        stats += [f"sum({n})::bigint AS {n}", f"sum({s}) AS {s}", f"min({lo}) AS {lo}",
                  f"max({hi}) AS {hi}"]
    select = ", ".join([group, "sum(rows)::bigint AS rows", *stats,
                        "count(*)::integer AS detail_partitions"])
    return (f"CREATE SCHEMA IF NOT EXISTS {quote_ident(sink.spec.db_schema)};\n"
            f"CREATE TABLE {parts} (\n" + ",\n".join(lines) + "\n);\n"
            f"CREATE INDEX {quote_ident(derived_name(sink.spec.table, 'summary_window_idx'))}"
            f" ON {parts} (window_start);\n"
            f"CREATE VIEW {view} AS SELECT {select} FROM {parts} GROUP BY {group};\n")


def summarise_sql(sink: Sink, schema: str, partition: str) -> tuple[str, str]:
    """(delete the partition's parts, insert them again from its rows): run both in the
    transaction that drops the partition. Parameter $1: the partition's name."""
    summary = _summary(sink)
    spec = sink.spec
    assert spec.time_column is not None
    window = (f"date_trunc('{summary.grain}', {quote_ident(spec.time_column)}, 'UTC')")
    by = [quote_ident(c) for c in summary.by]
    cols = ["grain", "window_start", *by, "detail_partition", "rows"]
    exprs = [f"'{summary.grain}'", window, *by, "$1::text", "count(*)"]
    types = {c.name: c.pg_type for c in sink.columns}
    for col in summary.values:
        q = quote_ident(col)
        cols += [quote_ident(summary_stat_column(col, k)) for k in ("count", "sum", "min",
                                                                    "max")]
        # A float's shortest exact text (extra_float_digits ≥ 1), not float8::numeric's
        # 15 digits: the sum equals the sum of the values as stored, digit for digit.
        exact = f"{q}::text::numeric" if types[col] in FLOATS else f"{q}::numeric"
        exprs += [f"count({q})", f"sum({exact})", f"min({q})", f"max({q})"]
    source = f"{quote_ident(schema)}.{quote_ident(partition)}"
    group = ", ".join(str(i) for i in range(2, 3 + len(by)))
    delete = f"DELETE FROM {parts_table(sink)} WHERE detail_partition = $1"
    insert = (f"INSERT INTO {parts_table(sink)} ({', '.join(cols)})"
              f" SELECT {', '.join(exprs)} FROM ONLY {source} GROUP BY {group}")
    return delete, insert


def expire_summary_sql(sink: Sink) -> str:
    """Delete the summary windows that ended at or before $1 (now - summary.keep).
    Summary rows are few (one per window and key), so this is a DELETE, not a drop."""
    return (f"DELETE FROM {parts_table(sink)}"
            # in UTC: a day is 24 h and a month a calendar month whatever the session's zone
            " WHERE (window_start AT TIME ZONE 'UTC') + CASE grain"
            + "".join(f" WHEN '{g}' THEN interval '{i}'" for g, i in GRAIN_INTERVAL.items())
            + " END <= ($1::timestamptz AT TIME ZONE 'UTC')")


def count_expired_sql(sink: Sink) -> str:
    """How many part rows :func:`expire_summary_sql` would delete ($1: the horizon)."""
    return expire_summary_sql(sink).replace("DELETE FROM", "SELECT count(*) FROM", 1)
