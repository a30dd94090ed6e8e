"""A group hold is a lease: `replay apply --stop-fleet` killed with SIGKILL mid-hold
lets its workers go within the lease (real worker process, real command process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.ops.replay.plan import ReplayError, _Hold, apply_replay
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from tests.support.catalogue import TestCatalogue
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration
LEASE = 6.0


async def publish(tc: TestCatalogue, n: int, seed: int) -> None:
    load = ExperienceLoad(seed=seed, agents=4, agent_prefix=f"t{tc.suffix}")
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        for _ in range(n):
            await pub.publish("experience_event", next(load))


async def fetch(tc: TestCatalogue, sql: str, *args: Any) -> Any:
    async with pg(tc.settings) as conn:
        return await conn.fetchrow(sql, *args)


async def stored(tc: TestCatalogue) -> int:
    row = await fetch(tc, "SELECT coalesce(sum(next_offset), 0) AS n FROM"
                          " sinkfleet.consumer_offsets WHERE group_id = $1", tc.group)
    return int(row["n"])


def start_apply(tc: TestCatalogue, plan: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "replay", "apply", str(plan), "--group",
             tc.group, "--stop-fleet", "--execute", "--hold-lease", str(LEASE)],
            stdout=out, stderr=subprocess.STDOUT, env=tc.env(), cwd=tc.root)


@contextlib.asynccontextmanager
async def old_member(tc: TestCatalogue) -> AsyncIterator[None]:
    """A member that knows no holds (an older worker): the group never empties, so the
    apply stays in its hold, waiting."""
    consumer = AIOKafkaConsumer(bootstrap_servers=tc.settings.kafka_bootstrap,
                                group_id=tc.group, enable_auto_commit=False)
    await consumer.start()
    consumer.subscribe([tc.topic])

    async def poll() -> None:
        while True:
            await consumer.getmany(timeout_ms=200)

    task = asyncio.create_task(poll())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def test_a_killed_apply_lets_its_workers_go_within_the_lease(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    await publish(tc, 20, seed=51)
    log = tmp_path / "worker.log"
    worker = tc.start_worker(log)
    try:
        async def all_stored() -> bool:
            return await stored(tc) == 20

        await async_wait_for(all_stored, 90, "20 offsets stored")
        plan = tmp_path / "plan.csv"
        plan.write_text(f"{tc.topic},0,0\n{tc.topic},1,0\n")
        async with old_member(tc):
            apply = start_apply(tc, plan, tmp_path / "apply.log")
            try:
                async def held() -> Any:
                    return "group" in log.read_text() and "is held" in log.read_text()

                await async_wait_for(held, 60, "the worker to see the hold")
                first = await fetch(tc, "SELECT holder, expires_at FROM"
                                        " sinkfleet.group_holds WHERE group_id = $1", tc.group)
                assert first["holder"].split(":")[1] == str(apply.pid)

                async def renewed() -> bool:
                    row = await fetch(tc, "SELECT expires_at FROM sinkfleet.group_holds"
                                          " WHERE group_id = $1", tc.group)
                    return row["expires_at"] > first["expires_at"]

                await async_wait_for(renewed, LEASE, "the apply to renew its lease")
                assert apply.poll() is None  # still waiting for the old member to leave
            finally:
                os.kill(apply.pid, signal.SIGKILL)
                apply.wait()
            killed = time.monotonic()

            async def released() -> bool:
                return "hold released" in log.read_text()

            await async_wait_for(released, LEASE + 10, "the worker to rejoin", interval=0.1)
            waited = time.monotonic() - killed
            # held until the lease ran out (renewed at most LEASE/3 before the kill), and
            # let go soon after it did (the heartbeat polls holds every second)
            assert LEASE - LEASE / 3 - 0.5 <= waited <= LEASE + 4.0, waited
        # nothing moved: the command died before it moved the offsets
        assert await stored(tc) == 20
        await publish(tc, 10, seed=52)

        async def progressed() -> bool:
            return await stored(tc) == 30

        await async_wait_for(progressed, 90, "the rejoined worker to store 10 more")
        assert apply.returncode == -signal.SIGKILL
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        async with pg(tc.settings) as conn:  # the killed command's expired hold row
            await conn.execute("DELETE FROM sinkfleet.group_holds WHERE group_id = $1",
                               tc.group)


async def test_a_live_hold_is_not_taken_over_and_a_lapsed_one_moves_nothing(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    group = tc.group
    async with _Hold(tc.settings, group, "replay apply", LEASE) as first:
        with pytest.raises(ReplayError, match="already held by .*another replay"):
            async with _Hold(tc.settings, group, "replay apply", LEASE):
                pass
        async with pg(tc.settings) as conn:
            # as if this command had stalled longer than its lease
            await conn.execute("UPDATE sinkfleet.group_holds SET expires_at = now()"
                               " WHERE group_id = $1", group)
            from sinkfleet.worker.heartbeat import HOLD

            assert await conn.fetchval(HOLD, group) is None  # workers ignore it
            with pytest.raises(ReplayError, match="lapsed"):
                async with conn.transaction():
                    await first.check(conn)
    row = await fetch(tc, "SELECT count(*) AS n FROM sinkfleet.group_holds"
                          " WHERE group_id = $1", group)
    assert row["n"] == 0
    # with no member the apply needs no hold and moves at once
    from aiokafka import TopicPartition

    done = await apply_replay(tc.settings, group, {TopicPartition(tc.topic, 0): 0},
                              execute=True, stop_fleet=True)
    assert not done.held and done.replay_id is not None
