"""Append-mode writer: idempotent on the sink's id, COPY-based both ways.

* Fast path: COPY straight into the table under a savepoint. While nothing is
  re-delivered this is the whole cost — one pass, no staging table.
* A duplicate id (a replay, or the batch in flight at a crash) aborts that COPY
  with a unique violation; the writer rolls back to the savepoint and takes the
  safe path: COPY into a per-connection staging table, then
  ``INSERT … SELECT … ON CONFLICT DO NOTHING``. It stays on the safe path until
  a batch comes through without a single duplicate, so a replay does not pay
  for a failed fast attempt on every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.sink.changes import AppendedRows, Written
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident


class SinkWriter(Protocol):
    """What the worker needs of a sink's writer, whatever its mode."""

    async def prepare(self, conn: asyncpg.Connection) -> None: ...

    async def write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                    sources: Sequence[Any]) -> Written: ...


class AppendWriter:
    def __init__(self, sink: Sink, columns: Sequence[str]) -> None:
        spec = sink.spec
        self.sink = sink
        self.columns = list(columns)
        self._cached = spec.cache is not None and spec.cache.recent is not None
        self.stage = derived_name("sinkfleet_stage", spec.name)
        self.direct = True  # False while re-deliveries are being absorbed
        cols = ", ".join(quote_ident(c) for c in self.columns)
        self._create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(self.stage)}"
            f" (LIKE {spec.qualified_table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        self._merge = (f"INSERT INTO {spec.qualified_table} ({cols})"
                       f" SELECT {cols} FROM {quote_ident(self.stage)} ON CONFLICT DO NOTHING")

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """Create the staging table on a new connection (once per connection)."""
        await conn.execute(self._create_stage)

    async def write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                    sources: Sequence[Any] = ()) -> Written:
        """Write ``rows`` inside the caller's transaction; say how many were new."""
        if not rows:
            return Written()
        written = Written(await self._write(conn, rows))
        if self._cached:  # re-delivered rows too: the recent cache is a set
            written.changes = AppendedRows(self.columns, rows)
        return written

    async def _write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> int:
        if self.direct:
            try:
                async with conn.transaction():  # savepoint: a duplicate undoes only this
                    await conn.copy_records_to_table(
                        self.sink.spec.table, schema_name=self.sink.spec.db_schema,
                        records=rows, columns=self.columns)
                return len(rows)
            except asyncpg.UniqueViolationError:
                self.direct = False
        await conn.copy_records_to_table(self.stage, records=rows, columns=self.columns)
        status = await conn.execute(self._merge)
        inserted = int(status.rsplit(" ", 1)[1])
        if inserted == len(rows):
            self.direct = True  # caught up with the re-deliveries
        return inserted
