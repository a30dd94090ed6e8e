"""The worker's PostgreSQL connection: reconnect with jittered back-off while PostgreSQL
is down, and say so at once in the worker's health and metrics."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import asyncpg

from sinkfleet.config import Settings
from sinkfleet.http import Health
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect
from sinkfleet.worker.metrics import WorkerMetrics

log = logging.getLogger("sinkfleet.worker")
T = TypeVar("T")


class Prepared(Protocol):
    async def prepare(self, conn: asyncpg.Connection) -> None: ...


class Storage:
    """One connection for the store path, prepared for ``writers`` when (re)made."""

    def __init__(self, settings: Settings, writers: Iterable[Prepared], health: Health,
                 metrics: WorkerMetrics, group: str, max_delay: float = 10.0) -> None:
        self.settings, self.health, self.metrics, self.group = settings, health, metrics, group
        self.writers = list(writers)
        self.max_delay = max_delay
        self._conn: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(self.settings)
            for writer in self.writers:
                await writer.prepare(conn)
            self._conn = conn
        return self._conn

    def drop(self) -> None:
        """Forget the connection without a close handshake (it may be mid-statement)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()

    async def run(self, what: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``fn(conn)``, retried on a fresh connection while PostgreSQL is unavailable.
        Anything else (a refused record, a missing grant) is the caller's to handle."""
        delay = 0.2
        while True:
            try:
                result = await fn(await self.connection())
            except RETRIABLE_STORAGE as exc:
                self.drop()
                self.health.degrade("storage", f"PostgreSQL unavailable while {what}"
                                    f" ({type(exc).__name__}); retrying")
                self.metrics.storage_retries.labels(self.group).inc()
                log.debug("%s: PostgreSQL unavailable (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_delay)
            else:
                self.health.recover("storage")
                return result

    async def ping(self, conn: asyncpg.Connection) -> Any:
        return await conn.fetchval("SELECT 1")
