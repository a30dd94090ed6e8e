"""The tiers beside detail (docs/retention.md): a partition's summary, copies of a
forever-kept sink's partitions, and the expiry of summary windows and archive files.

Order matters for the summary: :func:`summarise` runs in the transaction that drops the
partition (run.py), from the detached table, so the summary of dropped detail is
stored exactly when the detail goes — never after, never lost.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.ops.lifecycle.archive.store import (
    ArchiveFile,
    archive_partition,
    manifest_path,
    record,
)
from sinkfleet.ops.lifecycle.partitions import RetentionError
from sinkfleet.ops.lifecycle.retention.plan import SinkPlan, Step
from sinkfleet.sink.postgres.summary_sql import (
    count_expired_sql,
    expire_summary_sql,
    has_summary,
    parts_table,
    summarise_sql,
)


async def summarise(conn: asyncpg.Connection, sink: Sink, partition: str) -> int:
    """Replace the summary parts of ``partition`` by its rows grouped (call inside the
    transaction that drops it); returns the part rows written."""
    delete, insert = summarise_sql(sink, sink.spec.db_schema, partition)
    await conn.execute("SET LOCAL extra_float_digits = 1")  # floats as shortest exact text
    await conn.execute(delete, partition)
    status = await conn.execute(insert, partition)
    return int(status.split()[-1])


async def last_archived_rows(conn: asyncpg.Connection, sink: Sink) -> dict[str, int]:
    """Partition → rows of its latest archive file (copies of a forever-kept sink)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (partition) partition, rows FROM sinkfleet.archives"
        " WHERE sink = $1 ORDER BY partition, archived_at DESC, id DESC", sink.spec.name)
    return {r["partition"]: r["rows"] for r in rows}


async def copy_partition(conn: asyncpg.Connection, root: Path, sink: Sink, step: Step
                         ) -> ArchiveFile | None:
    """Archive an attached partition of a forever-kept sink, and record it (not
    dropped); None if it has no rows by now."""
    archive = await archive_partition(conn, root, sink, step.partition, step.start, step.end)
    assert archive is not None
    if not archive.rows:
        (root / archive.path).unlink(missing_ok=True)
        manifest_path(root / archive.path).unlink(missing_ok=True)
        return None
    return await record(conn, archive, dropped=False)


async def require_summary_table(conn: asyncpg.Connection, sink: Sink) -> None:
    """A sink with a summary tier needs its part table (made by `db migrate`)."""
    if has_summary(sink) and await conn.fetchval("SELECT to_regclass($1)",
                                                 parts_table(sink)) is None:
        raise RetentionError(
            f"summary table {parts_table(sink).replace(chr(34), '')} of sink"
            f" {sink.spec.name} does not exist: run `sinkfleet db migrate` (nothing was"
            " dropped)")


async def count_tier_expiry(conn: asyncpg.Connection, sink: Sink, plan: SinkPlan) -> None:
    """Fill in what the plan's summary and archive horizons let go."""
    if plan.summary_horizon is not None and has_summary(sink):
        plan.summary_expiring = int(await conn.fetchval(count_expired_sql(sink),
                                                        plan.summary_horizon))
    if plan.archive_horizon is not None:
        plan.archives_expiring = [(r["id"], r["path"]) for r in await conn.fetch(
            "SELECT id, path FROM sinkfleet.archives WHERE sink = $1 AND range_end <= $2"
            " ORDER BY range_start, id", sink.spec.name, plan.archive_horizon)]


async def expire_summary(conn: asyncpg.Connection, sink: Sink, horizon: datetime) -> int:
    """Delete the summary windows that ended at or before ``horizon``."""
    status = await conn.execute(expire_summary_sql(sink), horizon)
    return int(status.split()[-1])


async def expire_archives(conn: asyncpg.Connection, root: Path,
                          files: list[tuple[int, str]]) -> int:
    """Delete archive files past the archive tier, then their rows: a run that dies
    between the two leaves a row whose file is gone, and the next run removes it."""
    for file_id, path in files:
        (root / path).unlink(missing_ok=True)
        manifest_path(root / path).unlink(missing_ok=True)
        await conn.execute("DELETE FROM sinkfleet.archives WHERE id = $1", file_id)
    return len(files)
