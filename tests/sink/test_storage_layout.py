"""storage: on the real PostgreSQL — the key, aligned partitions, an upgrade of a database
made before ``storage:`` existed, and `sinkfleet stats`'s bytes by component."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import asyncpg
import pytest

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Sink, load_catalogue
from sinkfleet.dev.synthetic.loads import synthetic_records
from sinkfleet.ops.stats.pg import table_stats
from sinkfleet.read.query import Query, SinkQuery
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import derived_name, floor_time, partition_suffix
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.worker.rows import RowBuilder
from tests.sink.test_storage_units import ALIGNED_EVENTS
from tests.support.catalogue import DELETE, edit_spec

pytestmark = pytest.mark.asyncio(loop_scope="function")

STORAGE = {"key": "time_first", "key_fillfactor": 100, "column_order": "aligned"}
KEY_SQL = ("SELECT array_agg(a.attname::text ORDER BY k.ord) AS cols, c.reloptions AS opts"
           " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid,"
           " unnest(i.indkey) WITH ORDINALITY k(attnum, ord)"
           " JOIN pg_attribute a ON a.attnum = k.attnum"
           " WHERE i.indrelid = $1::regclass AND i.indisprimary AND a.attrelid = i.indrelid"
           " GROUP BY c.reloptions")
ORDER_SQL = ("SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute"
             " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped")


def rows_of(sink: Sink, count: int, start: datetime, seed: int = 1) -> list[tuple[Any, ...]]:
    codec, build = Codec(sink.schema, SchemaStore()), RowBuilder(sink)
    records = islice(synthetic_records("experience_event", seed,
                                       start_us=int(start.timestamp() * 1e6)), count)
    return [build(codec.decode(codec.encode(r, validate=False))) for r in records]


async def stored(conn: asyncpg.Connection, sink: Sink) -> list[tuple[Any, ...]]:
    names = RowBuilder(sink).names
    cols = ", ".join(f'"{n}"' for n in names)
    return [tuple(r) for r in await conn.fetch(
        f"SELECT {cols} FROM {sink.spec.qualified_table} ORDER BY ts, event_id")]


def partition(sink: Sink, day: datetime) -> str:
    return derived_name(sink.spec.table, partition_suffix(floor_time(day, "day"), "day"))


async def test_fresh_database(catalogue_factory: Any) -> None:
    tc = await catalogue_factory()
    sink = tc.catalogue.sinks[tc.table]
    now = datetime.now(UTC)
    rows = rows_of(sink, 500, now - timedelta(minutes=5))
    async with pg(tc.settings) as conn:
        key = await conn.fetchrow(KEY_SQL, tc.table)
        assert (key["cols"], key["opts"]) == (["ts", "event_id"], ["fillfactor=100"])
        assert await conn.fetchval(ORDER_SQL, partition(sink, now)) == ALIGNED_EVENTS
        names = RowBuilder(sink).names
        await conn.copy_records_to_table(tc.table, records=rows, columns=names)
        assert await stored(conn, sink) == sorted(rows, key=lambda r: (r[1], r[0]))
        with pytest.raises(asyncpg.UniqueViolationError):  # idempotent on (event_id, ts)
            await conn.copy_records_to_table(tc.table, records=rows[:1], columns=names)
        # newest first (the query model's default order, reversed) walks the key backwards
        sql, args, _ = SinkQuery(sink).plan(Query(tc.table, newest_first=True, limit=100))
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
        # a Merge Append of each partition's key, backwards: no Sort node anywhere
        assert "Index Scan Backward using" in plan and "Sort  (" not in plan, plan


async def test_upgrade_of_a_database_made_before_storage(catalogue_factory: Any) -> None:
    """The previous version's tables (no ``storage:``), rows in them and a stray row in
    DEFAULT; then `db migrate` with ``storage:``: the key is rebuilt, rows stay, the
    partition made for the stray row is aligned, writes and reads go on."""
    tc = await catalogue_factory(overrides={"sinks": {"storage": DELETE}})
    old = tc.catalogue.sinks[tc.table]
    now = datetime.now(UTC)
    later = now + timedelta(days=3)
    names = RowBuilder(old).names
    async with pg(tc.settings) as conn:
        assert (await conn.fetchrow(KEY_SQL, tc.table))["cols"] == ["event_id", "ts"]
        await conn.execute(f'DROP TABLE "{partition(old, later)}"')  # rows go to DEFAULT
        first = rows_of(old, 300, now - timedelta(minutes=5))
        stray = rows_of(old, 20, floor_time(later, "day") + timedelta(hours=1), seed=2)
        await conn.copy_records_to_table(tc.table, records=first + stray, columns=names)
        before = await stored(conn, old)
    edit_spec(tc.root / "sinks" / "events.yaml", {"storage": STORAGE})
    cat = load_catalogue(tc.root)
    sink = cat.sinks[tc.table]
    said: list[str] = []
    applied = await migrate(tc.settings, cat, said.append)
    assert applied == [f"sink:{tc.table}:key-{sink.spec.storage.digest()}"]  # type: ignore[union-attr]
    assert f"{tc.table}: created partitions {partition(sink, later)} … " \
           f"{partition(sink, later)} (1)" in said
    async with pg(tc.settings) as conn:
        key = await conn.fetchrow(KEY_SQL, tc.table)
        assert (key["cols"], key["opts"]) == (["ts", "event_id"], ["fillfactor=100"])
        assert await stored(conn, sink) == before
        assert await conn.fetchval(ORDER_SQL, partition(sink, later)) == ALIGNED_EVENTS
        assert await conn.fetchval(ORDER_SQL, partition(sink, now)) == [*names, "ingested_at"]
        moved = await conn.fetch(f"SELECT DISTINCT tableoid::regclass::text AS t"
                                 f" FROM {sink.spec.qualified_table} WHERE ts >= $1",
                                 floor_time(later, "day"))
        assert [r["t"] for r in moved] == [partition(sink, later)]
        more = rows_of(sink, 200, now - timedelta(minutes=1), seed=3) \
            + rows_of(sink, 10, floor_time(later, "day") + timedelta(hours=2), seed=4)
        await conn.copy_records_to_table(tc.table, records=more, columns=names)
        assert len(await stored(conn, sink)) == 300 + 20 + 210
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.copy_records_to_table(tc.table, records=stray[:1], columns=names)
    assert await migrate(tc.settings, cat, said.append) == []  # up to date, twice


async def test_stats_bytes_by_component(catalogue_factory: Any) -> None:
    tc = await catalogue_factory()
    sink = tc.catalogue.sinks[tc.table]
    rows = rows_of(sink, 2000, datetime.now(UTC) - timedelta(minutes=5))
    async with pg(tc.settings) as conn:
        await conn.copy_records_to_table(tc.table, records=rows,
                                         columns=RowBuilder(sink).names)
        await conn.execute(f"VACUUM {sink.spec.qualified_table}")
        stats = await table_stats(conn, "public", tc.table, exact=True)
        expect = {
            "heap": "pg_relation_size(relid, 'main')",
            "fsm+vm": "pg_relation_size(relid, 'fsm') + pg_relation_size(relid, 'vm')",
            "toast": "(SELECT pg_total_relation_size(reltoastrelid) FROM pg_class"
                     " WHERE oid = relid)"}
        want = {name: await conn.fetchval(
            f"SELECT sum({expr})::bigint FROM pg_partition_tree($1::regclass)", tc.table)
            for name, expr in expect.items()}
        for index, method in ((f"{tc.table}_pkey", "btree"),
                              (f"{tc.table}_agent_id_episode_id_ts_btree_idx", "btree"),
                              (f"{tc.table}_ts_brin_idx", "brin")):
            want[f"index {index} ({method})"] = await conn.fetchval(
                "SELECT sum(pg_total_relation_size(relid))::bigint"
                " FROM pg_partition_tree($1)",
                index)
    assert stats.rows == 2000 and stats.parts is not None
    assert {p.name: p.bytes for p in stats.parts} == want
    assert sum(p.bytes for p in stats.parts) == stats.bytes
    assert stats.as_dict()["components"][0] == {
        "name": "heap", "bytes": want["heap"], "bytes_per_row": round(want["heap"] / 2000, 1)}
