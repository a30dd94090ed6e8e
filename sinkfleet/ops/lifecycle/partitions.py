"""What PostgreSQL says about a sink's time partitions, and the DDL retention and
restore run on them (detach, drop, create). Every DDL step on a parent table takes
``MIGRATION_LOCK_KEY`` (the key `db migrate` and its partition maintenance hold), so
it never interleaves with a migration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.errors import SinkfleetError
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident
from sinkfleet.sink.postgres.layout import partition_statements
from sinkfleet.sink.postgres.migrate import MIGRATION_LOCK_KEY

# A plain DETACH takes an ACCESS EXCLUSIVE lock on the parent: while it waits, new
# inserts queue behind it. Wait at most this long, then let the workers through and
# try again (LOCK_TRIES times).
LOCK_TIMEOUT_MS = 2000
LOCK_TRIES = 10


class RetentionError(SinkfleetError):
    """A retention step could not be carried out (nothing was dropped)."""


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None: the DEFAULT partition, or an unbounded one
    end: datetime | None
    is_default: bool
    detach_pending: bool  # an interrupted DETACH … CONCURRENTLY
    bytes: int
    schema: str = ""  # the partition's own schema (usually the sink's)


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def default_partition(sink: Sink) -> str:
    return derived_name(sink.spec.table, "default")


async def table_exists(conn: asyncpg.Connection, sink: Sink) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                    sink.spec.qualified_table))


_BOUNDS = r"FROM \('([^']+)'\) TO \('([^']+)'\)"


async def list_partitions(conn: asyncpg.Connection, sink: Sink) -> list[Partition]:
    """The partitions attached to the sink's table (and detaching), oldest first."""
    rows = await conn.fetch(
        "SELECT name, bound = 'DEFAULT' AS is_default, m[1]::timestamptz AS start,"
        " m[2]::timestamptz AS end, pending, bytes, schema FROM ("
        "  SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,"
        "   c.relnamespace::regnamespace::text AS schema,"
        "   regexp_match(pg_get_expr(c.relpartbound, c.oid), $2) AS m,"
        "   coalesce((to_jsonb(i) ->> 'inhdetachpending')::boolean, false) AS pending,"
        "   pg_total_relation_size(c.oid) AS bytes"
        "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        "  WHERE i.inhparent = to_regclass($1)) p ORDER BY start NULLS FIRST, name",
        sink.spec.qualified_table, _BOUNDS)
    return [Partition(r["name"], r["start"], r["end"], r["is_default"], r["pending"],
                      r["bytes"], r["schema"].strip('"')) for r in rows]


async def relation_state(conn: asyncpg.Connection, sink: Sink, name: str) -> str:
    """'attached', 'detaching' (DETACH CONCURRENTLY interrupted), 'detached' or 'gone'."""
    row = await conn.fetchrow(
        "SELECT c.oid, coalesce((to_jsonb(i) ->> 'inhdetachpending')::boolean, false) AS p,"
        " i.inhrelid IS NOT NULL AS attached FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
        " WHERE n.nspname = $1 AND c.relname = $2", sink.spec.db_schema, name)
    if row is None:
        return "gone"
    if not row["attached"]:
        return "detached"
    return "detaching" if row["p"] else "attached"


async def count_rows(conn: asyncpg.Connection, schema: str, name: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM ONLY {qualified(schema, name)}"))


async def stranded(conn: asyncpg.Connection, sink: Sink, horizon: datetime
                   ) -> tuple[int, datetime | None]:
    """Rows in the DEFAULT partition older than ``horizon`` (retention never drops them)."""
    spec = sink.spec
    assert spec.time_column is not None
    tcol = quote_ident(spec.time_column)
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, min({tcol}) AS oldest FROM ONLY"
        f" {qualified(spec.db_schema, default_partition(sink))} WHERE {tcol} < $1", horizon)
    return int(row["n"]), row["oldest"]


@contextlib.asynccontextmanager
async def migration_lock(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Hold the `db migrate` advisory lock (session level: re-entrant) for a DDL step."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def detach(conn: asyncpg.Connection, sink: Sink, name: str, concurrently: bool
                 ) -> str:
    """Detach partition ``name``: CONCURRENTLY when the table has no DEFAULT partition
    (PostgreSQL refuses it otherwise), else a plain DETACH that waits at most
    LOCK_TIMEOUT_MS for its lock at a time. Returns how it was detached."""
    parent, child = sink.spec.qualified_table, qualified(sink.spec.db_schema, name)
    state = await relation_state(conn, sink, name)
    if state in ("detached", "gone"):
        return state
    async with migration_lock(conn):
        if state == "detaching":
            await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {child} FINALIZE")
            return "finalized"
        if concurrently:  # not inside a transaction block
            try:
                await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {child}"
                                   " CONCURRENTLY")
                return "concurrently"
            except asyncpg.ObjectNotInPrerequisiteStateError:
                pass  # a DEFAULT partition appeared meanwhile
        for attempt in range(LOCK_TRIES):
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                    await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {child}")
                return "plain"
            except asyncpg.LockNotAvailableError:
                await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt))
    raise RetentionError(
        f"could not lock {parent} for DETACH within {LOCK_TIMEOUT_MS} ms in {LOCK_TRIES}"
        " tries (a long transaction on the table?); nothing was dropped, run again later")


async def create_partition(conn: asyncpg.Connection, sink: Sink, name: str, start: datetime,
                           end: datetime) -> bool:
    """Create and attach partition ``name`` for [start, end) unless one with these bounds
    is attached; rows of that range sitting in DEFAULT move into it (as
    ``ensure_partitions`` does). Returns True if it created one."""
    spec = sink.spec
    assert spec.time_column is not None
    for part in await list_partitions(conn, sink):
        if part.start == start and part.end == end:
            return False
        if part.start is not None and part.end is not None and part.start < end \
                and start < part.end:
            raise RetentionError(
                f"{spec.qualified_table} has partition {part.name} for [{part.start},"
                f" {part.end}), which overlaps the archived range [{start}, {end}): the"
                " partitioning changed since; restore into a table partitioned as before")
    tcol = quote_ident(spec.time_column)
    default, child = qualified(spec.db_schema, default_partition(sink)), \
        qualified(spec.db_schema, name)
    async with migration_lock(conn), conn.transaction():
        stray = await conn.fetchval(
            f"SELECT count(*) FROM ONLY {default} WHERE {tcol} >= $1 AND {tcol} < $2",
            start, end)
        for sql in partition_statements(sink, child, start, end, default if stray else None):
            await conn.execute(sql)
    return True
