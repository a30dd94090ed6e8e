"""The seed 003 merge families as shipped (schemas/, topics/, sinks/): publish → worker →
PostgreSQL → Reader, and a replay from offset 0 that leaves every row as it was."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.producer import Publisher
from sinkfleet.read import Reader
from tests.sink.merge_support import project_family
from tests.support.family import (
    Family,
    drain,
    drop_family,
    rewind,
    rows,
    running_worker,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def metrics(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await project_family(tmp_path, stack, "distributed_metrics")
    yield family
    await drop_family(family)


@pytest_asyncio.fixture
async def capabilities(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await project_family(tmp_path, stack, "capability_sets")
    yield family
    await drop_family(family)


def metric_updates(scope: str, metric: str) -> list[dict[str, Any]]:
    """Three replicas each counting up, publishing their whole state each time."""
    out = []
    for rep, (steps, inc, dec) in enumerate([(4, 3, 1), (2, 5, 0), (3, 1, 2)]):
        for n in range(1, steps + 1):
            out.append({"scope": scope, "metric": metric, "replica_id": f"w{rep}",
                        "total": n * 10, "level": {"increments": n * inc, "decrements": n * dec},
                        "reporters": [f"w{rep}"], "observed_at": T0 + timedelta(seconds=n)})
    return out


async def publish(fam: Family, records: list[dict[str, Any]]) -> None:
    async with Publisher(fam.settings, catalogue=fam.catalogue) as pub:
        for rec in records:
            await pub.publish(fam.family, rec)


async def test_metrics_end_to_end_and_a_replay_from_zero_changes_no_row(
        metrics: Family) -> None:
    published = metric_updates("mesh-1", "tasks_completed") + metric_updates("job-7", "ttl")
    shuffled = published + random.Random(3).sample(published, 8)  # some delivered twice
    random.Random(4).shuffle(shuffled)
    await publish(metrics, shuffled)
    async with running_worker(metrics) as worker:
        await drain(metrics, worker)
    table = f'SELECT * FROM "{metrics.table}" ORDER BY scope, metric'
    before = await rows(metrics, table)
    async with Reader(metrics.settings, metrics.catalogue) as reader:
        got = await reader.merged(metrics.table, "mesh-1", "tasks_completed")
        assert await reader.merged(metrics.table, "mesh-1", "nothing") is None
    assert got is not None
    # totals: 40 + 20 + 30; level: (12-4) + (10-0) + (3-6)
    assert {k: got[k] for k in ("scope", "metric", "total", "level", "reporters",
                                "observed_at")} == {
        "scope": "mesh-1", "metric": "tasks_completed", "total": 90, "level": 15,
        "reporters": ["w0", "w1", "w2"], "observed_at": T0 + timedelta(seconds=4)}
    assert got["total_state"] == {"w0": 40, "w1": 20, "w2": 30}
    assert got["level_state"] == {"w0": [12, 4], "w1": [10, 0], "w2": [3, 6]}
    assert len(before) == 2

    await rewind(metrics)  # replay: every record again, from offset 0
    async with running_worker(metrics) as worker:
        await drain(metrics, worker)
        assert worker.stats.consumed == len(shuffled)
        assert worker.stats.stored == 0  # no id changed
    assert await rows(metrics, table) == before


async def test_capability_sets_end_to_end(capabilities: Family) -> None:
    def state(replica: str, adds: dict[str, list[str]], removes: list[str],
              held: list[str], second: int) -> dict[str, Any]:
        return {"owner_id": "agent-7", "replica_id": replica,
                "capabilities": {"adds": adds, "removes": removes}, "ever_held": held,
                "observed_at": T0 + timedelta(seconds=second)}

    await publish(capabilities, [
        # a removes "search" (its tag a:1) while b adds it anew (b:1): search stays
        state("a", {"plan": ["a:2"]}, ["a:1"], ["search", "plan"], 3),
        state("a", {"search": ["a:1"]}, [], ["search"], 1),
        state("b", {"search": ["b:1"], "code": ["b:2"]}, [], ["search", "code"], 2),
        state("b", {"search": ["b:1"]}, ["b:2"], ["search", "code"], 4),  # b drops code
    ])
    async with running_worker(capabilities) as worker:
        await drain(capabilities, worker)
    async with Reader(capabilities.settings, capabilities.catalogue) as reader:
        got = await reader.merged(capabilities.table, "agent-7")
    assert got is not None
    assert got["capabilities"] == ["plan", "search"]
    assert got["capabilities_state"] == {"adds": {"plan": ["a:2"], "search": ["b:1"]},
                                         "removes": ["a:1", "b:2"]}
    assert got["ever_held"] == ["code", "plan", "search"]
    assert got["observed_at"] == T0 + timedelta(seconds=4)
