"""`sinkfleet backup`: one consistent, self-checking backup of the database and its context.

The dump, the row counts and the offsets snapshot come from one PostgreSQL snapshot: a
repeatable-read transaction exports it and ``pg_dump --snapshot`` dumps exactly what the
counts counted, so the manifest's rows and offsets are those of the dump even while
workers keep writing. Kafka's commits and log ends are read right after (Kafka has no
snapshot to share); they say what the cluster held, for `restore` to compare with.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg

import sinkfleet
from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.positions import KafkaPositions
from sinkfleet.ops.lifecycle.backup.manifest import (
    CATALOGUE,
    CATALOGUE_DIRS,
    DUMP,
    FORMAT,
    MANIFEST,
    OFFSETS,
    BackupError,
    file_entries,
    sign_manifest,
    write_json,
)
from sinkfleet.ops.lifecycle.backup.pgtools import find_tool, libpq_env, run_tool
from sinkfleet.ops.signing import matching_keys
from sinkfleet.private_files import open_private
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import quote_ident
from sinkfleet.sink.postgres.offsets import StoredOffset, stored_offsets, topics_by_group

LOCK_WAIT_MS = 60_000  # pg_dump gives up rather than queue behind DDL forever


class Reporter(Protocol):
    """Progress of a long operation: a new step, or a detail of the current one."""

    def step(self, description: str) -> None: ...

    def detail(self, text: str) -> None: ...


class QuietReporter:
    def step(self, description: str) -> None:
        pass

    def detail(self, text: str) -> None:
        pass


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


async def server_version(conn: asyncpg.Connection) -> tuple[int, str]:
    num = int(await conn.fetchval("SHOW server_version_num"))
    return num // 10_000, str(await conn.fetchval("SHOW server_version"))


async def sink_row_counts(conn: asyncpg.Connection, catalogue: Catalogue | None
                          ) -> dict[str, dict[str, Any]]:
    """Exact rows of every catalogue sink's table (and a state sink's history)."""
    out: dict[str, dict[str, Any]] = {}
    for name, sink in sorted((catalogue.sinks if catalogue else {}).items()):
        spec = sink.spec
        tables = {"table": spec.table}
        if spec.state is not None:
            tables["history_table"] = spec.history_table
        entry: dict[str, Any] = {"mode": spec.mode, "family": sink.topic.schema_,
                                 "schema": spec.db_schema}
        for key, table in tables.items():
            qualified = f"{quote_ident(spec.db_schema)}.{quote_ident(table)}"
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", qualified)
            rows = await conn.fetchval(f"SELECT count(*) FROM {qualified}") if exists else None
            entry[key] = table
            entry["rows" if key == "table" else "history_rows"] = rows
        out[name] = entry
    return out


def _catalogue_groups(catalogue: Catalogue | None) -> dict[str, set[str]]:
    if catalogue is None:
        return {}
    return {w.group: {catalogue.sinks[s].topic.name for s in w.sinks}
            for w in catalogue.workers.values()}


async def _kafka_snapshot(settings: Settings, catalogue: Catalogue | None,
                          stored: list[StoredOffset], warnings: list[str]) -> dict[str, Any]:
    wanted = topics_by_group(stored, _catalogue_groups(catalogue))
    taken = datetime.now(UTC).isoformat()
    try:
        async with KafkaPositions(settings) as kafka:
            positions = await kafka.positions(wanted, {o.key(): o.next_offset for o in stored})
            cluster = await kafka.cluster_id()
    except (SinkfleetError, OSError) as exc:
        warnings.append(f"Kafka positions not recorded: {exc}")
        return {"taken_at": taken, "error": str(exc), "partitions": []}
    gone = sorted({p.topic for p in positions if p.log_end is None})
    if gone:
        warnings.append(f"{len(gone)} topic(s) with stored offsets are not on the cluster:"
                        f" {', '.join(gone[:5])}{' …' if len(gone) > 5 else ''}")
    return {"taken_at": taken, "cluster_id": cluster, "bootstrap": settings.kafka_bootstrap,
            "partitions": [p.as_dict() for p in positions]}


def _copy_catalogue(home: Path, dest: Path) -> int:
    copied = 0
    for sub in CATALOGUE_DIRS:
        if (home / sub).is_dir():
            shutil.copytree(home / sub, dest / sub,
                            ignore=shutil.ignore_patterns(".*", "__pycache__"))
            copied += sum(1 for p in (dest / sub).rglob("*") if p.is_file())
    return copied


def _start(out: Path, now: datetime) -> tuple[str, Path]:
    """A fresh name and its private (0700) work directory ``.<name>.partial``."""
    out.mkdir(parents=True, exist_ok=True)
    base = f"sinkfleet-backup-{now:%Y%m%dT%H%M%SZ}"
    name, n = base, 1
    while any((out / cand).exists() for cand in (name, f"{name}.tar", f".{name}.partial")):
        n += 1
        name = f"{base}-{n}"
    partial = out / f".{name}.partial"
    partial.mkdir(mode=0o700)
    return name, partial


def _finish(partial: Path, final: Path) -> Path:
    """Only a complete backup gets its name."""
    partial.rename(final)
    return final


async def _dump(settings: Settings, conn: asyncpg.Connection, catalogue: Catalogue | None,
                dump: Path, reporter: Reporter) -> dict[str, Any]:
    """pg_dump of one exported snapshot, and the counts and offsets of that snapshot."""
    major, version = await server_version(conn)
    tool = find_tool("pg_dump", major)
    restore_tool = find_tool("pg_restore", major, tool.major)

    def on_bytes(n: int) -> None:
        reporter.detail(f"{n / 2**20:,.1f} MiB")

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        with libpq_env(settings) as env:
            reporter.step(f"pg_dump {tool.version} of {settings.pg_database}")
            dumping = asyncio.ensure_future(run_tool(
                [tool.path, "--format=custom", f"--file={dump}", f"--snapshot={snapshot}",
                 "--no-password", f"--lock-wait-timeout={LOCK_WAIT_MS}"],
                env, "pg_dump", watch=dump, on_bytes=on_bytes))
            try:  # counted in the same snapshot, while pg_dump reads it
                sinks = await sink_row_counts(conn, catalogue)
                stored = await stored_offsets(conn)
            finally:
                await dumping
    os.chmod(dump, 0o600)
    with libpq_env(settings) as env:
        toc = await run_tool([restore_tool.path, "--list", str(dump)], env, "pg_restore --list")
    return {"server_major": major, "server_version": version, "pg_dump": tool.version,
            "sinks": sinks, "stored": stored,
            "toc_entries": sum(1 for line in toc.splitlines()
                               if line and not line.startswith(";"))}


async def run_backup(settings: Settings, catalogue: Catalogue | None, out: Path, *,
                     tar: bool = False, reporter: Reporter | None = None) -> BackupResult:
    """Write one backup under ``out`` (a directory, or ``<name>.tar`` with ``tar``)."""
    reporter = reporter or QuietReporter()
    warnings: list[str] = []
    now = datetime.now(UTC)
    key = matching_keys(settings, create=True)  # before any work: a backup is signed
    name, partial = _start(out, now)
    try:
        reporter.step(f"connecting to PostgreSQL {settings.pg_host}:{settings.pg_port}")
        async with pg(settings) as conn:
            db = await _dump(settings, conn, catalogue, partial / DUMP, reporter)
        reporter.step("copying the catalogue")
        copied = _copy_catalogue(settings.home, partial / CATALOGUE)
        reporter.step("reading Kafka commits and log ends")
        stored: list[StoredOffset] = db["stored"]
        kafka = await _kafka_snapshot(settings, catalogue, stored, warnings)
        write_json(partial / OFFSETS, {"postgres": [asdict(o) for o in stored],
                                       "kafka": kafka})
        reporter.step("checksums and manifest")
        manifest = {
            "format": FORMAT, "created_at": now.isoformat(), "name": name,
            "sinkfleet": sinkfleet.__version__, "python": platform.python_version(),
            "host": socket.gethostname(),
            "postgres": {"host": settings.pg_host, "port": settings.pg_port,
                         "database": settings.pg_database, "user": settings.pg_user,
                         "server_version": db["server_version"],
                         "server_major": db["server_major"], "pg_dump": db["pg_dump"],
                         "dump_format": "custom", "toc_entries": db["toc_entries"]},
            "kafka": {"bootstrap": settings.kafka_bootstrap,
                      "cluster_id": kafka.get("cluster_id"), "error": kafka.get("error")},
            "catalogue": {"root": str(settings.home), "files": copied},
            "sinks": db["sinks"],
            "offsets": {"stored": len(stored), "groups": sorted({o.group for o in stored}),
                        "kafka_partitions": len(kafka["partitions"])},
            "warnings": warnings,
            "files": file_entries(partial),
        }
        write_json(partial / MANIFEST, manifest)
        sign_manifest(partial, key)
        final = _finish(partial, out / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if tar:
        reporter.step(f"writing {name}.tar")
        final = _to_tar(final)
    return BackupResult(final, manifest, warnings)


def _to_tar(directory: Path) -> Path:
    target = directory.with_name(directory.name + ".tar")
    partial = directory.with_name(f".{directory.name}.tar.partial")
    try:
        with os.fdopen(open_private(partial), "wb") as fh, \
                tarfile.open(fileobj=fh, mode="w") as tf:  # the dump is compressed already
            tf.add(directory, arcname=directory.name)
        partial.rename(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    shutil.rmtree(directory)
    return target


def open_backup(path: Path, scratch: Path) -> Path:
    """The backup directory of ``path``: itself, or a tar unpacked into ``scratch``
    (members are refused if they would land outside it)."""
    if path.is_dir():
        return path
    if not path.is_file() or not tarfile.is_tarfile(path):
        raise BackupError(f"{path}: not a backup directory or tar (make one with"
                          " `sinkfleet backup`)")
    with tarfile.open(path) as tf:
        try:
            tf.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{path}: cannot unpack: {exc}") from None
    dirs = [p for p in scratch.iterdir() if p.is_dir()]
    if len(dirs) != 1:
        raise BackupError(f"{path}: expected one backup directory inside the tar")
    return dirs[0]


__all__ = ["BackupError", "BackupResult", "Reporter", "open_backup", "run_backup"]
