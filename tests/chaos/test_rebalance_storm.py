"""Chaos 2: a rebalance storm — workers joining and leaving (SIGTERM) every ~2 s while
records are published at a steady rate; then two stable workers finish the job."""

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
    verify_exactly_once,
    wait_stored_at_least,
)
from tests.conftest import TestCatalogue

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SEED = 202
N = 20_000
STORM_S = 12.0
MAX_WORKERS = 4


async def test_rebalance_storm_loses_and_duplicates_nothing(
        catalogue_factory: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tc: TestCatalogue = await catalogue_factory(max_records=200, max_age_ms=50)
    fleet = Fleet(tc, tmp_path)
    started = time.monotonic()
    codes: list[int] = []
    moves: list[str] = []
    try:
        # steady
        fleet.start()
        publishing = start_publishing(tc, N, SEED, rate=N / STORM_S)
        await wait_stored_at_least(tc, 1, 60, "the first batches")
        # inject: join or leave every ~2 s for ~12 s
        storm_end = time.monotonic() + STORM_S
        while time.monotonic() < storm_end:
            await asyncio.sleep(rng.uniform(1.5, 2.5))
            n = len(fleet.live)
            join = n <= 1 or (n < MAX_WORKERS and rng.random() < 0.5)
            if join:
                fleet.start()
                moves.append("+")
            else:
                codes.append(await fleet.stop(rng.choice(fleet.live)))
                moves.append("-")
        # heal: exactly two stable workers
        while len(fleet.live) > 2:
            codes.append(await fleet.stop(fleet.live[0]))
        while len(fleet.live) < 2:
            fleet.start()
        events = await publishing
        # recover
        await wait_stored_at_least(tc, N, 90, f"{N} records stored after the storm")
        codes += await fleet.stop_all()
    finally:
        fleet.kill_all()
    elapsed = time.monotonic() - started
    assert "+" in moves and "-" in moves, moves
    assert codes and all(c == 0 for c in codes), (codes, fleet.tails())
    # verify
    await verify_exactly_once(tc, events, fleet.tails())
    print(f"rebalance storm: moves={''.join(moves)} incarnations={len(fleet.logs)},"
          f" {elapsed:.1f}s")
