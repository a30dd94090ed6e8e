"""The worker's row in sinkfleet.workers, refreshed every few seconds on its own
connection (the store path's connection is busy with batches)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import asyncpg

from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect

if TYPE_CHECKING:
    from sinkfleet.worker.loop import Worker

log = logging.getLogger("sinkfleet.worker")

UPSERT = """
INSERT INTO sinkfleet.workers AS w (worker_id, group_id, host, pid, metrics_url, state,
    assigned, consumed, stored, dead_lettered)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (worker_id) DO UPDATE SET state = EXCLUDED.state,
    metrics_url = EXCLUDED.metrics_url, assigned = EXCLUDED.assigned,
    consumed = EXCLUDED.consumed, stored = EXCLUDED.stored,
    dead_lettered = EXCLUDED.dead_lettered, heartbeat_at = now()
"""


def _row(worker: Worker, state: str) -> tuple[Any, ...]:
    url = None
    if worker.metrics_bound is not None:
        url = f"http://{worker.settings.metrics_host}:{worker.metrics_bound}/metrics"
    st = worker.stats
    return (worker.worker_id, worker.spec.group, socket.gethostname(), os.getpid(), url,
            state, len(worker.assignment), st.consumed, st.stored, st.dead_lettered)


# A hold is a lease (migration 0009): one its `replay apply` stopped renewing is over.
HOLD = ("SELECT reason FROM sinkfleet.group_holds WHERE group_id = $1"
        " AND expires_at > now()")


async def heartbeat(worker: Worker, every: float = 5.0, hold_every: float = 1.0) -> None:
    """Report until cancelled, and watch for a hold on the group (`replay apply
    --stop-fleet`). Never ends on an error: any failure (PostgreSQL down, a revoked
    grant, a bug) is shown at once as the ``heartbeat`` component of the worker's health
    and retried with back-off; the hold last seen stays in force meanwhile."""
    conn: asyncpg.Connection | None = None
    last_beat = -every
    delay = hold_every
    try:
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await connect(worker.settings, timeout=5)
                if asyncio.get_running_loop().time() - last_beat >= every:
                    await conn.execute(UPSERT, *_row(worker, worker.health.state))
                    last_beat = asyncio.get_running_loop().time()
                try:
                    worker.hold_reason = await conn.fetchval(HOLD, worker.spec.group)
                except (asyncpg.UndefinedTableError,  # a database not migrated to 0005 yet
                        asyncpg.UndefinedColumnError):  # ... or to 0009 (apply refuses then)
                    worker.hold_reason = None
            except Exception as exc:
                retriable = isinstance(exc, RETRIABLE_STORAGE)
                worker.health.degrade("heartbeat", f"{type(exc).__name__}: {exc}" + (
                    "" if retriable else "; holds and the workers table are not updated"))
                if conn is not None:
                    conn.terminate()
                conn = None
                delay = min(delay * 2, every * 2)
            else:
                worker.health.recover("heartbeat")
                delay = hold_every
            await asyncio.sleep(delay)
    finally:
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.execute(UPSERT, *_row(worker, "stopped")), 5)
            conn.terminate()  # never wait on a close handshake while shutting down
