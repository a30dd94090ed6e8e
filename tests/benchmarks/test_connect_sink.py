"""benchmarks/connect_sink.py end to end at a small size, so the Connect stage cannot rot:
Kafka Connect standalone + the Debezium JDBC sink (jars fetched by the project's own
Maven fetch on first use) stores every event exactly once, in both insert modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinkfleet.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COUNT = 2_000

pytestmark = pytest.mark.integration


# ~20 s with the jars cached (two JVM starts); a clean clone first downloads ~70 MB.
@pytest.mark.timeout(900)
def test_connect_stages_store_every_event_once(stack: Settings, tmp_path: Path) -> None:
    out = tmp_path / "connect.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "connect_sink.py"), "--count", str(COUNT),
         "--json", str(out), "--timeout", "120"],
        cwd=ROOT, env={**os.environ, "SINKFLEET_STATE_DIR": str(stack.state)},
        capture_output=True, text=True, timeout=840, check=False)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    doc = json.loads(out.read_text())
    assert doc["count"] == COUNT
    assert sorted(doc["stages"]) == ["insert", "upsert"]
    for mode in ("insert", "upsert"):
        check = doc["integrity"][mode]
        # exact count, no duplicate keys, every row equal to COPY's row field by field
        assert (check["rows"], check["keys"], check["mismatches"]) == (COUNT, COUNT, 0), mode
        stage = doc["stages"][mode]
        assert stage["rows"] == COUNT
        assert 0 < stage["startup_s"] <= stage["seconds"]
        assert 0 < stage["cpu_at_first_s"] <= stage["cpu_s"]
