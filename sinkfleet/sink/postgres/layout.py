"""A sink's on-disk layout from its ``storage:`` settings (pure: SQL text only).

The sink's first migration is never rewritten (its checksum is recorded); a changed key
is a migration of its own, named by the settings' digest, that rebuilds the primary key
in place — on a fresh database an empty table, on an existing one every partition's key
index (an ACCESS EXCLUSIVE lock while it builds). The column order applies to partitions
made from now on: PostgreSQL lets each partition order its columns physically as it likes.
"""

from __future__ import annotations

from datetime import datetime

from sinkfleet.catalogue import Column, Sink
from sinkfleet.sink.postgres.ddl import _column_lines, quote_ident

# pg_type → alignment class: 8-byte (d), 4-byte (i), 2-byte (s), 1-byte fixed (c), then
# variable-length values (short ones are stored unaligned, so they go last).
_ALIGN = {"bigint": 0, "double precision": 0, "timestamptz": 0, "timestamp": 0, "time": 0,
          "integer": 1, "real": 1, "date": 1, "smallint": 2, "boolean": 3, "uuid": 3}
_VARLENA = 4


def stored_columns(sink: Sink) -> list[Column]:
    """The columns in the order new partitions store them (``storage.column_order``)."""
    storage = sink.spec.storage
    if storage is None or storage.column_order == "as_listed":
        return list(sink.columns)
    return sorted(sink.columns, key=lambda c: _ALIGN.get(c.pg_type, _VARLENA))


def aligned_partitions(sink: Sink) -> bool:
    storage = sink.spec.storage
    return storage is not None and storage.column_order == "aligned"


def partition_table_sql(sink: Sink, child: str) -> str:
    """CREATE TABLE ``child`` (qualified) with the sink's columns in stored order, ready to
    be attached (same names, types, NOT NULL and defaults as the parent)."""
    lines = dict(zip((c.name for c in sink.columns), _column_lines(sink), strict=True))
    body = ",\n".join(lines[c.name] for c in stored_columns(sink))
    return f"CREATE TABLE {child} (\n{body}\n)"


def key_sql(sink: Sink) -> str:
    """Rebuild the primary key as ``storage`` says (idempotent: converges from any key)."""
    spec = sink.spec
    assert spec.storage is not None
    cols = ", ".join(quote_ident(c) for c in spec.key_columns)
    fill = spec.storage.key_fillfactor
    with_ = f" WITH (fillfactor = {int(fill)})" if fill is not None else ""
    # The key's constraint name depends on how long the table's name is: look it up.
    table = spec.qualified_table.replace("'", "''")
    return (
        "DO $$ DECLARE pk text; BEGIN\n"
        f"  SELECT conname INTO pk FROM pg_constraint WHERE conrelid = '{table}'::regclass"
        " AND contype = 'p';\n"
        f"  EXECUTE format('ALTER TABLE {table} DROP CONSTRAINT %I, ADD PRIMARY KEY"
        f" ({cols}){with_}', pk);\n"
        "END $$;\n")


def partition_statements(sink: Sink, child: str, start: datetime, end: datetime,
                         default: str | None = None) -> list[str]:
    """What creates partition ``child`` (qualified) for [start, end), in the stored column
    order. With ``default`` (the DEFAULT partition, qualified), the rows of that range are
    moved out of it first, since attaching over rows left in DEFAULT would fail."""
    spec = sink.spec
    assert spec.time_column is not None
    lo, hi = f"'{start.isoformat()}'", f"'{end.isoformat()}'"  # datetimes, not input
    bounds = f"FOR VALUES FROM ({lo}) TO ({hi})"
    if default is None and not aligned_partitions(sink):
        return [f"CREATE TABLE IF NOT EXISTS {child} PARTITION OF {spec.qualified_table}"
                f" {bounds}"]
    out = [partition_table_sql(sink, child)]
    if default is not None:
        tcol = quote_ident(spec.time_column)
        cols = ", ".join(quote_ident(c.name) for c in sink.columns)  # by name, not position
        out.append(f"WITH moved AS (DELETE FROM ONLY {default} WHERE {tcol} >= {lo}"
                   f" AND {tcol} < {hi} RETURNING {cols}) INSERT INTO {child} ({cols})"
                   f" SELECT {cols} FROM moved")
    out.append(f"ALTER TABLE {spec.qualified_table} ATTACH PARTITION {child} {bounds}")
    return out
