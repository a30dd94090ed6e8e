"""A worker's /metrics, /healthz and /readyz, scraped from a real worker process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.http import Health, Phase, route
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.workers import list_workers
from tests.support.catalogue import TestCatalogue
from tests.support.endpoints import free_port, get, samples
from tests.support.postgres import stored_offsets
from tests.support.waiting import async_wait_for, wait_for
from tests.support.worker import publish, stop, wait_all_stored


def _status(path: str, health: Health) -> tuple[int, str]:
    reply = route(path, None, health)  # type: ignore[arg-type]
    return reply.status, reply.body.decode()


def test_health_routes_follow_phase_and_problems() -> None:
    health = Health()
    assert _status("/readyz", health) == (503, "starting")
    health.phase = Phase.JOINING  # connected, but no partitions yet: not ready
    assert _status("/healthz", health) == (200, "joining")
    assert _status("/readyz", health)[0] == 503
    health.phase = Phase.RUNNING
    assert _status("/readyz", health) == (200, "ready")
    assert _status("/healthz", health) == (200, "ok")
    health.degrade("dead-letters", "cannot send")  # the data path waits: not ready
    assert _status("/healthz", health) == (200, "degraded: dead-letters: cannot send")
    assert _status("/readyz", health)[0] == 503
    health.recover("dead-letters")
    cache_says: list[str | None] = ["cache: Redis down"]
    health.probes["cache"] = lambda: cache_says[0]  # polled: the cache writer's own flag
    assert _status("/healthz", health) == (200, "degraded: cache: cache: Redis down")
    assert _status("/readyz", health) == (200, "ready")  # Redis is a cache: still storing
    cache_says[0] = None
    assert _status("/healthz", health) == (200, "ok")
    health.phase, health.detail = Phase.FAILED, "assigning partitions failed: boom"
    assert _status("/healthz", health) == (503, "failed: assigning partitions failed: boom")
    health.phase = Phase.STOPPING
    assert _status("/healthz", health) == (503, "stopping")
    assert _status("/nope", health)[0] == 404


@pytest.mark.integration
async def test_worker_metrics_count_exactly_what_was_stored(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    port = free_port()
    log = tmp_path / "w.log"
    env_port = {"SINKFLEET_METRICS_PORT": str(port)}
    worker = tc.start_worker(log, extra_env=env_port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(base + "/readyz")[0] == 200, 60, "the worker to be ready")
        await publish(tc, 2500, seed=31)
        await wait_all_stored(tc, 2500)

        async def counted() -> bool:
            m = samples(get(base + "/metrics")[1])
            key = ("sinkfleet_records_stored_total", (("group", tc.group), ("sink", tc.table)))
            return m.get(key) == 2500

        await async_wait_for(counted, 30, "the stored counter to reach 2500")
        status, body = get(base + "/metrics")
        assert status == 200
        m = samples(body)
        g = ("group", tc.group)
        assert m[("sinkfleet_records_consumed_total", (g, ("topic", tc.topic)))] == 2500
        assert m[("sinkfleet_records_duplicate_total", (g, ("sink", tc.table)))] == 0
        assert m[("sinkfleet_assigned_partitions", (g,))] == 6
        offsets = await stored_offsets(tc)
        for partition, offset in offsets.items():
            labels = (g, ("partition", str(partition)), ("topic", tc.topic))
            assert m[("sinkfleet_committed_offset", labels)] == offset
            lag = m[("sinkfleet_event_time_lag_seconds", labels)]
            assert 0 <= lag < 120
        assert m[("sinkfleet_batch_records_count", (g,))] >= 1
        assert get(base + "/healthz") == (200, "ok")

        async def reported() -> list[dict[str, Any]]:
            rows = await workers_of(tc)
            return rows if rows and rows[0]["stored"] == 2500 else []

        [row] = await async_wait_for(reported, 30, "the worker's heartbeat row")
        assert row["state"] == "ok" and row["pid"] == worker.pid
        assert row["metrics_url"] == f"{base}/metrics"
        assert row["assigned"] == 6 and row["consumed"] == 2500
    finally:
        assert stop(worker) == 0
    assert re.search(rf"metrics on http://127.0.0.1:{port}/metrics", log.read_text())
    [row] = await workers_of(tc)
    assert row["state"] == "stopped"


async def workers_of(tc: TestCatalogue) -> list[dict[str, Any]]:
    async with pg(tc.settings) as conn:
        return await list_workers(conn, [tc.group])
