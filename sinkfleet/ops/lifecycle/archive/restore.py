"""`sinkfleet archive restore`: bring an archived time range back into PostgreSQL.

Every recorded archive of the sink overlapping [from, to) is verified (SHA-256 and
record count against its row in ``sinkfleet.archives``), its partition is created
and attached if it is gone, and its rows within [from, to) are COPied into a staging
table and merged with ``INSERT … ON CONFLICT DO NOTHING``, as the append writer does:
restoring twice adds nothing. A restored partition is held by retention for another
``keep`` (docs/retention.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError
from sinkfleet.ops.lifecycle.archive.avro import (
    ArchiveError,
    read_records,
    row_converter,
    verify_file,
)
from sinkfleet.ops.lifecycle.archive.store import ArchiveFile, list_archives
from sinkfleet.ops.lifecycle.partitions import create_partition, table_exists
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident

COPY_ROWS = 10_000


@dataclass
class Restored:
    archive: ArchiveFile
    read: int  # records in the file
    in_range: int  # of them within [from, to)
    inserted: int  # new rows; in_range - inserted were there already
    created_partition: bool

    def as_dict(self) -> dict[str, Any]:
        return {"archive": self.archive.as_dict(), "read": self.read,
                "in_range": self.in_range, "inserted": self.inserted,
                "created_partition": self.created_partition}


def _sink(catalogue: Catalogue, name: str) -> Sink:
    if name not in catalogue.sinks:
        known = ", ".join(sorted(catalogue.sinks)) or "none"
        raise ConfigError(f"--sink {name}: no such sink in sinks/ (known: {known})")
    sink = catalogue.sinks[name]
    if sink.spec.partitioning is None:
        raise ConfigError(f"--sink {name}: not time-partitioned, so never archived")
    return sink


def _fields(archive: ArchiveFile, sink: Sink) -> list[str]:
    names = [f["name"] for f in archive.avro_schema["fields"]]
    extra = sorted(set(names) - {c.name for c in sink.columns})
    if extra:
        raise ArchiveError(f"{archive.path}: fields {extra} are not columns of sink"
                           f" {sink.spec.name} any more; restore them by hand")
    return names


async def restore_range(settings: Settings, catalogue: Catalogue, sink_name: str,
                        start: datetime, end: datetime,
                        say: Callable[[str], None] = print) -> list[Restored]:
    sink = _sink(catalogue, sink_name)
    if start >= end:
        raise ConfigError(f"--from {start.isoformat()} is not before --to {end.isoformat()}")
    async with pg(settings) as conn:
        archives = await list_archives(conn, [sink_name], start, end)
        if not archives:
            raise ArchiveError(f"no archive of sink {sink_name} overlaps [{start.isoformat()},"
                               f" {end.isoformat()}); see `sinkfleet archive list --sink"
                               f" {sink_name}`")
        if not await table_exists(conn, sink):
            raise ArchiveError(f"table {sink.spec.qualified_table} does not exist: run"
                               " `sinkfleet db migrate` first")
        stage = quote_ident(derived_name("sinkfleet_restore", sink.spec.name))
        await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE"
                           f" {sink.spec.qualified_table} INCLUDING DEFAULTS)"
                           " ON COMMIT DELETE ROWS")
        out = []
        for archive in archives:
            done = await _restore_one(conn, settings, sink, archive, stage, start, end)
            say(f"{sink_name} {archive.partition}: {done.inserted:,} rows restored"
                f" ({done.in_range - done.inserted:,} were there already) from"
                f" {archive.path}{' into a new partition' if done.created_partition else ''}")
            out.append(done)
        return out


async def _restore_one(conn: asyncpg.Connection, settings: Settings, sink: Sink,
                       archive: ArchiveFile, stage: str, start: datetime, end: datetime
                       ) -> Restored:
    path = settings.archive / archive.path
    verify_file(path, archive.rows, archive.sha256)
    names = _fields(archive, sink)
    convert = row_converter(sink, names)
    tcol = archive.time_column
    created = await create_partition(conn, sink, archive.partition, archive.range_start,
                                     archive.range_end)
    cols = ", ".join(quote_ident(n) for n in names)
    read = in_range = 0
    async with conn.transaction():
        batch: list[tuple[Any, ...]] = []
        for rec in read_records(path):
            read += 1
            if start <= rec[tcol] < end:
                batch.append(convert(rec))
                if len(batch) >= COPY_ROWS:
                    await conn.copy_records_to_table(stage.strip('"'), records=batch,
                                                     columns=names)
                    in_range += len(batch)
                    batch = []
        if batch:
            await conn.copy_records_to_table(stage.strip('"'), records=batch, columns=names)
            in_range += len(batch)
        status = await conn.execute(f"INSERT INTO {sink.spec.qualified_table} ({cols})"
                                    f" SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING")
        await conn.execute("UPDATE sinkfleet.archives SET restored_at = now() WHERE id = $1",
                           archive.id)
    return Restored(archive, read, in_range, int(status.rsplit(" ", 1)[1]), created)
