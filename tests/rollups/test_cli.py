"""``sinkfleet rollups`` refuses to start, with one line saying what to do, when it lacks
what it needs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.config import Settings
from tests.support.catalogue import TestCatalogue, make_catalogue

pytestmark = pytest.mark.integration


def rollups(tc: TestCatalogue, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sinkfleet", "rollups", *args],
                          env=tc.env(), cwd=tc.root, capture_output=True, text=True,
                          timeout=120)


async def test_refusals_name_the_fix(catalogue_factory: Callable[..., Any], stack: Settings,
                                     tmp_path: Path) -> None:
    events_only = await catalogue_factory()  # migrated: the summary tables exist
    out = rollups(events_only, "--family", "experience_event")
    assert out.returncode == 2, out.stderr
    assert "error: cannot roll up experience_event" in out.stderr
    out = rollups(events_only)
    assert out.returncode == 2 and "nothing to roll up" in out.stderr, out.stderr

    unapplied = make_catalogue(tmp_path, stack, family="learning_metric")  # no topic yet
    out = rollups(unapplied)
    assert out.returncode == 2, out.stderr
    assert f"topic {unapplied.topic} does not exist" in out.stderr
    assert "sinkfleet topics apply" in out.stderr
    assert "Traceback" not in out.stderr
