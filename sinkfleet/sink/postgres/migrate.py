"""`sinkfleet db migrate`: versioned, checksummed migrations under an advisory lock.

Migrations are the package's core SQL files plus one per sink, generated from
its catalogue spec. Each is applied once in its own transaction and recorded
with a SHA-256 checksum; a recorded migration whose text changed is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import asyncpg

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.config import Settings
from sinkfleet.errors import MigrationError
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import (
    create_table_sql,
    derived_name,
    history_rank_sql,
    partition_plan,
    quote_ident,
)
from sinkfleet.sink.postgres.group_roles import Login, maintain, planned_logins
from sinkfleet.sink.postgres.layout import key_sql, partition_statements
from sinkfleet.sink.postgres.merge_sql import merge_table_sql
from sinkfleet.sink.postgres.roles import (
    WORKER_ROLE,
    ensure_worker_login,
    grant_sink_access,
    worker_password,
)
from sinkfleet.sink.postgres.schema_versions import check_before_migrate, register_catalogue
from sinkfleet.sink.postgres.summary_sql import has_summary, summary_table_sql

# pg_advisory_lock key shared by every `db migrate` and partition maintenance run.
MIGRATION_LOCK_KEY = 0x51_4E_4B_46  # "SNKF"


@dataclass(frozen=True)
class Migration:
    id: str
    description: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def planned_migrations(catalogue: Catalogue) -> list[Migration]:
    core = resources.files("sinkfleet.sink.postgres").joinpath("migrations")
    plan = [
        Migration(f"core:{f.name.removesuffix('.sql')}", f"core {f.name}", f.read_text())
        for f in sorted(core.iterdir(), key=lambda f: f.name) if f.name.endswith(".sql")
    ]
    for name in sorted(catalogue.sinks):
        plan += sink_migrations(catalogue.sinks[name])
    return plan


def sink_migrations(sink: Sink) -> list[Migration]:
    """What makes ``sink``'s tables, in order (also used to build shadow copies)."""
    name = sink.spec.name
    create = create_table_sql(sink) if sink.spec.merge is None else merge_table_sql(sink)
    plan = [Migration(f"sink:{name}:0001", f"create {sink.spec.qualified_table}", create)]
    if sink.spec.state is not None:
        plan.append(Migration(f"sink:{name}:0002", f"rank columns of {sink.spec.history_table}"
                              " (same-version conflicts)", history_rank_sql(sink)))
    storage = sink.spec.storage
    if storage is not None and storage.reshapes_key:  # docs/storage.md
        plan.append(Migration(f"sink:{name}:key-{storage.digest()}",
                              f"primary key of {sink.spec.qualified_table}: "
                              f"({', '.join(sink.spec.key_columns)})", key_sql(sink)))
    if has_summary(sink):  # docs/retention.md
        plan.append(Migration(f"sink:{name}:summary", f"summary tier of {name}",
                              summary_table_sql(sink)))
    return plan


async def ensure_partitions(conn: asyncpg.Connection, sink: Sink,
                            now: datetime | None = None) -> list[str]:
    """Create the sink's missing time partitions; move stray rows out of DEFAULT first."""
    spec = sink.spec
    part = spec.partitioning
    if part is None:
        return []
    assert spec.time_column is not None
    schema, tcol = quote_ident(spec.db_schema), quote_ident(spec.time_column)
    default = f"{schema}.{quote_ident(derived_name(spec.table, 'default'))}"
    existing = {r["relname"] for r in await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
        " WHERE p.relname = $1 AND n.nspname = $2", spec.table, spec.db_schema)}
    created = []
    for suffix, start, end in partition_plan(part.interval, now or datetime.now(UTC),
                                             part.history, part.premake):
        name = derived_name(spec.table, suffix)
        if name in existing:
            continue
        child = f"{schema}.{quote_ident(name)}"
        async with conn.transaction():
            stray = await conn.fetchval(
                f"SELECT count(*) FROM {default} WHERE {tcol} >= $1 AND {tcol} < $2", start, end)
            # Rows of the range in DEFAULT move into the new partition (layout.py).
            for sql in partition_statements(sink, child, start, end,
                                            default if stray else None):
                await conn.execute(sql)
        created.append(name)
    return created


async def _worker_access(settings: Settings, catalogue: Catalogue, conn: asyncpg.Connection,
                         logins: list[Login], say: Callable[[str], None]) -> None:
    """Grants and login roles of the legacy worker role, of each worker group, the
    roll-ups, the exporter and readers (idempotent)."""
    try:
        for name in sorted(catalogue.sinks):
            await grant_sink_access(conn, catalogue.sinks[name])
        if settings.pg_worker_user and await ensure_worker_login(conn, settings):
            say(f"created login role {settings.pg_worker_user} for workers (member of"
                f" {WORKER_ROLE}; see docs/security.md)")
        await maintain(conn, catalogue, logins, say)
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"granting the workers' privileges failed: {exc}") from None


async def migrate(settings: Settings, catalogue: Catalogue,
                  say: Callable[[str], None] = print) -> list[str]:
    """Apply pending migrations and partition maintenance; return the ids applied."""
    logins = planned_logins(settings, catalogue)  # a missing password changes nothing
    if settings.pg_worker_user:
        worker_password(settings)
    applied_now: list[str] = []
    async with pg(settings) as conn:
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(
                "CREATE SCHEMA IF NOT EXISTS sinkfleet;"
                " CREATE TABLE IF NOT EXISTS sinkfleet.schema_migrations ("
                " id text PRIMARY KEY, description text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
            applied = {r["id"]: r["checksum"] for r in
                       await conn.fetch("SELECT id, checksum FROM sinkfleet.schema_migrations")}
            await check_before_migrate(conn, catalogue)  # an incompatible schema changes nothing
            for mig in planned_migrations(catalogue):
                if mig.id in applied:
                    if applied[mig.id] != mig.checksum:
                        raise MigrationError(
                            f"migration {mig.id} was applied with different contents (checksum"
                            f" {applied[mig.id][:12]} in the database, {mig.checksum[:12]} now):"
                            " its sink spec or SQL changed after it was applied; revert the"
                            " change or add a new migration")
                    continue
                async with conn.transaction():
                    try:
                        await conn.execute(mig.sql)
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(f"migration {mig.id} failed: {exc}") from None
                    await conn.execute(
                        "INSERT INTO sinkfleet.schema_migrations (id, description, checksum)"
                        " VALUES ($1, $2, $3)", mig.id, mig.description, mig.checksum)
                applied_now.append(mig.id)
                say(f"applied {mig.id}: {mig.description}")
            for name in sorted(catalogue.sinks):
                created = await ensure_partitions(conn, catalogue.sinks[name])
                if created:
                    say(f"{name}: created partitions {created[0]} … {created[-1]}"
                        f" ({len(created)})")
            await _worker_access(settings, catalogue, conn, logins, say)
            await register_catalogue(conn, catalogue, say)
            if not applied_now:
                say("database is up to date")
        finally:  # the session's lock: freed here, or by the server if the session died
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now
