"""PostgreSQL goes away under a running worker: it backs off, pauses, reports degraded,
never commits past what is stored, and resumes by itself — exactly N rows in the end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.catalogue import TestCatalogue
from tests.support.endpoints import free_port, get, samples
from tests.support.faults import TcpProxy
from tests.support.postgres import count_rows, stored_offsets
from tests.support.waiting import async_wait_for
from tests.support.worker import publish, stop, wait_all_stored

pytestmark = pytest.mark.integration


async def test_postgres_outage_pauses_then_resumes_without_loss(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=200, max_age_ms=50)
    proxy = TcpProxy(tc.settings.pg_host, tc.settings.pg_port)
    await proxy.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"SINKFLEET_PG_PORT": str(proxy.port), "SINKFLEET_METRICS_PORT": str(port)}
    worker = tc.start_worker(tmp_path / "w.log", extra_env=env)
    n = 6000
    try:
        await publish(tc, n, seed=61)

        async def some_stored() -> bool:
            return 0 < sum((await stored_offsets(tc)).values()) < n

        await async_wait_for(some_stored, 60, "the first batches", interval=0.05)
        proxy.cut()

        async def degraded() -> bool:
            health = await asyncio.to_thread(get, base + "/healthz")
            ready = await asyncio.to_thread(get, base + "/readyz")
            return health[0] == 200 and health[1].startswith("degraded") and ready[0] == 503

        await async_wait_for(degraded, 30, "/healthz to say degraded")

        async def paused() -> bool:
            text = (await asyncio.to_thread(get, base + "/metrics"))[1]
            return samples(text).get(
                ("sinkfleet_paused_partitions", (("group", tc.group),))) == 6

        await async_wait_for(paused, 30, "the partitions to be paused")
        during = await stored_offsets(tc)
        await asyncio.sleep(2)
        assert await stored_offsets(tc) == during, "offsets moved while PostgreSQL was away"
        stored_before = sum(during.values())
        assert stored_before < n

        proxy.heal()
        healed = time.monotonic()

        async def progressing() -> bool:
            return sum((await stored_offsets(tc)).values()) > stored_before

        await async_wait_for(progressing, 15, "progress after healing", interval=0.1)
        assert time.monotonic() - healed < 10
        await wait_all_stored(tc, n)
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 200
    finally:
        code = stop(worker)
        await proxy.stop()
    assert code == 0
    assert await count_rows(tc) == (n, n)
    log = (tmp_path / "w.log").read_text()
    assert "degraded: storage: PostgreSQL unavailable" in log and "recovered: storage" in log
