"""Chaos 2: a rebalance storm — workers joining and leaving (SIGTERM, even while they
start) every ~2 s while records flow; then two stable workers finish the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chaos.scenarios import rebalance_storm

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def test_rebalance_storm_loses_and_duplicates_nothing(
        chaos_catalogue: Any, tmp_path: Path) -> None:
    cc = await chaos_catalogue()
    result = await rebalance_storm(cc, tmp_path, 12_000, rate=12_000 / 10, seed=202,
                                   storm_s=10)
    assert result.ok, result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")
