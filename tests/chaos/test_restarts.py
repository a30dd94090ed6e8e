"""LONG profile (SINKFLEET_CHAOS_LONG=1): restart the real PostgreSQL, Kafka broker and
Redis of the stack under two running workers, and FLUSHALL its Redis: steady → inject
(stop the server) → heal (start it) → recover → verify (tests/chaos/__init__.py).

Opt-in because it restarts the servers and flushes the Redis every other test on this
stack uses: run it on a private stack (other ports and SINKFLEET_STATE_DIR; see
`sinkfleet stack env`), as benchmarks/chaos_report.py does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.config import Settings
from tests.chaos.scenarios import redis_flush, restart

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.skipif(os.environ.get("SINKFLEET_CHAOS_LONG") != "1",
                       reason="long chaos profile: set SINKFLEET_CHAOS_LONG=1"),
]
N, RATE = 12_000, 1500


@pytest.mark.parametrize(("service", "within"), [("postgres", 10), ("kafka", 30), ("redis", 10)])
async def test_restart(service: str, within: float, stack: Settings, chaos_catalogue: Any,
                       tmp_path: Path) -> None:
    cc = await chaos_catalogue(max_records=300)
    result = await restart(cc, tmp_path, N, stack, service, rate=RATE,
                           seed={"postgres": 71, "kafka": 72, "redis": 73}[service])
    assert result.ok, result.explain()
    # Kafka: the group re-forms after the broker, bounded by the session timeout.
    assert result.recovery is not None and result.recovery < within, result.explain()
    print(result.fault, f"recovered in {result.recovery:.1f}s", result.notes)


async def test_redis_flushall(chaos_catalogue: Any, tmp_path: Path) -> None:
    cc = await chaos_catalogue()
    result = await redis_flush(cc, tmp_path, N, rate=RATE, seed=74, flushall=True)
    assert result.ok, result.explain()
    print(result.fault, result.notes)
