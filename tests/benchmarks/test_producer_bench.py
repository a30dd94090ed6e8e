"""benchmarks/producer.py end to end at a small size, so the producer benchmark cannot
rot: every stage acknowledges every record and reports its rate, CPU and latencies."""

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


@pytest.mark.timeout(300)
def test_producer_benchmark_acknowledges_every_record(stack: Settings, tmp_path: Path) -> None:
    out = tmp_path / "producer.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "producer.py"), "--records", "2000",
         "--chunk", "300", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "SINKFLEET_STATE_DIR": str(stack.state)},
        capture_output=True, text=True, timeout=280, check=False)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert (result["records"], result["chunk"]) == (2000, 300)
    stages = {s["name"]: s for s in result["stages"]}
    assert list(stages) == ["raw", "publish", "publish_many"]
    for s in stages.values():
        assert s["records"] == s["acked"] == 2000
        assert s["per_s"] > 0 and s["seconds"] > 0 and s["cpu_us_per_record"] > 0
        assert s["vs_raw"] == pytest.approx(s["per_s"] / stages["raw"]["per_s"])
    assert stages["raw"]["call_us"] == {}
    assert stages["publish"]["call_us"]["n"] == 2000  # every publish() call timed
    assert stages["publish_many"]["call_us"]["n"] == 7  # ceil(2000 / 300) calls
    for s in ("publish", "publish_many"):
        c = stages[s]["call_us"]
        assert 0 < c["p50"] <= c["p99"] <= c["max"]
    assert "records/s" in run.stdout
