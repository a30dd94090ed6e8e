"""A periodic one-line progress report for a running worker."""

from __future__ import annotations

import asyncio
import logging
import time

from sinkfleet.worker.loop import Worker

log = logging.getLogger("sinkfleet.worker")


async def report_progress(worker: Worker, every: float = 5.0) -> None:
    last_stored, last_time = 0, time.monotonic()
    while True:
        await asyncio.sleep(every)
        st, now = worker.stats, time.monotonic()
        rate = (st.stored - last_stored) / (now - last_time)
        last_stored, last_time = st.stored, now
        log.info("group=%s partitions=%d consumed=%d stored=%d (%.0f/s) dead_lettered=%d",
                 worker.spec.group, len(worker.assignment), st.consumed, st.stored, rate,
                 st.dead_lettered)
