"""Chaos 1: kill -9 workers mid-batch, repeatedly, while records flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chaos.scenarios import kill9_storm

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def test_kill_9_random_workers_mid_batch_loses_and_duplicates_nothing(
        chaos_catalogue: Any, tmp_path: Path) -> None:
    cc = await chaos_catalogue()
    # Publishing lasts 10 s, longer than the four kills take (1-2 s apart) even when a
    # busy machine delays the first stored batch: every kill lands while records flow.
    result = await kill9_storm(cc, tmp_path, 10_000, rate=1000, seed=101, kills=4)
    assert result.ok, result.explain()
    # The killed workers' partitions wait out their session (6 s), then one rebalance.
    assert result.recovery is not None and result.recovery < 10, result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")
