"""benchmarks/latency.py end to end at a small size, so the latency benchmark cannot rot:
every published event's commit time is found (exactly one row each), every event shows
up in the Redis cache, and the percentiles are ordered and positive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinkfleet.config import Settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_latency_benchmark_measures_every_event(stack: Settings, tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "latency.py"), "--seconds", "3",
         "--calibrate", "3000", "--levels", "0.05", "--max-age-ms", "50",
         "--json", str(out), "--timeout", "240"],
        cwd=ROOT, env={**os.environ, "SINKFLEET_STATE_DIR": str(stack.state)},
        capture_output=True, text=True, timeout=560, check=False)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    levels = json.loads(out.read_text())
    assert [(lv["max_age_ms"], lv["fraction"]) for lv in levels] == [(50, 0.05)]
    for lv in levels:
        assert lv["events"] == int(lv["rate"] * 3) > 0
        committed, redis = lv["committed_ms"], lv["redis_ms"]
        assert committed["n"] == lv["events"]  # one committed row per published event
        assert lv["redis_seen"] == redis["n"] == lv["events"]  # and each one in Redis
        for p in (committed, redis):
            assert 0 < p["p50"] <= p["p99"] <= p["max"]
        assert "end-to-end latency" in run.stdout
