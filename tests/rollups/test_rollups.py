"""``sinkfleet rollups`` on real Kafka and PostgreSQL: kill -9 it mid-run, restart it, and
the summary rows still equal a SQL GROUP BY over the detail rows, field by field."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.dev.synthetic.append import LearningMetricLoad, WorkerEventLoad
from tests.rollups.support import (
    cleanup,
    detail_rows,
    finals,
    kill_left,
    log_text,
    metric_group_by,
    metric_rollups,
    publish,
    rolled_up,
    spread,
    start_rollups,
    stop,
    wait_log,
    worker_event_group_by,
    worker_event_rollups,
)
from tests.support.catalogue import TestCatalogue
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def rollup_env(catalogue_factory: Callable[..., Any]
                     ) -> AsyncIterator[Callable[..., Any]]:
    """An isolated catalogue of one family and a unique faust app id; cleaned up after."""
    made: list[tuple[TestCatalogue, str]] = []

    async def make(family: str) -> tuple[TestCatalogue, str]:
        tc = await catalogue_factory(family=family, partitions=3, max_age_ms=100)
        made.append((tc, f"test-rollups-{uuid.uuid4().hex[:10]}"))
        return made[-1]

    yield make
    for tc, app_id in made:
        await cleanup(tc, app_id)


def event_times(n: int, step_s: float) -> tuple[int, int]:
    """Start (2 h 10 min ago, so hours are crossed) and step of ``n`` event times."""
    start = int((time.time() - 2 * 3600 - 600) * 1_000_000)
    return start, int(step_s * 1_000_000)


def duplicates_skipped(log: Path) -> int:
    return sum(int(n) for n in re.findall(r"duplicates=(\d+)", log_text(log)))


async def test_learning_metrics_survive_kill_9_exactly(rollup_env: Any, tmp_path: Path
                                                       ) -> None:
    tc, app_id = await rollup_env("learning_metric")
    n, half = 3000, 1500
    start, step = event_times(n, 2.5)  # 125 minutes of event time: ~125 minute windows
    records = spread(iter(LearningMetricLoad(seed=7, prefix=f"r{tc.suffix}")), n, "ts",
                     start, step)
    worker = tc.start_worker(tmp_path / "worker.log")
    log = tmp_path / "rollups.log"
    # Commits every 60 s: a kill always leaves consumed-but-uncommitted offsets, which
    # are read again after the restart and must not be counted twice.
    slow_commit = ("--commit-interval", "60")
    try:
        await publish(tc, records[:half])
        proc = start_rollups(tc, app_id, log, *slow_commit)
        await async_wait_for(lambda: _at_least(tc, "rollup_metrics", half), 120,
                             "the first half rolled up")
        os.kill(proc.pid, signal.SIGKILL)  # nothing committed to Kafka yet
        proc.wait(30)

        proc = start_rollups(tc, app_id, log, *slow_commit)
        publishing = asyncio.create_task(publish(tc, records[half:], rate=300))
        await async_wait_for(lambda: _at_least(tc, "rollup_metrics", half + 300), 120,
                             "the restarted app moving")
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream this time
        proc.wait(30)
        killed_at = await rolled_up(tc, "rollup_metrics", "minute")
        await publishing

        proc = start_rollups(tc, app_id, log, *slow_commit)
        got, want = await _settled(tc, "rollup_metrics", n, metric_rollups, metric_group_by)
        assert stop(proc, signal.SIGTERM) == 0
    finally:
        kill_left(worker, locals().get("proc"))
    assert half < killed_at < n, "the second kill must land mid-stream"
    assert got.keys() == want.keys()
    for key in sorted(want, key=str):
        assert got[key] == want[key], key  # count, exact sum, min, max
    assert sum(c for (size, _, _, f), (c, *_) in got.items() if size == "hour" and f == "*") == n
    closed, rows = await finals(tc, "rollup_metric_parts")
    assert closed > rows // 2, "most windows closed on event time and were written final"
    assert duplicates_skipped(log) > 0, "records read again after a kill were skipped"


async def test_worker_events_survive_kill_9_exactly(rollup_env: Any, tmp_path: Path) -> None:
    tc, app_id = await rollup_env("worker_event")
    n = 2000
    start, step = event_times(n, 4.5)  # 150 minutes
    records = spread(iter(WorkerEventLoad(seed=3, prefix=f"w{tc.suffix}")), n,
                     "occurred_at", start, step)
    worker = tc.start_worker(tmp_path / "worker.log")
    log = tmp_path / "rollups.log"
    try:
        await publish(tc, records)
        proc = start_rollups(tc, app_id, log, "--family", "worker_event",
                             "--commit-interval", "60")
        await async_wait_for(lambda: _at_least(tc, "rollup_worker_events", 500), 120,
                             "some events rolled up")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc = start_rollups(tc, app_id, log, "--family", "worker_event")
        wait_log(log, "recovered")
        got, want = await _settled(tc, "rollup_worker_events", n, worker_event_rollups,
                                   worker_event_group_by)
        assert stop(proc, signal.SIGTERM) == 0
    finally:
        kill_left(worker, locals().get("proc"))
    assert got == want
    assert duplicates_skipped(log) > 0


async def test_two_instances_share_and_hand_over_partitions_exactly(rollup_env: Any,
                                                                    tmp_path: Path) -> None:
    """A second instance joins mid-stream (partitions split), then the first stops (the
    second takes them all over): every window still equals the detail GROUP BY."""
    tc, app_id = await rollup_env("worker_event")
    n = 3000
    start, step = event_times(n, 3.0)
    records = spread(iter(WorkerEventLoad(seed=5, prefix=f"h{tc.suffix}")), n,
                     "occurred_at", start, step)
    worker = tc.start_worker(tmp_path / "worker.log")
    log_a, log_b = tmp_path / "rollups-a.log", tmp_path / "rollups-b.log"
    family = ("--family", "worker_event")
    a = b = None
    try:
        a = start_rollups(tc, app_id, log_a, *family, instance=None)
        publishing = asyncio.create_task(publish(tc, records, rate=200))  # ~15 s
        await async_wait_for(lambda: _at_least(tc, "rollup_worker_events", 300), 120,
                             "the first instance moving")
        b = start_rollups(tc, app_id, log_b, *family, instance=None)
        await async_wait_for(lambda: _assigned(log_b), 60, "partitions for the second")
        joined = await rolled_up(tc, "rollup_worker_events", "minute")
        await async_wait_for(lambda: _at_least(tc, "rollup_worker_events", joined + 300),
                             120, "both instances rolling up")
        assert stop(a, signal.SIGTERM) == 0
        assert not publishing.done(), "the hand-over must happen mid-stream"
        await publishing
        got, want = await _settled(tc, "rollup_worker_events", n, worker_event_rollups,
                                   worker_event_group_by)
        assert stop(b, signal.SIGTERM) == 0
    finally:
        kill_left(worker, a, b)
    assert got == want


async def _assigned(log: Path) -> bool:
    return re.search(r"recovered \d+ open windows of partitions \[\d", log_text(log)) is not None


async def _settled(tc: TestCatalogue, view: str, n: int, rollups: Any, group_by: Any
                   ) -> tuple[Any, Any]:
    """Roll-ups and GROUP BY once all ``n`` records are rolled up and stored; on a timeout,
    fail with the rows that differ."""
    await async_wait_for(lambda: _stored(tc, n), 120, f"{n} detail rows stored")
    try:
        await async_wait_for(lambda: _exactly(tc, view, n), 120, f"all {n} rolled up")
    except AssertionError as exc:
        got, want = await rollups(tc), await group_by(tc)
        diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want)
                if got.get(k) != want.get(k)}
        raise AssertionError(f"{exc}; rows that differ (rolled up, detail): {diff}") from None
    return await rollups(tc), await group_by(tc)


async def _at_least(tc: TestCatalogue, view: str, n: int) -> bool:
    return await rolled_up(tc, view, "minute") >= n


async def _exactly(tc: TestCatalogue, view: str, n: int) -> bool:
    minute, hour = await rolled_up(tc, view, "minute"), await rolled_up(tc, view, "hour")
    assert minute <= n and hour <= n, f"counted twice: minute={minute} hour={hour} of {n}"
    return minute == hour == n


async def _stored(tc: TestCatalogue, n: int) -> bool:
    return await detail_rows(tc) >= n
