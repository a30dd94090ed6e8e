"""Chaos 3: 1 % poison records (garbage bytes and valid Avro that fails row validation)
mixed into good ones: exactly the poison is dead-lettered, exactly the good is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chaos.scenarios import poison
from tests.support.deadletters import read_all

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def test_one_percent_poison_is_dead_lettered_exactly(
        chaos_catalogue: Any, tmp_path: Path) -> None:
    cc = await chaos_catalogue()
    result = await poison(cc, tmp_path, 10_000, rate=None, seed=303, share=0.01)
    assert result.ok, result.explain()
    assert 50 < result.tally.dlq_expected < 150, result.tally
    dead = await read_all(cc.settings, f"{cc.topics['experience_event']}.dlq",
                          result.tally.dlq_expected)
    stages = sorted(dict(m.headers)["sinkfleet.stage"].decode() for m in dead)
    assert len(stages) == result.tally.dlq_expected
    assert 0 < stages.count("decode") < len(stages), stages  # both kinds, nothing else
    assert set(stages) == {"decode", "validate"}, stages
    print(result.fault, result.tally.dlq_actual, f"{result.seconds:.1f}s")
