"""Helpers shared by the benchmarks (run as scripts: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import contextlib
import cProfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from sinkfleet.config import Settings
from sinkfleet.sink.postgres.connect import connect


@contextlib.contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """cProfile the block into ``path`` (a .pstats file); a no-op when ``path`` is None."""
    if path is None:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(path)


class StoredOffsets:
    """The next offsets a group stored in PostgreSQL with its rows, summed (awaitable)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings, self.group = settings, group
        self._conn: asyncpg.Connection | None = None

    async def __call__(self) -> int:
        if self._conn is None:
            self._conn = await connect(self.settings)
        total = await self._conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM sinkfleet.consumer_offsets"
            " WHERE group_id = $1", self.group)
        return int(total)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
