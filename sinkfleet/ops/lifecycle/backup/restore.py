"""`sinkfleet restore DIR`: check the backup, then (with ``execute``) pg_restore it into
the configured database in one transaction, verify rows and offsets against the manifest,
and say what the workers will re-read from Kafka.

Dry run by default. A database that already holds relations is refused unless
``force``: then pg_restore drops each object of the dump before recreating it
(``--clean --if-exists``); relations the dump does not know are left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.positions import KafkaPositions, PartitionPosition
from sinkfleet.ops.lifecycle.backup.advice import GroupAdvice, advise_groups
from sinkfleet.ops.lifecycle.backup.backup import QuietReporter, Reporter, server_version
from sinkfleet.ops.lifecycle.backup.manifest import (
    DUMP,
    OFFSETS,
    BackupError,
    Checked,
    check_signature,
    read_manifest,
    verify_files,
)
from sinkfleet.ops.lifecycle.backup.pgtools import find_tool, libpq_env, run_tool
from sinkfleet.ops.signing import verify_key
from sinkfleet.sink.postgres.connect import connect, pg
from sinkfleet.sink.postgres.ddl import quote_ident
from sinkfleet.sink.postgres.offsets import (
    StoredOffset,
    add_missing_offsets,
    stored_offsets,
    topics_by_group,
)
from sinkfleet.sink.postgres.roles import WORKER_ROLE

LIVE_WORKER_SECONDS = 30


class RestoreError(SinkfleetError):
    """The restore was refused or failed; the message says what to do."""


@dataclass
class Target:
    database: str
    exists: bool
    relations: int = 0
    sample: list[str] = field(default_factory=list)
    live_workers: int = 0
    server_major: int = 0


@dataclass
class SinkCheck:
    sink: str
    table: str
    expected: int | None
    found: int | None

    @property
    def ok(self) -> bool:
        return self.expected == self.found


@dataclass
class RestoreResult:
    backup: Path
    manifest: dict[str, Any]
    checked: Checked
    target: Target
    executed: bool
    clean: bool = False
    created: bool = False
    sinks: list[SinkCheck] = field(default_factory=list)
    offsets_expected: int = 0
    offsets_differ: list[str] = field(default_factory=list)
    groups: list[GroupAdvice] = field(default_factory=list)
    pinned: int = 0
    pg_restore: str = ""
    warnings: list[str] = field(default_factory=list)
    signature: str = ""  # how the manifest is vouched for

    @property
    def verified(self) -> bool:
        return all(s.ok for s in self.sinks) and not self.offsets_differ

    def as_dict(self) -> dict[str, Any]:
        return {"backup": str(self.backup), "created_at": self.manifest["created_at"],
                "files_checked": self.checked.files, "signature": self.signature,
                "database": self.target.database,
                "executed": self.executed, "clean": self.clean, "created": self.created,
                "verified": self.verified if self.executed else None,
                "sinks": [{**s.__dict__, "ok": s.ok} for s in self.sinks],
                "offsets_expected": self.offsets_expected,
                "offsets_differ": self.offsets_differ, "pinned": self.pinned,
                "groups": [g.as_dict() for g in self.groups], "warnings": self.warnings}


def _backup_offsets(root: Path) -> tuple[list[StoredOffset], dict[str, Any]]:
    data = json.loads((root / OFFSETS).read_text())
    return [StoredOffset(**o) for o in data["postgres"]], data.get("kafka") or {}


async def _inspect(settings: Settings) -> Target:
    target = Target(settings.pg_database, True)
    try:
        conn = await asyncpg.connect(**settings.pg_connect_kwargs, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        target.exists = False
        conn = await asyncpg.connect(**{**settings.pg_connect_kwargs, "database": "postgres"},
                                     timeout=10)
        try:
            target.server_major, _ = await server_version(conn)
        finally:
            await conn.close()
        return target
    except (OSError, asyncpg.PostgresError):
        conn = await connect(settings)  # raises the explained error
    try:
        target.server_major, _ = await server_version(conn)
        rows = await conn.fetch(
            "SELECT n.nspname || '.' || c.relname AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
            " ORDER BY 1")
        target.relations = len(rows)
        target.sample = [r["name"] for r in rows[:5]]
        if await conn.fetchval("SELECT to_regclass('sinkfleet.workers')") is not None:
            target.live_workers = await conn.fetchval(
                "SELECT count(*) FROM sinkfleet.workers WHERE state <> 'stopped'"
                f" AND heartbeat_at > now() - interval '{LIVE_WORKER_SECONDS} seconds'")
    finally:
        await conn.close()
    return target


def _refusal(target: Target, force: bool, create_db: bool) -> str | None:
    if not target.exists and not create_db:
        return (f"database {target.database} does not exist: create it (CREATE DATABASE)"
                " or pass --create-db")
    if target.live_workers:
        return (f"{target.live_workers} worker(s) of database {target.database} sent a"
                f" heartbeat within {LIVE_WORKER_SECONDS}s: stop them before restoring")
    if target.relations and not force:
        shown = ", ".join(target.sample) + (" …" if target.relations > 5 else "")
        return (f"database {target.database} is not empty ({target.relations} relations:"
                f" {shown}); restore into an empty database (point SINKFLEET_PG_DATABASE"
                " at one), or pass --force to drop and recreate the backup's objects in it")
    return None


def _conninfo_dbname(name: str) -> str:
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def _create_database(settings: Settings, name: str) -> None:
    conn = await asyncpg.connect(**{**settings.pg_connect_kwargs, "database": "postgres"},
                                 timeout=10)
    try:
        await conn.execute('CREATE DATABASE "' + name.replace('"', '""') + '"')
    finally:
        await conn.close()


async def _ensure_worker_role(conn: asyncpg.Connection, warnings: list[str]) -> None:
    """The dump grants to the workers' group role; roles are not in a dump."""
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", WORKER_ROLE):
        return
    try:
        await conn.execute(f"CREATE ROLE {quote_ident(WORKER_ROLE)} NOLOGIN")
    except asyncpg.PostgresError as exc:
        warnings.append(f"cannot create role {WORKER_ROLE} ({exc}): its grants will fail")


async def _verify(conn: asyncpg.Connection, result: RestoreResult,
                  expected: list[StoredOffset]) -> list[StoredOffset]:
    for name, entry in sorted(result.manifest.get("sinks", {}).items()):
        for table_key, rows_key in (("table", "rows"), ("history_table", "history_rows")):
            if table_key not in entry:
                continue
            qualified = f"{quote_ident(entry['schema'])}.{quote_ident(entry[table_key])}"
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", qualified)
            found = await conn.fetchval(f"SELECT count(*) FROM {qualified}") if exists else None
            result.sinks.append(SinkCheck(name, entry[table_key], entry[rows_key], found))
    restored = await stored_offsets(conn)
    want = {o.key(): o.next_offset for o in expected}
    got = {o.key(): o.next_offset for o in restored}
    result.offsets_differ = [
        f"{g}/{t}[{p}]: backup {want.get((g, t, p))}, restored {got.get((g, t, p))}"
        for g, t, p in sorted(set(want) | set(got)) if want.get((g, t, p)) != got.get((g, t, p))]
    return restored


async def _positions(settings: Settings, stored: list[StoredOffset],
                     kafka_snapshot: dict[str, Any], warnings: list[str]
                     ) -> list[PartitionPosition]:
    backup_groups: dict[str, set[str]] = {}
    for p in kafka_snapshot.get("partitions", []):
        backup_groups.setdefault(p["group"], set()).add(p["topic"])
    try:
        async with KafkaPositions(settings) as kafka:
            return await kafka.positions(topics_by_group(stored, backup_groups),
                                         {o.key(): o.next_offset for o in stored})
    except (SinkfleetError, OSError) as exc:
        warnings.append(f"cannot compare with Kafka ({exc}); check positions with"
                        " `sinkfleet replay plan` before starting workers")
        return []


async def _pin_unstored(conn: asyncpg.Connection, groups: list[GroupAdvice]) -> int:
    """Partitions with no stored offset start at their log start, not at a Kafka commit
    made after the backup (that would skip records the restored database never got)."""
    rows = [(a.position.group, a.position.topic, a.position.partition, a.position.log_start)
            for g in groups for a in g.partitions
            if a.position.stored is None and a.position.log_start is not None]
    if not rows:
        return 0
    await add_missing_offsets(conn, rows)
    return len(rows)


async def run_restore(settings: Settings, root: Path, *, execute: bool, force: bool = False,
                      create_db: bool = False, reporter: Reporter | None = None,
                      allow_unsigned: bool = False) -> RestoreResult:
    """Check ``root`` (an unpacked backup: the manifest's signature, then every file's
    sha256); with ``execute``, restore it into ``settings.pg_database`` and verify.
    Raises RestoreError/BackupError on refusal."""
    reporter = reporter or QuietReporter()
    reporter.step(f"checking {root} (the manifest's signature, sha256 of every file)")
    signature = check_signature(root, verify_key(settings), allow_unsigned)
    manifest = read_manifest(root)
    checked = verify_files(root, manifest)
    expected, kafka_snapshot = _backup_offsets(root)
    reporter.step(f"inspecting database {settings.pg_database}")
    target = await _inspect(settings)
    result = RestoreResult(root, manifest, checked, target, execute,
                           offsets_expected=len(expected), signature=signature)
    if checked.extra:
        result.warnings.append(f"files not in the manifest are ignored: {checked.extra}")
    refusal = _refusal(target, force, create_db)
    if refusal:
        raise RestoreError(refusal)
    dumped_by = int(str(manifest["postgres"].get("pg_dump", "0")).split(".")[0] or 0)
    tool = find_tool("pg_restore", target.server_major, dumped_by)
    result.pg_restore = f"{tool.path} ({tool.version})"
    if not execute:
        result.groups = advise_groups(
            await _positions(settings, expected, kafka_snapshot, result.warnings))
        return result
    if not target.exists:
        reporter.step(f"creating database {target.database}")
        await _create_database(settings, target.database)
        result.created = True
    async with pg(settings) as conn:
        await _ensure_worker_role(conn, result.warnings)
        result.clean = bool(target.relations)
        argv = [tool.path, "--no-password", "--no-owner", "--single-transaction",
                "--exit-on-error", f"--dbname={_conninfo_dbname(target.database)}"]
        if result.clean:
            argv += ["--clean", "--if-exists"]
        reporter.step(f"pg_restore into {target.database} (one transaction)")
        with libpq_env(settings) as env:
            await run_tool([*argv, str(root / DUMP)], env, "pg_restore")
        reporter.step("verifying rows and offsets against the manifest")
        restored = await _verify(conn, result, expected)
        reporter.step("comparing the restored offsets with Kafka")
        result.groups = advise_groups(
            await _positions(settings, restored, kafka_snapshot, result.warnings))
        if result.verified:  # a mismatch is for the operator to look at first
            result.pinned = await _pin_unstored(conn, result.groups)
        holds = []
        if await conn.fetchval("SELECT to_regclass('sinkfleet.group_holds')") is not None:
            holds = [r["group_id"] for r in
                     await conn.fetch("SELECT group_id FROM sinkfleet.group_holds")]
        if holds:
            result.warnings.append(
                f"the backup holds group(s) {holds} (a replay was running): their workers"
                " wait until you DELETE FROM sinkfleet.group_holds WHERE group_id = …")
    return result


__all__ = ["BackupError", "RestoreError", "RestoreResult", "run_restore"]
