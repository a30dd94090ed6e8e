"""The CLI in a subprocess, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.cache import CacheCatalogue
from tests.support.catalogue import ROOT, TestCatalogue


def sinkfleet(tc: TestCatalogue | None, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, on ``tc``'s catalogue (or the project's)."""
    env = tc.env() if tc else {**os.environ, "SINKFLEET_HOME": str(ROOT)}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], capture_output=True,
                          text=True, env=env, timeout=180)


def query(cc: CacheCatalogue, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINKFLEET_HOME": str(cc.root),
           "SINKFLEET_STATE_DIR": str(cc.settings.state), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sinkfleet", "query", *args], env=env,
                          capture_output=True, text=True, timeout=60)
