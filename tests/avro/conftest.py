"""A watchdog for the hostile-input tests."""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

WATCHDOG = float(os.environ.get("SINKFLEET_AVRO_WATCHDOG", "120"))  # seconds per test


def _real_stderr(config: pytest.Config) -> Any:
    """The un-captured stderr pytest's faulthandler plugin writes to, if it can be found."""
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key

        return config.stash[fault_handler_stderr_fd_key]
    except (ImportError, KeyError):
        return sys.stderr


@pytest.fixture(autouse=True)
def _watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    # If a guard regresses, fastavro spins in C holding the GIL, where neither signals nor
    # pytest-timeout get through; faulthandler's C thread still ends the run, with stacks.
    faulthandler.dump_traceback_later(WATCHDOG, exit=True, file=_real_stderr(request.config))
    yield
    faulthandler.cancel_dump_traceback_later()
