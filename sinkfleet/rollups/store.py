"""Write window aggregates to PostgreSQL's summary tables (migration 0007_rollups.sql).

Every write *sets* a row to the state's value — never adds to it — and only moves a row
forward: an update applies when it has absorbed a later source offset, or closes the
window at the same offset. So a window written again after a restart, or by a zombie
instance after a rebalance, changes nothing; the faust state is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from decimal import Decimal

import asyncpg

from sinkfleet.config import Settings
from sinkfleet.rollups.families import Family
from sinkfleet.rollups.windows import Entry, EntryKey, from_micros
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect

log = logging.getLogger("sinkfleet.rollups")


def upsert_sql(family: Family) -> str:
    """The idempotent, forward-only upsert of one part row of ``family``'s table."""
    cols = ["topic", "window_size", "window_start", *family.dims, "kafka_partition", "count"]
    if family.values:
        cols += ["sum", "min", "max"]
    cols += ["last_offset", "final"]
    key = ["topic", "window_size", "window_start", *family.dims, "kafka_partition"]
    updated = [c for c in cols if c not in key]
    params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return (f"INSERT INTO sinkfleet.{family.table} AS t ({', '.join(cols)}) VALUES ({params})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in updated) + ", updated_at = now()"
            " WHERE t.last_offset < EXCLUDED.last_offset"
            " OR (t.last_offset = EXCLUDED.last_offset AND EXCLUDED.final AND NOT t.final)")


def row_args(topic: str, family: Family, key: EntryKey, entry: Entry, final: bool
             ) -> tuple[object, ...]:
    partition, size, start, *dims = key
    values: tuple[object, ...] = ()
    if family.values:
        values = tuple(None if v is None else Decimal(v)
                       for v in (entry["s"], entry["lo"], entry["hi"]))
    return (topic, size, from_micros(start), *dims, partition, entry["n"], *values,
            entry["o"], final)


class SummaryWriter:
    """One connection, one lock: state snapshots are taken and written under the lock, so
    a timer flush can never land after (and over) the final write of a closing window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = asyncio.Lock()
        self.rows_written = 0
        self._conn: asyncpg.Connection | None = None

    async def write(self, topic: str, family: Family,
                    rows: Iterable[tuple[EntryKey, Entry]], final: bool) -> int:
        """Upsert ``rows`` in one transaction; call with ``lock`` held. Retries while
        PostgreSQL is unavailable (the stream waits: nothing is lost or skipped)."""
        args = [row_args(topic, family, key, entry, final) for key, entry in rows]
        if not args:
            return 0
        sql = upsert_sql(family)
        delay = 0.2
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self.settings)
                async with self._conn.transaction():
                    await self._conn.executemany(sql, args)
            except RETRIABLE_STORAGE as exc:
                await self.close()
                log.warning("summary write to PostgreSQL failed (%s: %s); retrying in %.1fs",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
            else:
                self.rows_written += len(args)
                return len(args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
