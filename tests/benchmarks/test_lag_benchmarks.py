"""benchmarks/lag_exporter.py and lag_worker_cost.py end to end at a tiny size, so the
two halves of the lag benchmark (and _lag.py under them) cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.config import Settings
from tests.support.catalogue import ROOT

pytestmark = pytest.mark.integration
GROUPS, PARTITIONS = 3, 4


def bench(stack: Settings, script: str, out: Path, *args: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--groups", str(GROUPS),
         "--partitions", str(PARTITIONS), "--json", str(out), *args],
        cwd=ROOT, env={**os.environ, "SINKFLEET_STATE_DIR": str(stack.state)},
        capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.timeout(700)
def test_lag_exporter_measures_collections_scrapes_and_accuracy(stack: Settings,
                                                                 tmp_path: Path) -> None:
    doc = bench(stack, "lag_exporter.py", tmp_path / "lag.json", "--interval", "1")
    assert [(c["what"], c["group_partitions"]) for c in doc["collect"]] == [
        (what, GROUPS * PARTITIONS) for what in ("cold", "warm", "moved", "full")]
    assert doc["http"]["/metrics"]["lag_seconds_series"] >= GROUPS * PARTITIONS
    assert doc["http"]["/metrics"]["median_s"] < 5  # a GET is not a keep-alive timeout
    acc = doc["accuracy"]
    assert (acc["pairs"], acc["unknown"], acc["wrong_offset"]) == (24, 0, 0)
    assert doc["staleness"]["scrapes"] > 1
    assert doc["cleanup"] == {"errors": [], "topics_deleted": 1, "groups": GROUPS,
                              "groups_deleted": GROUPS, "group_errors": {}}


@pytest.mark.timeout(700)
def test_lag_worker_cost_runs_a_worker_with_and_without_an_exporter(stack: Settings,
                                                                    tmp_path: Path) -> None:
    doc = bench(stack, "lag_worker_cost.py", tmp_path / "cost.json", "--count", "2000",
                "--rounds", "1", "--warmup", "0")
    runs = doc["workers"]
    assert [(r["kind"], r["events"], r["rows"]) for r in runs] == [("A", 2000, 2000),
                                                                  ("B", 2000, 2000)]
    assert runs[0]["exporter"] == {} and runs[1]["exporter"]["saw_worker_group"] is True
    assert runs[1]["exporter"]["group_partitions"] >= GROUPS * PARTITIONS
    assert doc["cleanup"]["errors"] == [] and doc["cleanup"]["groups_deleted"] == GROUPS + 2
