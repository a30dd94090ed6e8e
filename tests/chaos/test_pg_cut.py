"""Chaos 4: the worker's PostgreSQL connections are cut mid-COPY three times while
records flow; progress resumes within 10 s of each heal and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.support import (
    Fleet,
    start_publishing,
    stored_total,
    verify_exactly_once,
    wait_stored_at_least,
)
from tests.conftest import TestCatalogue, async_wait_for
from tests.faults import TcpProxy

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SEED = 404
N = 20_000
CUTS = 3
CUT_S = 1.0
RESUME_S = 10.0


async def test_postgres_cut_mid_copy_three_times_then_recovers(
        catalogue_factory: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tc: TestCatalogue = await catalogue_factory(max_records=200, max_age_ms=50)
    proxy = TcpProxy(tc.settings.pg_host, tc.settings.pg_port)
    await proxy.start()
    fleet = Fleet(tc, tmp_path, extra_env={"SINKFLEET_PG_PORT": str(proxy.port)})
    started = time.monotonic()
    resumed_after: list[float] = []
    try:
        # steady
        fleet.start()
        publishing = start_publishing(tc, N, SEED, rate=1500)
        await wait_stored_at_least(tc, 1, 60, "the first batches")
        for _ in range(CUTS):
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            proxy.cut()  # inject: every relayed connection dropped mid-stream
            await asyncio.sleep(CUT_S)
            before = await stored_total(tc)
            proxy.heal()  # heal
            healed = time.monotonic()
            if before >= N:
                continue

            async def progressing(before: int = before) -> bool:
                return await stored_total(tc) > before

            await async_wait_for(progressing, RESUME_S + 5, "progress after healing",
                                 interval=0.05)
            resumed_after.append(time.monotonic() - healed)
        events = await publishing
        # recover
        await wait_stored_at_least(tc, N, 90, f"{N} records stored after {CUTS} cuts")
        codes = await fleet.stop_all()
    finally:
        fleet.kill_all()
        await proxy.stop()
    elapsed = time.monotonic() - started
    assert codes == [0], fleet.tails()
    assert len(resumed_after) == CUTS, "a cut landed after everything was stored"
    assert all(r < RESUME_S for r in resumed_after), resumed_after
    # verify
    await verify_exactly_once(tc, events, fleet.tails())
    log = fleet.logs[0].read_text()
    assert "PostgreSQL unavailable" in log and "PostgreSQL is back" in log
    print(f"pg cut: resumed after {[round(r, 2) for r in resumed_after]}s, {elapsed:.1f}s")
