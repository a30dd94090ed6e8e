"""LONG profile (SINKFLEET_CHAOS_LONG=1): restart the real PostgreSQL and the real
Kafka broker of the shared local stack under a running worker: steady → inject (stop
the server) → heal (start it) → recover → verify exactly N rows.

Opt-in because it restarts the servers every other test uses, and because the
PostgreSQL case is not yet reliable: in about one run of three the worker did not
store again within 60 s of PostgreSQL's return (cause not found yet — read the worker
log of a failing run first; suspect an error type missing from RETRIABLE_PG_ERRORS
during PostgreSQL's start-up, which would end the store task)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.config import Settings
from sinkfleet.stack import manager
from tests.conftest import TestCatalogue, async_wait_for
from tests.worker.test_e2e import count_rows, publish, stop, stored_offsets, wait_all_stored

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.skipif(os.environ.get("SINKFLEET_CHAOS_LONG") != "1",
                       reason="long chaos profile: set SINKFLEET_CHAOS_LONG=1"),
]


async def restart_under_load(stack: Settings, tc: TestCatalogue, tmp_path: Path,
                             service: str) -> float:
    """Publish N, let a worker start on them, restart ``service``; return the seconds
    from the service being back to the worker storing again."""
    n = 12_000
    events = await publish(tc, n, seed=71 if service == "postgres" else 72)
    worker = tc.start_worker(tmp_path / "w.log")
    try:
        async def some_stored() -> bool:
            return 0 < sum((await stored_offsets(tc)).values()) < n

        await async_wait_for(some_stored, 60, "the first batches", interval=0.05)
        await asyncio.to_thread(manager.down, stack, [service], lambda m: None)
        await asyncio.sleep(1.0)
        await manager.up(stack, [service], lambda m: None)
        back = time.monotonic()
        before = sum((await stored_offsets(tc)).values())

        async def progressing() -> bool:
            return sum((await stored_offsets(tc)).values()) > before or before >= n

        await async_wait_for(progressing, 60, f"progress after {service} restarted",
                             interval=0.1)
        recovered = time.monotonic() - back
        await wait_all_stored(tc, n, timeout=120)
    finally:
        code = stop(worker)
    assert code == 0, (tmp_path / "w.log").read_text()[-3000:]
    assert await count_rows(tc) == (n, n)
    assert len({e["event_id"] for e in events}) == n
    return recovered


async def test_postgres_restart(stack: Settings, catalogue_factory: Any,
                                tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=300, max_age_ms=50)
    recovered = await restart_under_load(stack, tc, tmp_path, "postgres")
    assert recovered < 10


async def test_kafka_broker_restart(stack: Settings, catalogue_factory: Any,
                                    tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=300, max_age_ms=50)
    recovered = await restart_under_load(stack, tc, tmp_path, "kafka")
    assert recovered < 30  # the group re-forms after the broker: session timeout bound
