"""What a worker process stored in PostgreSQL: rows of a test catalogue's table, and the
offsets stored with them (sinkfleet.consumer_offsets)."""

from __future__ import annotations

from sinkfleet.sink.postgres.connect import pg
from tests.support.catalogue import TestCatalogue


async def count_rows(tc: TestCatalogue) -> tuple[int, int]:
    async with pg(tc.settings) as conn:
        row = await conn.fetchrow(f'SELECT count(*) AS n, count(DISTINCT event_id) AS d'
                                  f' FROM "{tc.table}"')
        return row["n"], row["d"]


async def stored_ids(tc: TestCatalogue) -> set[bytes]:
    async with pg(tc.settings) as conn:
        return {bytes(r[0]) for r in await conn.fetch(f'SELECT event_id FROM "{tc.table}"')}


async def stored_offsets(tc: TestCatalogue) -> dict[int, int]:
    async with pg(tc.settings) as conn:
        rows = await conn.fetch("SELECT partition, next_offset FROM sinkfleet.consumer_offsets"
                                " WHERE group_id = $1 AND topic = $2", tc.group, tc.topic)
        return {r["partition"]: r["next_offset"] for r in rows}
