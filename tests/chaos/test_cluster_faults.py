"""Cluster faults on a private three-broker Kafka (tests/chaos/cluster.py; PostgreSQL and
Redis are the stack's): a partition leader and the active controller killed with
SIGKILL, a rolling restart, and acks=all while ISR < min.insync.replicas — each while the
Publisher and two worker processes run, each ending with the chaos invariants and the
independent history check (tests/chaos/history.py), which is itself tested first on a
hand-made history with a lost and a duplicated record."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.sink.postgres.connect import pg
from tests.chaos.cluster import open_cluster_catalogue, start_cluster, stop_cluster
from tests.chaos.cluster_scenarios import (
    assert_exact,
    controller_kill,
    isr_below_min,
    leader_kill,
    pg_dsn,
    rolling_restart,
)
from tests.chaos.history import AppendTable, FamilyHistory, StateTable, check_history
from tests.chaos.support import ChaosCatalogue, drop_chaos_catalogue
from tests.support.catalogue import without_kafka_layout_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.fixture(scope="module")
def chaos_cluster(stack: Settings, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Settings]:
    """Three Kafka nodes of our own on 28092-28094 (controllers 28192-28194), for the
    whole module."""
    with without_kafka_layout_env():
        state = tmp_path_factory.mktemp("chaos-cluster") / "state"
        say: Callable[[str], None] = lambda m: print(f"[cluster] {m}")  # noqa: E731
        cluster = asyncio.run(start_cluster(stack, state, say=say))
        try:
            yield cluster
        finally:
            stop_cluster(cluster, say)


@pytest_asyncio.fixture
async def cluster_catalogue(stack: Settings, chaos_cluster: Settings, tmp_path: Path
                            ) -> AsyncIterator[Callable[..., Any]]:
    made: list[ChaosCatalogue] = []

    async def factory(**kwargs: Any) -> ChaosCatalogue:
        cc = await open_cluster_catalogue(tmp_path, stack, chaos_cluster, **kwargs)
        made.append(cc)
        return cc

    yield factory
    for cc in made:
        await drop_chaos_catalogue(cc)


# --- the checker on a hand-made history ----------------------------------------------------
async def test_history_check_reports_a_lost_and_a_duplicated_record(
        stack: Settings, tmp_path: Path) -> None:
    ev, wf = f"hist_ev_{uuid.uuid4().hex[:8]}", f"hist_wf_{uuid.uuid4().hex[:8]}"
    async with pg(stack) as conn:
        await conn.execute(f"""
            CREATE TABLE {ev} (event_id bytea, ts timestamptz, PRIMARY KEY (event_id, ts));
            INSERT INTO {ev} VALUES ('\\xaa', now()), ('\\xbb', now()),
                ('\\xcc', now()), ('\\xcc', now() + interval '1 s'), ('\\xee', now());
            CREATE TABLE {wf} (tenant_id text, workflow_id text, version int,
                PRIMARY KEY (tenant_id, workflow_id));
            INSERT INTO {wf} VALUES ('t', 'w1', 1), ('t', 'w2', 1);
            CREATE TABLE {wf}_history (tenant_id text, workflow_id text, version int, op text);
            INSERT INTO {wf}_history VALUES ('t', 'w1', 1, 'upsert'), ('t', 'w1', 2, 'upsert'),
                ('t', 'w2', 1, 'upsert'), ('t', 'w2', 1, 'upsert'), ('t', 'w3', 1, 'upsert'),
                ('t', 'w3', 1, 'delete');""")
    log = tmp_path / "acks.log"
    # aa, bb and cc stored (cc twice: the primary key holds the timestamp too), dd lost,
    # ee never acknowledged; w1 left at version 1 though 2 was acknowledged (and stored in
    # the history), w2's version 1 recorded twice, w3 deleted and gone (as it must be).
    log.write_text("".join(f"experience_event\t{ids}\n" for ids in (
        '["aa"]', '["bb"]', '["cc"]', '["dd"]', '["bb"]')) + "".join(
        f"workflow_state\t{ids}\n" for ids in (
            '["t", "w1", 1, "upsert"]', '["t", "w1", 2, "upsert"]',
            '["t", "w2", 1, "upsert"]', '["t", "w3", 1, "upsert"]',
            '["t", "w3", 1, "delete"]')))
    try:
        report = await check_history(log, pg_dsn(stack), [
            AppendTable("experience_event", ev, "event_id"),
            StateTable("workflow_state", wf, f"{wf}_history", ("tenant_id", "workflow_id"))])
    finally:
        async with pg(stack) as conn:
            await conn.execute(f"DROP TABLE {ev}, {wf}, {wf}_history")
    assert not report.ok
    assert report.lines == 10
    events, states = report.families
    assert events == FamilyHistory("experience_event", acknowledged=4, stored=5, lost=1,
                                   duplicated=1, unacknowledged=1, samples=[
                                       "lost dd", "cc stored 2x"])
    assert states == FamilyHistory("workflow_state", acknowledged=5, stored=6, lost=0,
                                   duplicated=1, unacknowledged=0, out_of_order=1, samples=[
                                       "('t', 'w1'): want 2 got 1"])
    assert "1 lost, 1 duplicated" in str(report)


async def test_history_check_refuses_a_family_it_has_no_table_for(
        stack: Settings, tmp_path: Path) -> None:
    log = tmp_path / "acks.log"
    log.write_text('audit_entry\t["x"]\n')
    with pytest.raises(ValueError, match=r"acknowledgements of \['audit_entry'\]"):
        await check_history(log, pg_dsn(stack), [])


# --- the faults ----------------------------------------------------------------------------
N, RATE = 2000, 100  # twenty seconds of load: every fault lands while records flow


async def test_partition_leader_killed(cluster_catalogue: Any, tmp_path: Path) -> None:
    cc = await cluster_catalogue()
    result = await leader_kill(cc, tmp_path, N, rate=RATE, seed=201)
    assert_exact(result, N)
    # a new leader within the broker session (9 s), then the group's fetches move to it
    assert result.recovery is not None and result.recovery < 30, result.explain()


async def test_active_controller_killed(cluster_catalogue: Any, tmp_path: Path) -> None:
    cc = await cluster_catalogue()
    result = await controller_kill(cc, tmp_path, N, rate=RATE, seed=202)
    assert_exact(result, N)
    assert result.recovery is not None and result.recovery < 30, result.explain()


async def test_rolling_restart_of_all_three_brokers(cluster_catalogue: Any,
                                                    tmp_path: Path) -> None:
    cc = await cluster_catalogue()
    result = await rolling_restart(cc, tmp_path, N, rate=RATE, seed=203, spread_s=30)
    assert_exact(result, N)


async def test_acks_all_blocks_while_isr_is_below_min_insync(cluster_catalogue: Any,
                                                             tmp_path: Path) -> None:
    cc = await cluster_catalogue()
    result = await isr_below_min(cc, tmp_path, N, rate=RATE, seed=204, outage_s=5,
                                 spread_s=45)
    assert_exact(result, N)
    # nothing acknowledged while refused; the publisher raised (PublishTimeout from
    # publish(), or failed deliveries from flush(): each record was published again)
    assert any(" s: 0 acknowledged, " in n for n in result.notes), result.explain()
    # and said why: the partitions short of in-sync replicas, and what that means — or,
    # in the seconds before the controller fences the killed broker (its partitions still
    # look whole), that a broker does not answer
    raised = [n for n in result.notes if n.startswith(("publish() raised", "flush() raised"))]
    isr = [n for n in raised if "of 3 replicas in sync" in n and "NotEnoughReplicas" in n]
    assert isr and all(n in isr or "a broker down or unreachable?" in n for n in raised), \
        result.explain()
