"""The hostile-inputs scenario against one real worker: it never exits, every good
record is stored once, exactly the expected records are dead-lettered, at their stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.hostile.inputs import run_hostile_inputs
from tests.support.catalogue import TestCatalogue

pytestmark = pytest.mark.integration


async def test_hostile_inputs_never_stop_the_worker_and_lose_nothing(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1, max_records=200, max_age_ms=50)
    result = await run_hostile_inputs(tc, tmp_path / "w.log", good=600)
    log = (tmp_path / "w.log").read_text()
    assert result.alive, log[-3000:]
    assert result.problems == [], log[-3000:]
    assert (result.lost, result.duplicated) == (0, 0)
    assert result.changed == []  # stored exactly as sent: extreme timestamps, NaN, -0.0
    assert result.dead_actual == result.dead_expected
    assert "Traceback" not in log
