"""State sinks on real Kafka and PostgreSQL: version guard, history, tombstones, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from tests.support.family import (
    Family,
    drain,
    drop_family,
    make_family,
    rewind,
    rows,
    running_worker,
)
from tests.support.state_family import SCHEMA, SINK, TOPIC, cache_settles, cached, publish, state

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def fam(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await make_family(tmp_path, stack, SCHEMA, TOPIC, SINK)
    yield family
    await drop_family(family)


def shown(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("tenant_id", "workflow_id", "version", "status",
                                "updated_at")}


async def test_latest_is_guarded_by_version_and_history_keeps_every_version(
        fam: Family) -> None:
    # one batch: a newer version, then an older one, then a re-published equal one
    published = [state("t1", "wf:a", 1, "queued"), state("t1", "wf:a", 3, "done"),
                 state("t1", "wf:a", 2, "running"), state("t2", "wf:a", 1, "queued"),
                 state("t1", "wf:b", 5, "failed")]
    await publish(fam, published)
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        # a later batch: stale versions again, and one newer
        await publish(fam, [state("t1", "wf:a", 2, "stale"), state("t1", "wf:b", 6, "retry")])
        await drain(fam, worker)
    latest = await rows(fam, f'SELECT * FROM "{fam.table}" ORDER BY tenant_id, workflow_id')
    assert [shown(r) for r in latest] == [
        shown(state("t1", "wf:a", 3, "done")), shown(state("t1", "wf:b", 6, "retry")),
        shown(state("t2", "wf:a", 1, "queued"))]
    assert '"step": 3' in latest[0]["detail"]  # jsonb kept the JSON value
    # Redis holds the same latest versions, compare-and-set after the commit
    for row in latest:
        await cache_settles(fam, (row["tenant_id"], row["workflow_id"]), row["version"])
    entry = await cached(fam, "t1", "wf:a")
    assert entry is not None and entry["d"]["status"] == "done"
    assert entry["d"]["detail"] == {"step": 3, "note": "v3 of wf:a"}
    history = await rows(fam, f'SELECT workflow_id, tenant_id, version, parent_version, op,'
                         f' status FROM "{fam.table}_history" ORDER BY tenant_id,'
                         " workflow_id, version")
    assert [(h["tenant_id"], h["workflow_id"], h["version"], h["parent_version"], h["status"])
            for h in history] == [
        # lineage follows offset order: v3 arrived when only v1 existed; "stale" is a
        # second content of v2 published later: it wins v2 (tests/hostile/
        # test_state_conflicts.py), "running" is kept in sinkfleet.state_conflicts
        ("t1", "wf:a", 1, None, "queued"), ("t1", "wf:a", 2, 1, "stale"),
        ("t1", "wf:a", 3, 1, "done"),
        ("t1", "wf:b", 5, None, "failed"), ("t1", "wf:b", 6, 5, "retry"),
        ("t2", "wf:a", 1, None, "queued")]
    assert {h["op"] for h in history} == {"upsert"}


async def test_tombstone_deletes_latest_records_deletion_and_blocks_older_versions(
        fam: Family) -> None:
    await publish(fam, [state("t1", "gone", 1, "a"), state("t1", "gone", 2, "b"),
                        ("t1", "gone"), state("t1", "kept", 1, "a")])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        latest = await rows(fam, f'SELECT workflow_id FROM "{fam.table}"')
        assert [r["workflow_id"] for r in latest] == ["kept"]
        await cache_settles(fam, ("t1", "kept"), 1)
        await cache_settles(fam, ("t1", "gone"), None)
        # an older update after the deletion is not resurrected; a newer one is
        await publish(fam, [state("t1", "gone", 2, "late replay"), ("t1", "never-existed")])
        await drain(fam, worker)
        assert len(await rows(fam, f'SELECT 1 FROM "{fam.table}"')) == 1
        await publish(fam, [state("t1", "gone", 3, "reborn")])
        await drain(fam, worker)
    latest = await rows(fam, f'SELECT workflow_id, version, status FROM "{fam.table}"'
                        " ORDER BY workflow_id")
    assert [(r["workflow_id"], r["version"], r["status"]) for r in latest] == [
        ("gone", 3, "reborn"), ("kept", 1, "a")]
    await cache_settles(fam, ("t1", "gone"), 3)
    deletions = await rows(fam, f'SELECT workflow_id, version, parent_version'
                           f' FROM "{fam.table}_history" WHERE op = \'delete\''
                           " ORDER BY workflow_id")
    assert [(d["workflow_id"], d["version"]) for d in deletions] == [
        ("gone", 2), ("never-existed", 0)]


async def test_replaying_the_topic_changes_nothing(fam: Family) -> None:
    published: list[dict[str, Any] | tuple[str, ...]] = []
    for wf in range(20):
        for version in (1, 2, 3):
            published.append(state("t9", f"wf{wf}", version, f"s{version}"))
        if wf % 5 == 0:
            published.append(("t9", f"wf{wf}"))
            published.append(state("t9", f"wf{wf}", 2, "stale after delete"))
    await publish(fam, published)
    async with running_worker(fam) as worker:
        await drain(fam, worker)
    query_latest = f'SELECT * FROM "{fam.table}" ORDER BY workflow_id'
    query_history = (f'SELECT * FROM "{fam.table}_history" ORDER BY workflow_id, version, op')
    before = (await rows(fam, query_latest), await rows(fam, query_history))
    assert len(before[0]) == 16 and len(before[1]) == 20 * 3 + 4
    await rewind(fam)
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        assert worker.stats.consumed == len(published)
        assert worker.stats.stored == 0
    after = (await rows(fam, query_latest), await rows(fam, query_history))
    assert after == before
