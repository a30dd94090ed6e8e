"""One least-privilege role per worker group, and the roll-ups', exporter's and
readers' roles (migration ``core:0010_group_roles``; docs/security.md, "Roles").

For each worker spec, `db migrate` keeps a NOLOGIN role named after its group
(``group_role``), a member of ``sinkfleet_group``, with exactly its sinks' grants
(``roles.sink_grants``) and nothing else, and a LOGIN member ``<role>_login``. Row-level
security confines members of ``sinkfleet_group`` to their own group's offsets and
heartbeat rows and to their own sinks' state conflicts, through ``sinkfleet.group_roles``.

Example: group ``sinkfleet.events`` → role ``sinkfleet_events``, login
``sinkfleet_events_login`` (password: ``$SINKFLEET_PG_SECRETS_DIR/sinkfleet_events_login``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from sinkfleet.catalogue import Catalogue
from sinkfleet.catalogue.models import WorkerSpec
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, MigrationError
from sinkfleet.sink.postgres.ddl import quote_ident
from sinkfleet.sink.postgres.roles import (
    WORKER_ROLE,
    ensure_login,
    login_password,
    sink_grants,
    sink_tables,
)
from sinkfleet.sink.postgres.summary_sql import has_summary, parts_table
from sinkfleet.sink.postgres.tenancy import maintain_tenant_views

GROUP_MARKER = "sinkfleet_group"  # every group role is a member: the policies' target
ROLLUPS_ROLE = "sinkfleet_rollups"
EXPORTER_ROLE = "sinkfleet_exporter"
READER_ROLE = "sinkfleet_reader"  # NOLOGIN: grant it to your readers' own logins
SERVE_ROLE = "sinkfleet_serve"  # `sinkfleet serve`: a reader that may look up API tokens
SERVICE_ROLES = (ROLLUPS_ROLE, EXPORTER_ROLE, SERVE_ROLE)  # each gets a login (db migrate)
RESERVED = {WORKER_ROLE, GROUP_MARKER, ROLLUPS_ROLE, EXPORTER_ROLE, READER_ROLE, SERVE_ROLE}


def group_role(group: str) -> str:
    """The role of consumer group ``group``: ``sinkfleet_`` + the group in lower case with
    every other character as ``_`` (a long name keeps a hash suffix), ≤ 57 characters so
    that ``<role>_login`` fits PostgreSQL's 63."""
    slug = re.sub(r"[^a-z0-9_]+", "_", group.lower()).strip("_") or "group"
    name = slug if slug.startswith("sinkfleet_") else f"sinkfleet_{slug}"
    if len(name) > 57:
        name = f"{name[:48]}_{hashlib.sha256(group.encode()).hexdigest()[:8]}"
    return name


def login_of(role: str) -> str:
    return f"{role}_login"


@dataclass(frozen=True)
class Login:
    """A login `db migrate` keeps, with the role it belongs to and its password."""

    name: str
    member_of: str
    password: str


def group_roles(catalogue: Catalogue) -> dict[str, WorkerSpec]:
    """Role name → worker spec; refuses two groups on one role, or a reserved name."""
    out: dict[str, WorkerSpec] = {}
    for spec in sorted(catalogue.workers.values(), key=lambda s: s.name):
        role = group_role(spec.group)
        if role in RESERVED:
            raise ConfigError(f"worker spec {spec.name}: group {spec.group!r} would get role"
                              f" {role}, which sinkfleet reserves; rename the group")
        other = out.get(role)
        if other is not None and other.group != spec.group:
            raise ConfigError(f"worker specs {other.name} and {spec.name}: groups"
                              f" {other.group!r} and {spec.group!r} map to the same role"
                              f" {role}; rename one")
        out[role] = spec
    return out


def planned_logins(settings: Settings, catalogue: Catalogue) -> list[Login]:
    """Every least-privilege login with its password, read (or generated) before any
    change to the database, so a missing secret fails `db migrate` up front."""
    roles = [*sorted(group_roles(catalogue)), *SERVICE_ROLES]
    logins, missing = [], []
    for role in roles:
        try:
            logins.append(Login(login_of(role), role, login_password(settings, login_of(role))))
        except ConfigError as exc:
            missing.append(str(exc))
    if missing:
        raise ConfigError("; ".join(missing))
    return logins


async def _check_ours(conn: asyncpg.Connection, role: str, group: str) -> None:
    """An existing role of that name must be one of ours, for this group."""
    row = await conn.fetchrow(
        "SELECT pg_catalog.pg_has_role(r.oid, $2, 'MEMBER') AS ours, m.group_id"
        " FROM pg_catalog.pg_roles r LEFT JOIN sinkfleet.group_roles m"
        " ON m.role_name = r.rolname WHERE r.rolname = $1", role, GROUP_MARKER)
    if row is None:
        return
    if not row["ours"] or row["group_id"] not in (None, group):
        held = f"group {row['group_id']!r}" if row["group_id"] else "something else"
        raise MigrationError(f"role {role} for group {group!r} already exists and belongs to"
                             f" {held}: rename the group, or drop that role")


async def grant_group(conn: asyncpg.Connection, catalogue: Catalogue, role: str,
                      spec: WorkerSpec) -> None:
    """Make ``role`` exactly what group ``spec`` needs: its sinks' grants, nothing else."""
    await _check_ours(conn, role, spec.group)
    q = quote_ident(role)
    sinks = [catalogue.sinks[name] for name in spec.sinks]
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                                   role):
            await conn.execute(f"CREATE ROLE {q} NOLOGIN IN ROLE {GROUP_MARKER}")
        # Start from nothing: a sink moved to another group leaves no grant behind.
        held = await conn.fetch(
            "WITH r AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)"
            " SELECT c.oid::regclass::text AS t FROM r, pg_catalog.pg_class c,"
            " aclexplode(c.relacl) a WHERE a.grantee = r.oid"
            " UNION SELECT attrelid::regclass::text FROM r, pg_catalog.pg_attribute,"
            " aclexplode(attacl) a WHERE a.grantee = r.oid", role)
        for row in held:
            await conn.execute(f"REVOKE ALL ON TABLE {row['t']} FROM {q}")
        for sink in sinks:
            await _schema_usage(conn, sink.spec.db_schema, GROUP_MARKER)
            for statement in sink_grants(sink, q):
                await conn.execute(statement)
        if any(sink.spec.state is not None for sink in sinks):
            await conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON"
                               f" sinkfleet.state_conflicts TO {q}")
        await conn.execute(
            "INSERT INTO sinkfleet.group_roles (group_id, role_name, sinks) VALUES ($1, $2, $3)"
            " ON CONFLICT (group_id) DO UPDATE SET role_name = EXCLUDED.role_name,"
            " sinks = EXCLUDED.sinks", spec.group, role, sorted(spec.sinks))


async def _schema_usage(conn: asyncpg.Connection, schema: str, grantee: str) -> None:
    # Only when missing: every GRANT rewrites the schema's catalogue row, and concurrent
    # rewrites of one row fail ("tuple concurrently updated").
    if not await conn.fetchval("SELECT has_schema_privilege($1, $2, 'USAGE')", grantee,
                               schema):
        await conn.execute(f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {grantee}")


async def grant_readers(conn: asyncpg.Connection, catalogue: Catalogue) -> None:
    """Readers (`sinkfleet query`, the Reader API, analysts) may SELECT every sink table,
    but a tenant sink's only through its tenant views (``tenancy``)."""
    async with conn.transaction():
        for name in sorted(catalogue.sinks):
            sink = catalogue.sinks[name]
            await _schema_usage(conn, sink.spec.db_schema, READER_ROLE)
            if sink.spec.tenant_column is None:
                # the summary parts too: `Reader.windows` adds them to the detail
                tables = [*sink_tables(sink), *([parts_table(sink)] if has_summary(sink)
                                                else [])]
                await conn.execute(f"GRANT SELECT ON {', '.join(tables)} TO {READER_ROLE}")
    await maintain_tenant_views(conn, catalogue, READER_ROLE)


async def maintain(conn: asyncpg.Connection, catalogue: Catalogue, logins: list[Login],
                   say: Callable[[str], None]) -> None:
    """Every group's role and grants, the readers' grants, and every login."""
    for role, spec in group_roles(catalogue).items():
        await grant_group(conn, catalogue, role, spec)
    await grant_readers(conn, catalogue)
    for login in logins:
        if await ensure_login(conn, login.name, login.password, login.member_of):
            say(f"created login role {login.name} (member of {login.member_of}; see"
                " docs/security.md)")


def _forget_generated(settings: Settings, login: str) -> None:
    if settings.pg_secrets_dir is None:  # never delete an operator's secret files
        settings.login_secret_path(login).unlink(missing_ok=True)


async def forget_group(conn: asyncpg.Connection, settings: Settings, group: str) -> None:
    """Drop group ``group``'s role and login, its mapping and its generated password
    (tests, decommissioning); their grants in other databases must be dropped there
    first."""
    role = group_role(group)
    _forget_generated(settings, login_of(role))
    async with conn.transaction():
        await conn.execute("DELETE FROM sinkfleet.group_roles WHERE group_id = $1", group)
        for name in (login_of(role), role):
            if await conn.fetchval("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                                   name):
                await conn.execute(f"DROP OWNED BY {quote_ident(name)}")
                await conn.execute(f"DROP ROLE {quote_ident(name)}")
