"""storage.compact: closed partitions' B-tree indexes packed once (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sinkfleet.ops.lifecycle.compact import GRACE, compact_closed
from sinkfleet.ops.lifecycle.retention.schedule import compact_partitions
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import floor_time
from sinkfleet.worker.rows import RowBuilder
from tests.sink.test_storage_layout import partition, rows_of, stored
from tests.support.catalogue import DELETE

pytestmark = pytest.mark.asyncio(loop_scope="function")

INDEXES = ("SELECT ic.relname::text AS name, ic.reloptions AS opts,"
           " pg_relation_size(ic.oid) AS bytes, i.indisprimary AS pk"
           " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
           " JOIN pg_am am ON am.oid = ic.relam"
           " WHERE i.indrelid = $1::regclass AND am.amname = 'btree' ORDER BY 1")


async def test_closed_partitions_packed_once(catalogue_factory: Any) -> None:
    tc = await catalogue_factory()
    sink = tc.catalogue.sinks[tc.table]
    now = datetime.now(UTC)
    today = floor_time(now, "day")
    yesterday = today - timedelta(days=1)
    rows = rows_of(sink, 5000, yesterday + timedelta(hours=1))
    async with pg(tc.settings) as conn:
        await conn.copy_records_to_table(tc.table, records=rows,
                                         columns=RowBuilder(sink).names)
        before = {d: await conn.fetch(INDEXES, partition(sink, d))
                  for d in (yesterday - timedelta(days=1), yesterday, today)}
        # the key is made packed (key_fillfactor: 100); the other B-tree is not
        assert [(r["pk"], r["opts"]) for r in before[yesterday]] == [
            (False, None), (True, ["fillfactor=100"])]
        rows_before = await stored(conn, sink)
        # today's partition is open, and yesterday's just closed (within GRACE): untouched
        assert await compact_closed(conn, sink, today + GRACE / 2) == [
            f'"public"."{before[yesterday - timedelta(days=1)][0]["name"]}"']
        # what each `retention run --every` cycle does, over the whole catalogue
        assert await compact_partitions(tc.settings, tc.catalogue, now + GRACE) == {
            tc.table: [f'"public"."{before[yesterday][0]["name"]}"']}
        after = await conn.fetch(INDEXES, partition(sink, yesterday))
        assert [r["opts"] for r in after] == [["fillfactor=100"], ["fillfactor=100"]]
        # as small as a B-tree freshly built full over the same rows
        part = partition(sink, yesterday)
        await conn.execute(f'CREATE INDEX fresh_{tc.suffix} ON "{part}"'
                           " (agent_id, episode_id, ts) WITH (fillfactor = 100)")
        fresh = await conn.fetchval(f"SELECT pg_relation_size('fresh_{tc.suffix}')")
        await conn.execute(f"DROP INDEX fresh_{tc.suffix}")
        assert after[0]["bytes"] == fresh < before[yesterday][0]["bytes"]
        assert after[1]["bytes"] == before[yesterday][1]["bytes"]  # the key: left as it was
        assert await conn.fetch(INDEXES, partition(sink, today)) == before[today]
        assert await stored(conn, sink) == rows_before
        assert await compact_closed(conn, sink, now + GRACE) == []  # once


async def test_not_asked_for(catalogue_factory: Any) -> None:
    tc = await catalogue_factory(overrides={"sinks": {"storage": DELETE}})
    async with pg(tc.settings) as conn:
        assert await compact_closed(conn, tc.catalogue.sinks[tc.table],
                                    datetime.now(UTC) + timedelta(days=30)) == []
