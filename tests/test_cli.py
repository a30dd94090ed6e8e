"""The CLI: user mistakes give one clear line and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def sinkfleet(*args: str, home: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINKFLEET_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("args, message", [
    (("worker", "--spec", "nope"), "no worker spec 'nope' in workers/"),
    (("produce", "--family", "nope", "--count", "1"), "no topic carries family 'nope'"),
    (("stack", "up", "--only", "zookeeper"), "unknown service"),
])
def test_user_mistakes_are_one_clear_line(args: tuple[str, ...], message: str) -> None:
    out = sinkfleet(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_missing_catalogue_says_what_to_do(tmp_path: Path) -> None:
    out = sinkfleet("catalogue", "check", home=tmp_path)
    assert out.returncode == 2
    assert "SINKFLEET_HOME" in out.stderr and "Traceback" not in out.stderr


def test_catalogue_check_passes_on_the_project() -> None:
    out = sinkfleet("catalogue", "check")
    assert out.returncode == 0, out.stderr
    assert "catalogue ok: 1 schemas, 1 topics, 1 sinks, 1 workers" in out.stdout


def test_bad_option_value_is_a_usage_error() -> None:
    out = sinkfleet("produce", "--family", "experience_event", "--count", "0")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
