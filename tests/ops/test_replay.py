"""Replay plan → apply on real Kafka and PostgreSQL: targets, the plan file, refusing a
live group, holding it, and replaying into live tables changing nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError
from sinkfleet.ops.replay.plan import (
    ReplayError,
    apply_replay,
    make_target,
    parse_duration,
    plan_replay,
    read_plan_csv,
)
from sinkfleet.sink.postgres.connect import pg
from tests.support.family import Family, drain, drop_family, make_family, rows, running_worker
from tests.support.state_family import SCHEMA, SINK, TOPIC, publish, state

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def fam(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    # cleanup.policy delete (not compact): the test deletes records like retention does
    topic = {**TOPIC, "config": {"cleanup.policy": "delete"}}
    family = await make_family(tmp_path, stack, SCHEMA, topic, SINK, partitions=2)
    yield family
    await drop_family(family)


def test_targets_and_durations_are_checked() -> None:
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration("PT2H") == timedelta(hours=2)
    assert parse_duration("2d") == timedelta(days=2)
    for bad in ("", "h", "10 minutes", "P"):
        with pytest.raises(ConfigError, match="--by-duration"):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="has no timezone"):
        make_target(to_datetime="2026-11-25T09:00:00")
    with pytest.raises(ConfigError, match="exactly one"):
        make_target(to_earliest=True, to_offset=3)
    with pytest.raises(ConfigError, match="exactly one"):
        make_target()


def test_plan_files_are_read_strictly(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("a.topic,0,10\na.topic,1,0\n")
    assert read_plan_csv(good) == {TopicPartition("a.topic", 0): 10,
                                   TopicPartition("a.topic", 1): 0}
    for text, message in (("a,0\n", "expected 'topic,partition,offset'"),
                          ("a,0,x\n", "expected"), ("a,0,-1\n", "must be ≥ 0"),
                          ("a,0,1\na,0,2\n", "appears twice"), ("\n", "names no partition")):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_plan_csv(bad)


async def test_plan_targets_on_a_real_topic(fam: Family) -> None:
    first = [state("t", f"w{i}", 1, "a") for i in range(40)]
    await publish(fam, first)
    await asyncio.sleep(1.2)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.2)
    await publish(fam, [state("t", f"w{i}", 2, "b") for i in range(40)])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
    catalogue, group = fam.catalogue, fam.group

    plan = await plan_replay(fam.settings, catalogue, group, None, make_target(to_earliest=True))
    assert {p.source for p in plan.partitions} == {"postgres"}
    assert sum(p.current for p in plan.partitions) == 80 and plan.records == 80
    assert all(p.target == 0 for p in plan.partitions)

    plan = await plan_replay(fam.settings, catalogue, group, None,
                             make_target(to_datetime=middle.isoformat()))
    assert plan.records == 40  # exactly the second batch

    plan = await plan_replay(fam.settings, catalogue, group, None, make_target(shift_by=-5),
                             partitions=[0])
    assert [(p.partition, p.records) for p in plan.partitions] == [(0, 5)]
    assert plan.to_csv() == f"{fam.topic},0,{plan.partitions[0].current - 5}\n"

    # records deleted by retention: the plan clamps to the log start and says so
    admin = AIOKafkaAdminClient(bootstrap_servers=fam.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(fam.topic, 0): RecordsToDelete(3)})
    finally:
        await admin.close()
    plan = await plan_replay(fam.settings, catalogue, group, None, make_target(to_offset=0))
    p0 = next(p for p in plan.partitions if p.partition == 0)
    assert p0.target == 3 and p0.log_start == 3
    assert p0.warning is not None and "deleted by retention" in p0.warning


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static-member"])
async def test_replay_into_live_tables_changes_nothing(fam: Family, static: bool) -> None:
    published = [state("t", f"w{i % 30}", v, f"s{v}") for v in (1, 2, 3) for i in range(30)]
    published += [("t", f"w{i}") for i in range(5)]  # and a few deletions
    await publish(fam, published)  # type: ignore[arg-type]
    latest_sql = f'SELECT * FROM "{fam.table}" ORDER BY workflow_id'
    history_sql = f'SELECT * FROM "{fam.table}_history" ORDER BY workflow_id, version, op'
    # a static member (as `sinkfleet fleet` runs them) does not leave the group by itself
    async with running_worker(fam, f"{fam.group}-0" if static else None) as worker:
        await drain(fam, worker)
        before = (await rows(fam, latest_sql), await rows(fam, history_sql))
        assert len(before[0]) == 25 and len(before[1]) == 95
        plan = await plan_replay(fam.settings, fam.catalogue, fam.group, None,
                                 make_target(to_earliest=True))
        # a live member would overwrite the moved offsets: refused, nothing moved
        with pytest.raises(ReplayError, match="live member"):
            await apply_replay(fam.settings, fam.group, plan.offsets(), execute=True)
        dry = await apply_replay(fam.settings, fam.group, plan.offsets(), execute=False,
                                 stop_fleet=True)
        assert not dry.executed and dry.records == len(published)
        done = await apply_replay(fam.settings, fam.group, plan.offsets(), execute=True,
                                  stop_fleet=True)
        assert done.held and done.kafka_committed and done.records == len(published)
        # the worker left, the offsets moved, it rejoined and read everything again
        await drain(fam, worker)
        assert worker.stats.consumed == 2 * len(published)
        assert worker.stats.stored == 95  # nothing new the second time
    after = (await rows(fam, latest_sql), await rows(fam, history_sql))
    assert after == before
    async with pg(fam.settings) as conn:
        recorded = await conn.fetchrow("SELECT records, partitions FROM sinkfleet.replays"
                                       " WHERE id = $1", done.replay_id)
        assert (recorded["records"], recorded["partitions"]) == (len(published), 2)
        assert await conn.fetchval("SELECT count(*) FROM sinkfleet.group_holds"
                                   " WHERE group_id = $1", fam.group) == 0


async def test_shadow_replay_never_drops_a_schema_it_did_not_make(fam: Family) -> None:
    from sinkfleet.errors import ConfigError
    from sinkfleet.ops.replay.shadow import run_shadow

    schema = f"other_app_{fam.table[-10:]}"  # a typo in --into, say
    async with pg(fam.settings) as conn:
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"CREATE TABLE {schema}.precious (x int)")
            await conn.execute(f"INSERT INTO {schema}.precious VALUES (1)")
            with pytest.raises(ConfigError, match=f"schema {schema} exists and was not made by"):
                await run_shadow(fam.settings, fam.catalogue, [fam.table],
                                 start=make_target(to_earliest=True), schema=schema, timeout=60)
            assert await conn.fetchval(f"SELECT count(*) FROM {schema}.precious") == 1
        finally:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_shadow_replay_matches_live_and_names_differences(fam: Family) -> None:
    from sinkfleet.ops.replay.shadow import run_shadow, verify_shadow

    schema = f"shadow_{fam.table[-10:]}"
    await publish(fam, [state("t", f"w{i % 12}", v, f"s{v}") for v in (1, 2) for i in range(12)])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
    try:
        run = await run_shadow(fam.settings, fam.catalogue, [fam.table],
                               start=make_target(to_earliest=True), schema=schema, timeout=120)
        assert (run.records, run.stored, run.dead_lettered) == (24, 24, 0)
        [diff] = await verify_shadow(fam.settings, fam.catalogue, [fam.table], schema=schema)
        assert (diff.shadow_rows, diff.identical, diff.ok) == (12, 12, True)
        # break the live table two ways (as an operator with a bad script would)
        async with pg(fam.settings) as conn:
            await conn.execute(f'UPDATE "{fam.table}" SET status = \'edited\''
                               " WHERE workflow_id = 'w3'")
            await conn.execute(f'DELETE FROM "{fam.table}" WHERE workflow_id = \'w7\'')
        [diff] = await verify_shadow(fam.settings, fam.catalogue, [fam.table], schema=schema)
        assert (diff.identical, diff.different, diff.missing_live, diff.ok) == (10, 1, 1, False)
        assert {(s["id"]["workflow_id"], s["problem"], tuple(s.get("columns", ())))
                for s in diff.samples} == {("w3", "different", ("status",)),
                                           ("w7", "missing in live", ())}
        # the live group's position never moved
        plan = await plan_replay(fam.settings, fam.catalogue, fam.group, None,
                                 make_target(to_latest=True))
        assert plan.records == 0
    finally:
        async with pg(fam.settings) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
