"""`sinkfleet worker` stops cleanly on SIGTERM at any time after its first line ran: a
supervisor (fleet, Kubernetes) that stops a worker during start-up sees exit 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.catalogue import TestCatalogue
from tests.support.worker import wait_catching

pytestmark = pytest.mark.integration


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
