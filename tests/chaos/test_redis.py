"""Chaos 5: Redis faults under load. PostgreSQL ingest never stops or fails (exactly once
still holds), cache errors are counted, and the caches — the state sink's ``latest``,
the events' ``recent`` — equal what PostgreSQL holds again without anyone's help.

The fast profile cuts Redis with a TCP proxy and deletes these sinks' keys (the Redis
may be shared); the long profile (test_restarts.py) restarts and FLUSHALLs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chaos.scenarios import redis_cut, redis_flush

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def test_redis_outage_never_stops_ingest_and_caches_are_repaired(
        chaos_catalogue: Any, tmp_path: Path) -> None:
    cc = await chaos_catalogue()
    result = await redis_cut(cc, tmp_path, 6_000, rate=1500, seed=505, cut_s=2.0)
    assert result.ok, result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")


async def test_redis_losing_every_key_is_repaired_by_the_workers(
        chaos_catalogue: Any, tmp_path: Path) -> None:
    cc = await chaos_catalogue()
    result = await redis_flush(cc, tmp_path, 6_000, rate=1500, seed=606, flushall=False)
    assert result.ok, result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")
