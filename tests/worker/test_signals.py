"""`sinkfleet worker` stops cleanly on SIGTERM at any time after its first line ran: a
supervisor (fleet, Kubernetes) that stops a worker during start-up sees exit 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TestCatalogue

pytestmark = pytest.mark.integration


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (Linux: SigCgt in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


async def wait_catching(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until the worker handles SIGTERM itself (its first line has run)."""
    deadline = time.monotonic() + timeout
    while not catches(proc.pid, signal.SIGTERM):
        assert proc.poll() is None, f"worker exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the worker never installed a SIGTERM handler"
        await asyncio.sleep(0.005)


async def test_sigterm_during_start_up_is_a_clean_stop(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    log = tmp_path / "w.log"
    proc = tc.start_worker(log)
    try:
        await wait_catching(proc)
        proc.send_signal(signal.SIGTERM)  # long before it joins the group
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text
    assert "SIGTERM during start-up" in text and "stopped cleanly: consumed=0" in text, text
