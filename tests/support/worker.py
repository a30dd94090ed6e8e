"""Worker processes in tests: publish to a test catalogue, wait until stored, stop, and
see whether a process handles a signal yet."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from sinkfleet.dev.produce import produce
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from tests.support.catalogue import TestCatalogue
from tests.support.postgres import stored_offsets
from tests.support.waiting import async_wait_for


async def publish(tc: TestCatalogue, n: int, seed: int) -> list[dict[str, Any]]:
    load = ExperienceLoad(seed=seed, agents=16, agent_prefix=f"t{tc.suffix}")
    result = await produce(tc.settings, tc.catalogue, "experience_event", iter(load), n,
                           keep=True)
    assert result.records is not None and len(result.records) == n
    return result.records


async def wait_all_stored(tc: TestCatalogue, n: int, timeout: float = 120) -> None:
    async def done() -> bool:
        return sum((await stored_offsets(tc)).values()) >= n

    await async_wait_for(done, timeout, f"{n} records stored by group {tc.group}")


def stop(proc: Any, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(60)


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
