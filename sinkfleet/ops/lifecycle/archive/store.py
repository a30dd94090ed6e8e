"""Archive one time partition into an Avro file + JSON manifest; record and list
archives in ``sinkfleet.archives`` (core migration 0006)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.ops.lifecycle.archive.avro import (
    FORMAT,
    ArchiveError,
    ArchiveWriter,
    archive_schema,
    select_list,
)
from sinkfleet.private_files import write_private
from sinkfleet.sink.postgres.ddl import quote_ident

FETCH_ROWS = 5000


@dataclass(frozen=True)
class ArchiveFile:
    """One archived partition: what its manifest and its ``sinkfleet.archives`` row say."""

    sink: str
    table_schema: str
    table_name: str
    partition: str
    time_column: str
    range_start: datetime
    range_end: datetime
    min_time: datetime | None
    max_time: datetime | None
    rows: int
    bytes: int
    sha256: str
    codec: str
    path: str  # relative to the archive directory
    avro_schema: dict[str, Any]
    archived_at: datetime
    id: int | None = None
    dropped_at: datetime | None = None
    restored_at: datetime | None = None
    seconds: float = 0.0  # how long writing it took (not stored)

    @property
    def bytes_per_row(self) -> float | None:
        return self.bytes / self.rows if self.rows else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["seconds"]
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out

    def manifest(self) -> dict[str, Any]:
        out = {"format": FORMAT, **self.as_dict()}
        for key in ("id", "dropped_at", "restored_at"):
            del out[key]
        return out


def manifest_path(file: Path) -> Path:
    return file.with_name(file.name + ".json")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write_private(tmp, json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def discard(root: Path, archive: ArchiveFile) -> None:
    """Remove an archive that was never recorded (its partition changed meanwhile)."""
    file = root / archive.path
    file.unlink(missing_ok=True)
    manifest_path(file).unlink(missing_ok=True)


async def archive_partition(conn: asyncpg.Connection, root: Path, sink: Sink, partition: str,
                            start: datetime, end: datetime,
                            should_stop: Callable[[], bool] = lambda: False
                            ) -> ArchiveFile | None:
    """Write every row of ``partition`` (attached or detached) to a verified Avro file
    under ``root`` with its manifest; None if ``should_stop()`` said so midway (nothing
    is left behind). The file is not recorded in the database: :func:`record` does that
    in the transaction that drops the partition."""
    spec = sink.spec
    assert spec.time_column is not None
    t0 = time.monotonic()
    stamp = datetime.now(UTC)
    rel = f"{spec.name}/{partition}-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}.avro"
    schema = archive_schema(sink)
    meta = {"sinkfleet.format": FORMAT, "sinkfleet.sink": spec.name,
            "sinkfleet.table": f"{spec.db_schema}.{spec.table}",
            "sinkfleet.partition": partition, "sinkfleet.time_column": spec.time_column,
            "sinkfleet.range_start": start.isoformat(), "sinkfleet.range_end": end.isoformat()}
    writer = ArchiveWriter(root / rel, schema, meta)
    tcol = spec.time_column
    names = [c.name for c in sink.columns]
    lo: datetime | None = None
    hi: datetime | None = None
    query = (f"SELECT {select_list(sink)} FROM ONLY"
             f" {quote_ident(spec.db_schema)}.{quote_ident(partition)}")
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(query)
            while True:
                batch = await cursor.fetch(FETCH_ROWS)
                if not batch:
                    break
                writer.write(names, batch)
                times = [r[tcol] for r in batch]
                lo = min(times) if lo is None else min(lo, *times)
                hi = max(times) if hi is None else max(hi, *times)
                if should_stop():
                    writer.abort()
                    return None
        size, sha = writer.close()
    except BaseException:
        writer.abort()
        raise
    archive = ArchiveFile(
        spec.name, spec.db_schema, spec.table, partition, tcol, start, end, lo, hi,
        writer.rows, size, sha, writer.codec, rel, schema, stamp,
        seconds=time.monotonic() - t0)
    _write_json(manifest_path(root / rel), archive.manifest())
    return archive


_COLUMNS = ("sink", "table_schema", "table_name", "partition", "time_column", "range_start",
            "range_end", "min_time", "max_time", "rows", "bytes", "sha256", "codec", "path",
            "avro_schema", "archived_at")


async def record(conn: asyncpg.Connection, archive: ArchiveFile, *, dropped: bool
                 ) -> ArchiveFile:
    """Insert the archive's row (in the caller's transaction); return it with its id."""
    values = [getattr(archive, c) for c in _COLUMNS]
    values[_COLUMNS.index("avro_schema")] = json.dumps(archive.avro_schema)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO sinkfleet.archives ({', '.join(_COLUMNS)}, dropped_at)"
        f" VALUES ({placeholders}, CASE WHEN ${len(values) + 1} THEN now() END)"
        " RETURNING id, dropped_at", *values, dropped)
    return replace(archive, id=row["id"], dropped_at=row["dropped_at"])


def _from_row(row: asyncpg.Record) -> ArchiveFile:
    data = dict(row)
    data["avro_schema"] = json.loads(data["avro_schema"])
    return ArchiveFile(**data)


async def list_archives(conn: asyncpg.Connection, sinks: Sequence[str] | None = None,
                        start: datetime | None = None, end: datetime | None = None
                        ) -> list[ArchiveFile]:
    """Recorded archives, oldest range first; only ``sinks`` and those overlapping
    [start, end) if given."""
    await require_archive_table(conn)
    rows = await conn.fetch(
        f"SELECT id, {', '.join(_COLUMNS)}, dropped_at, restored_at FROM sinkfleet.archives"
        " WHERE ($1::text[] IS NULL OR sink = ANY($1))"
        " AND ($2::timestamptz IS NULL OR range_end > $2)"
        " AND ($3::timestamptz IS NULL OR range_start < $3)"
        " ORDER BY sink, range_start, archived_at, id",
        list(sinks) if sinks else None, start, end)
    return [_from_row(r) for r in rows]


async def require_archive_table(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT to_regclass('sinkfleet.archives')") is None:
        raise ArchiveError("sinkfleet.archives does not exist: run `sinkfleet db migrate`"
                           " (core migration 0006_archive)")
