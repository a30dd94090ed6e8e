"""Helpers for the retention tests and benchmarks/retention.py: experience-event rows
as the worker builds them, written straight into (old) partitions."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import islice
from typing import Any

import asyncpg

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Sink
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.worker.rows import RowBuilder


def event_rows(sink: Sink, start: datetime, count: int, seed: int = 0
               ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``count`` experience events from ``start`` on (a few ms apart), as the worker's
    RowBuilder makes them from the decoded Avro records: (column names, rows)."""
    codec = Codec(sink.schema, SchemaStore())
    build = RowBuilder(sink)
    load = ExperienceLoad(seed=seed, start_us=int(start.timestamp() * 1_000_000))
    rows = [build(codec.decode(codec.encode(r, validate=False)))
            for r in islice(load, count)]
    return build.names, rows


async def insert_rows(conn: asyncpg.Connection, sink: Sink, names: list[str],
                      rows: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(sink.spec.table, schema_name=sink.spec.db_schema,
                                     records=rows, columns=names)


async def fill_day(conn: asyncpg.Connection, sink: Sink, day: datetime, count: int,
                   seed: int = 0) -> None:
    """``count`` events an hour into ``day`` (its partition must exist, or they land in
    DEFAULT)."""
    names, rows = event_rows(sink, day + timedelta(hours=1), count, seed)
    await insert_rows(conn, sink, names, rows)


async def table_rows(conn: asyncpg.Connection, sink: Sink, start: datetime | None = None,
                     end: datetime | None = None) -> list[dict[str, Any]]:
    """Every row of the sink's table (in [start, end) if given), ordered by its id."""
    spec = sink.spec
    order = ", ".join(f'"{c}"' for c in spec.id)
    where, args = "", []
    if start is not None and end is not None:
        where, args = f' WHERE "{spec.time_column}" >= $1 AND "{spec.time_column}" < $2', \
            [start, end]
    rows = await conn.fetch(f"SELECT * FROM {spec.qualified_table}{where} ORDER BY {order}",
                            *args)
    return [dict(r) for r in rows]
