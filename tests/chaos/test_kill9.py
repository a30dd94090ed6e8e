"""Chaos 1: kill -9 workers mid-batch, repeatedly, while records flow."""

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
from tests.conftest import TestCatalogue

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SEED = 101
N = 20_000
KILLS = 5


async def test_kill_9_random_workers_mid_batch_loses_and_duplicates_nothing(
        catalogue_factory: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tc: TestCatalogue = await catalogue_factory(max_records=200, max_age_ms=50)
    fleet = Fleet(tc, tmp_path)
    started = time.monotonic()
    try:
        # steady: two workers in one group, records flowing and being stored.
        fleet.start()
        fleet.start()
        publishing = start_publishing(tc, N, SEED, rate=2000)
        await wait_stored_at_least(tc, 1, 60, "the first batches")
        # inject: kill -9 a random worker every 1-2 s, restart it at once (heal).
        at_kill = []
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            fleet.kill9(rng.choice(fleet.live))
            at_kill.append(await stored_total(tc))
            fleet.start()
        events = await publishing
        assert any(0 < s < N for s in at_kill), f"no kill landed mid-run: {at_kill}"
        # recover: the group drains everything.
        await wait_stored_at_least(tc, N, 90, f"{N} records stored after {KILLS} kills")
        codes = await fleet.stop_all()
    finally:
        fleet.kill_all()
    elapsed = time.monotonic() - started
    assert codes == [0, 0], fleet.tails()
    # verify
    await verify_exactly_once(tc, events, fleet.tails())
    print(f"kill9: {KILLS} kills at stored={at_kill}, {elapsed:.1f}s")
