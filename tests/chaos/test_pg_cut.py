"""Chaos 4: the worker's PostgreSQL connections are cut mid-COPY three times while
records flow; progress resumes within 10 s of each heal and nothing is lost or doubled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chaos.scenarios import pg_cut

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def test_postgres_cut_mid_copy_three_times_then_recovers(
        chaos_catalogue: Any, tmp_path: Path) -> None:
    cc = await chaos_catalogue()
    result = await pg_cut(cc, tmp_path, 12_000, rate=1500, seed=404, cuts=3)
    assert result.ok, result.explain()
    assert result.recovery is not None and result.recovery < 10, result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")
