"""benchmarks/e2e_events.py drops the `bench` schema and topics when it starts: a second
run at the same time (same stack) must fail at once and say why, not clobber the first."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinkfleet.config import Settings
from tests.support.catalogue import ROOT

pytestmark = pytest.mark.integration


def test_a_second_run_at_the_same_time_fails_clearly(stack: Settings, tmp_path: Path) -> None:
    lock = stack.state / "run" / "bench-e2e_events.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "e2e.json"
    with open(lock, "a+") as fh:  # as a first run holds it
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.seek(0)
        fh.truncate()
        fh.write("4242\n")
        fh.flush()
        run = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "e2e_events.py"), "--count", "10",
             "--no-connect", "--json", str(out)],
            cwd=ROOT, env={**os.environ, "SINKFLEET_STATE_DIR": str(stack.state)},
            capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert (f"error: another e2e_events.py run (pid 4242) uses the bench schema and topics"
            f" on this stack; wait for it to finish (lock: {lock})") in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()


def test_a_missing_bench_extra_fails_before_any_stage(stack: Settings, tmp_path: Path) -> None:
    """Stage (d) needs the bench extra (quixstreams, psycopg2): without it the run stops
    at once, naming what to install, instead of failing minutes later at (d)."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    # a finder that makes the extra look absent, whatever this environment has
    (blocker / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class _Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('quixstreams', 'psycopg2'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Absent())\n")
    out = tmp_path / "e2e.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "e2e_events.py"), "--count", "10",
         "--no-connect", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "SINKFLEET_STATE_DIR": str(stack.state),
                       "PYTHONPATH": str(blocker)},
        capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert ("error: quixstreams, psycopg2 not installed (the bench extra): run `make bench`,"
            " or `.venv/bin/pip install -e '.[dev,bench]'` first") in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert "(b) sinkfleet worker" not in run.stdout  # no stage ran
    assert not out.exists()
