"""Helpers for the retention-tier tests: a project ledger as a test family, rows written
straight into its partitions, `sinkfleet retention run --now` as a process, and the
summary a tier should hold, computed in Python from the records."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sinkfleet.config import load_settings
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.migrate import ensure_partitions
from tests.support.catalogue import catalogue_env
from tests.support.family import Family, rows

EPOCH_MONDAY = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday: day and week windows start here


def with_archive(fam: Family, archive: Path) -> Family:
    fam.settings = load_settings(home=fam.root, state_dir=fam.settings.state,
                                 archive_dir=archive)
    return fam


async def make_partitions(fam: Family, at: datetime) -> list[str]:
    """The partitions `db migrate` would make if it ran at ``at`` (history … premake)."""
    conn = await connect(fam.settings)
    try:
        return await ensure_partitions(conn, fam.sink, now=at)
    finally:
        await conn.close()


async def insert(fam: Family, records: Iterable[dict[str, Any]], table: str | None = None
                 ) -> None:
    """Rows with the sink's columns (bar defaults) into its table, or into ``table``."""
    records = list(records)
    names = list(records[0])
    target = f'"{table or fam.table}"'
    cols = ", ".join(f'"{n}"' for n in names)
    params = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    conn = await connect(fam.settings)
    try:
        await conn.executemany(
            f"INSERT INTO {target} ({cols}) VALUES ({params})",
            [tuple(r[n] for n in names) for r in records])
    finally:
        await conn.close()


def retention_cli(fam: Family, archive: Path, now: datetime, *args: str
                  ) -> subprocess.CompletedProcess[str]:
    """`sinkfleet retention run --now NOW` on the family's catalogue."""
    env = {**catalogue_env(fam.root, fam.settings), "SINKFLEET_ARCHIVE_DIR": str(archive),
           "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sinkfleet", "retention", "run", "--now", now.isoformat(),
         "--nice", "0", *args], cwd=fam.root, env=env, capture_output=True, text=True,
        timeout=180)


def window(ts: datetime, grain: str) -> datetime:
    """date_trunc(grain, ts, 'UTC') (weeks start on Monday)."""
    day = ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if grain == "week" else day


Summary = dict[tuple[Any, ...], tuple[Any, ...]]


def expected_summary(records: Iterable[dict[str, Any]], time: str, grain: str,
                     by: list[str], values: list[str]) -> Summary:
    """(window start, *by) → (rows, then count, exact sum, min, max of each value)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(window(r[time], grain), *(r[c] for c in by))].append(r)
    out: Summary = {}
    for key, members in groups.items():
        stats: list[Any] = [len(members)]
        for v in values:
            xs = [m[v] for m in members if m[v] is not None]
            # a float as its shortest exact decimal (repr), as PostgreSQL prints it
            stats += [len(xs), sum((Decimal(repr(x)) for x in xs), Decimal(0)), min(xs),
                      max(xs)]
        out[key] = tuple(stats)
    return out


async def stored_summary(fam: Family, by: list[str], values: list[str]) -> Summary:
    """What the sink's summary view holds, in the shape of :func:`expected_summary`."""
    cols = [f"{v}_{s}" for v in values for s in ("count", "sum", "min", "max")]
    got = await rows(fam, f'SELECT * FROM "{fam.table}_summary"')
    return {(r["window_start"], *(r[c] for c in by)): (r["rows"], *(r[c] for c in cols))
            for r in got}


async def partition_rows(fam: Family) -> dict[str, int]:
    """Attached partition → its rows (DEFAULT too), for partitions that hold rows."""
    got = await rows(fam, "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c"
                          " ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
                     f'"{fam.table}"')
    out = {}
    for r in got:
        n = (await rows(fam, f'SELECT count(*) AS n FROM ONLY "{r["name"]}"'))[0]["n"]
        if n:
            out[r["name"]] = n
    return out


async def forget_tiers(fam: Family) -> None:
    """What the tiers left beside the family's table: its summary and archive rows."""
    conn = await connect(fam.settings)
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{fam.table}_summary_parts" CASCADE')
        await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                           f"sink:{fam.table}:%")
        await conn.execute("DELETE FROM sinkfleet.archives WHERE sink = $1", fam.table)
        await conn.execute("DELETE FROM sinkfleet.retention_pending WHERE sink = $1",
                           fam.table)
    finally:
        await conn.close()
