"""Append-mode writer: COPY into a per-connection staging table, then INSERT … ON CONFLICT.

COPY is the fastest way in; the staging hop makes it idempotent on the id, so a
replayed or re-delivered record never becomes a second row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident


class AppendWriter:
    def __init__(self, sink: Sink, columns: Sequence[str]) -> None:
        spec = sink.spec
        self.sink = sink
        self.columns = list(columns)
        self.stage = derived_name("sinkfleet_stage", spec.name)
        cols = ", ".join(quote_ident(c) for c in self.columns)
        self._create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(self.stage)}"
            f" (LIKE {spec.qualified_table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        self._merge = (f"INSERT INTO {spec.qualified_table} ({cols})"
                       f" SELECT {cols} FROM {quote_ident(self.stage)} ON CONFLICT DO NOTHING")

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """Create the staging table on a new connection (once per connection)."""
        await conn.execute(self._create_stage)

    async def write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> int:
        """Write ``rows`` inside the caller's transaction; return how many were new."""
        if not rows:
            return 0
        await conn.copy_records_to_table(self.stage, records=rows, columns=self.columns)
        status = await conn.execute(self._merge)
        return int(status.rsplit(" ", 1)[1])
