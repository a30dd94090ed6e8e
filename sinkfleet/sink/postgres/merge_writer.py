"""Merge-mode writer: each batch joined into one row per id by CRDT merges, in SQL.

COPY the batch into a staging table, then one ``INSERT … SELECT … GROUP BY id …
ON CONFLICT DO UPDATE`` joins the batch's records per id and the result with the
stored row (sinkfleet.sink.postgres.merge_sql), inside the worker's transaction, so
the rows and the offsets commit together. The joins are commutative, associative and
idempotent: a re-delivered or replayed record, in any order and any batching, leaves
the row as it was (docs/merge-mode.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.sink.changes import Written
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident
from sinkfleet.sink.postgres.merge_sql import stage_sql, upsert_sql


class MergeWriter:
    def __init__(self, sink: Sink, columns: Sequence[str]) -> None:
        assert sink.spec.merge is not None
        self.sink = sink
        self.columns = list(columns)
        self.stage = derived_name("sinkfleet_stage", sink.spec.name)
        self._create_stage = stage_sql(sink, self.stage, self.columns)
        self._truncate = f"TRUNCATE {quote_ident(self.stage)}"
        self._upsert = upsert_sql(sink, self.stage)

    async def prepare(self, conn: asyncpg.Connection) -> None:
        await conn.execute(self._create_stage)

    async def write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                    sources: Sequence[Any] = ()) -> Written:
        """Join ``rows`` into the stored rows; say how many ids were created or changed."""
        if not rows:
            return Written()
        # an earlier write of this transaction (the isolation of a refused record) may
        # have left rows in the stage
        await conn.execute(self._truncate)
        await conn.copy_records_to_table(self.stage, records=rows, columns=self.columns)
        return Written(len(await conn.fetch(self._upsert)))
