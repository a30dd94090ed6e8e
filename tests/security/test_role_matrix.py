"""The role matrix: every role, table and statement, tried for real on PostgreSQL.

`db migrate` runs the project's whole catalogue (its three worker groups under unique
names) into a scratch database of the stack's server. Then each login tries SELECT,
INSERT, UPDATE, DELETE, TRUNCATE, DDL (CREATE TABLE in the table's schema, ALTER TABLE)
on each table, and `COPY … TO PROGRAM`, each in a transaction rolled back, and the
outcome must be ``EXPECTED``. docs/security.md's table is ``render(EXPECTED)``: the test
fails if the two differ (print the table with `python -m tests.security.test_role_matrix`).

On the tables with row-level security (offsets, heartbeats, state conflicts) real rows of
the role's own group and of another group are read and written: "own" means only the
own group's rows (own sinks' for state conflicts) are seen and written.
"""

from __future__ import annotations

import re
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import yaml

from sinkfleet.catalogue import load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.group_roles import READER_ROLE, group_role, login_of
from sinkfleet.sink.postgres.migrate import migrate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "security.md"
STATEMENTS = ("S", "I", "U", "D", "T", "DDL")
ROLES = ("events", "audit", "state", "rollups", "exporter", "reader", "legacy")
TABLES = ("experience_events", "audit_entries", "policies", "policies_history",
          "sinkfleet.state_conflicts", "sinkfleet.consumer_offsets", "sinkfleet.workers",
          "sinkfleet.group_holds", "sinkfleet.schema_versions", "sinkfleet.group_roles",
          "sinkfleet.rollup_metric_parts", "sinkfleet.schema_migrations")
ROLE_DOC = {
    "events": "`sinkfleet_events_login` (group `sinkfleet.events`)",
    "audit": "`sinkfleet_audit_login` (group `sinkfleet.audit`)",
    "state": "`sinkfleet_state_login` (group `sinkfleet.state`)",
    "rollups": "`sinkfleet_rollups_login`",
    "exporter": "`sinkfleet_exporter_login`",
    "reader": "members of `sinkfleet_reader`",
    "legacy": "`sinkfleet_worker_login` (legacy, every group)",
}
GROUP = "S I U (own)"  # offsets and heartbeats: a group's own rows only
# table -> role -> what it may do (unlisted: nothing). S/I/U/D/T = SELECT, INSERT, UPDATE,
# DELETE, TRUNCATE; DDL = CREATE TABLE in its schema or ALTER TABLE; U(cols) = UPDATE of the
# same-version conflict winner's columns only; (own) = own group's (own sinks') rows only.
EXPECTED: dict[str, dict[str, str]] = {
    "experience_events": {"events": "S I", "reader": "S", "legacy": "S I"},
    "audit_entries": {"audit": "S I", "legacy": "S I"},  # readers: its tenant view
    "policies": {"state": "S I U D", "reader": "S", "legacy": "S I U D"},
    "policies_history": {"state": "S I U(cols)", "reader": "S", "legacy": "S I U(cols)"},
    "sinkfleet.state_conflicts": {"state": "S I U D (own)", "legacy": "S I U D"},
    "sinkfleet.consumer_offsets": {"events": GROUP, "audit": GROUP, "state": GROUP,
                                   "legacy": "S I U"},
    "sinkfleet.workers": {"events": GROUP, "audit": GROUP, "state": GROUP, "exporter": "S",
                          "legacy": "S I U"},
    "sinkfleet.group_holds": {"events": "S", "audit": "S", "state": "S", "legacy": "S"},
    "sinkfleet.schema_versions": {"events": "S", "audit": "S", "state": "S", "rollups": "S",
                                  "legacy": "S"},
    "sinkfleet.group_roles": {"events": "S", "audit": "S", "state": "S"},
    "sinkfleet.rollup_metric_parts": {"rollups": "S I U", "legacy": "S I U"},
    "sinkfleet.schema_migrations": {},
}
RLS = {"sinkfleet.consumer_offsets": "group_id", "sinkfleet.workers": "group_id",
       "sinkfleet.state_conflicts": "sink"}
HISTORY_FIXED, HISTORY_FREE = "state_bin_id", "produced_at"  # an id column, a winner column


def render(expected: dict[str, dict[str, str]]) -> str:
    """The markdown table of docs/security.md."""
    lines = ["| table | " + " | ".join(ROLES) + " |", "|---" * (len(ROLES) + 1) + "|"]
    for table in TABLES:
        cells = [expected[table].get(role, "—") for role in ROLES]
        lines.append(f"| `{table}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def outcomes(cell: str) -> dict[str, str]:
    """``"S I U (own)"`` → {S: own, I: own, U: own, D: no, T: no, DDL: no}."""
    scope = "own" if cell.endswith("(own)") else "yes"
    tokens = cell.removesuffix("(own)").split() if cell != "—" else []
    out = dict.fromkeys(STATEMENTS, "no")
    for token in tokens:
        out[token.removesuffix("(cols)")] = "cols" if token.endswith("(cols)") else scope
    return out


def test_docs_table_is_the_matrix() -> None:
    assert set(EXPECTED) == set(TABLES)
    table = render(EXPECTED)
    assert table in DOC.read_text(), f"docs/security.md must contain:\n{table}"


@dataclass
class Matrix:
    settings: Settings  # the owner, on the scratch database
    groups: dict[str, str]  # role key -> consumer group
    logins: dict[str, tuple[str, str]]  # role key -> (login, password)


class _Rollback(Exception):
    pass


@pytest_asyncio.fixture
async def matrix(stack: Settings, tmp_path: Path) -> AsyncIterator[Matrix]:
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path / "cat"
    for sub in ("schemas", "topics", "sinks"):
        shutil.copytree(ROOT / sub, root / sub)
    (root / "workers").mkdir()
    groups = {}
    for path in sorted((ROOT / "workers").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        spec["group"] = groups[spec["name"]] = f"m{suffix}.{spec['name']}"
        (root / "workers" / path.name).write_text(yaml.safe_dump(spec))
    database, legacy = f"sinkfleet_matrix_{suffix}", f"sinkfleet_m{suffix}_legacy"
    reader, reader_pw = f"sinkfleet_m{suffix}_reader", secrets.token_hex(12)
    async with pg(stack) as admin:
        await admin.execute(f"CREATE DATABASE {database}")
        settings = load_settings(home=root, state_dir=stack.state, pg_database=database,
                                 pg_worker_user=legacy)
        roles = [group_role(g) for g in groups.values()]
        try:
            await migrate(settings, load_catalogue(root), lambda m: None)
            await admin.execute(f"CREATE ROLE {reader} LOGIN PASSWORD '{reader_pw}'"
                                f" IN ROLE {READER_ROLE}")
            logins = {key: (login_of(group_role(g)), "") for key, g in groups.items()}
            logins |= {"rollups": ("sinkfleet_rollups_login", ""),
                       "exporter": ("sinkfleet_exporter_login", ""),
                       "reader": (reader, reader_pw), "legacy": (legacy, "")}
            for key, (login, password) in logins.items():
                if not password:
                    secret = load_settings(state_dir=stack.state, pg_user=login,
                                           pg_worker_user=legacy).secret("pg_password")
                    assert secret is not None, login
                    logins[key] = (login, secret.get_secret_value())
            yield Matrix(settings, groups, logins)
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            for role in (*[login_of(r) for r in roles], *roles, reader, legacy):
                await admin.execute(f"DROP ROLE IF EXISTS {role}")
                settings.login_secret_path(role).unlink(missing_ok=True)


async def _seed(m: Matrix) -> None:
    """Rows of every group (and of a stranger) in the tables with row-level security."""
    async with pg(m.settings) as owner:
        for group in [*m.groups.values(), "someone.else"]:
            await owner.execute("INSERT INTO sinkfleet.consumer_offsets (group_id, topic,"
                                " partition, next_offset) VALUES ($1, 't', 0, 1)", group)
            await owner.execute("INSERT INTO sinkfleet.workers (worker_id, group_id, host,"
                                " pid, state) VALUES ($1, $1, 'h', 1, 'ok')", group)
        for sink in ("policies", "not_ours"):
            await owner.execute(_CONFLICT, sink, "k0")


_CONFLICT = ("INSERT INTO sinkfleet.state_conflicts (sink, key, version, loser_hash, loser,"
             " winner_hash, topic, kafka_partition, kafka_offset)"
             " VALUES ($1, $2, 1, '\\x00', '{}', '\\x01', 't', 0, 0)")


async def _try(conn: asyncpg.Connection, sql: str, *args: Any) -> str | None:
    """Run ``sql`` and roll it back: its status, or None if refused."""
    try:
        async with conn.transaction():
            status: str = await conn.execute(sql, *args)
            raise _Rollback
    except _Rollback:
        return status
    except asyncpg.InsufficientPrivilegeError:  # also: a row-level security violation
        return None


def _own(m: Matrix, role: str, table: str) -> str:
    if table == "sinkfleet.state_conflicts":
        return "policies"
    return m.groups.get(role, m.groups["events"])  # others: probe with the events group


async def _rls_outcomes(m: Matrix, conn: asyncpg.Connection, role: str, table: str
                        ) -> dict[str, str]:
    col, own = RLS[table], _own(m, role, table)
    total = 2 if table == "sinkfleet.state_conflicts" else len(m.groups) + 1
    out = dict.fromkeys(STATEMENTS, "no")

    def scope(n: int) -> str:
        return "yes" if n == total else "own" if n == 1 else f"{n} rows?"
    try:
        seen = [r[0] for r in await conn.fetch(f"SELECT {col} FROM {table}")]
        out["S"] = "yes" if len(seen) == total else "own" if seen == [own] else f"{seen}?"
    except asyncpg.InsufficientPrivilegeError:
        pass
    if table == "sinkfleet.state_conflicts":
        inserts = [(_CONFLICT, s, "k1") for s in (own, "not_ours")]
    elif table == "sinkfleet.workers":
        sql = ("INSERT INTO sinkfleet.workers (worker_id, group_id, host, pid, state)"
               " VALUES ($1 || '-new', $1, 'h', 1, 'ok')")
        inserts = [(sql, g) for g in (own, "someone.else")]
    else:
        sql = ("INSERT INTO sinkfleet.consumer_offsets (group_id, topic, partition,"
               " next_offset) VALUES ($1, 't', 9, 0)")
        inserts = [(sql, g) for g in (own, "someone.else")]
    mine, theirs = [await _try(conn, sql, *args) for sql, *args in inserts]
    out["I"] = "no" if mine is None else "own" if theirs is None else "yes"
    for key, sql in (("U", f"UPDATE {table} SET {col} = {col}"), ("D", f"DELETE FROM {table}")):
        status = await _try(conn, sql)
        if status is not None:
            out[key] = scope(int(status.split()[-1]))
    return out


async def _outcomes(m: Matrix, conn: asyncpg.Connection, role: str, table: str
                    ) -> dict[str, str]:
    if table in RLS:
        out = await _rls_outcomes(m, conn, role, table)
    else:
        out = {}
        col = await conn.fetchval(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum = 1",
            table)
        if table == "policies_history":
            col = HISTORY_FIXED
        checks = {"S": f"SELECT count(*) FROM {table}",
                  "I": f"INSERT INTO {table} SELECT * FROM {table} WHERE false",
                  "U": f"UPDATE {table} SET {col} = {col} WHERE false",
                  "D": f"DELETE FROM {table} WHERE false"}
        for key, sql in checks.items():
            out[key] = "no" if await _try(conn, sql) is None else "yes"
        if table == "policies_history" and out["U"] == "no":
            free = f"UPDATE {table} SET {HISTORY_FREE} = {HISTORY_FREE} WHERE false"
            out["U"] = "no" if await _try(conn, free) is None else "cols"
    out["T"] = "no" if await _try(conn, f"TRUNCATE {table}") is None else "yes"
    schema = table.split(".")[0] if "." in table else "public"
    ddl = [await _try(conn, f"CREATE TABLE {schema}.evil_{role} (x int)"),
           await _try(conn, f"ALTER TABLE {table} ADD COLUMN evil int")]
    out["DDL"] = "no" if ddl == [None, None] else "yes"
    return out


async def test_every_role_may_do_exactly_what_the_matrix_says(matrix: Matrix) -> None:
    await _seed(matrix)
    got: dict[tuple[str, str], dict[str, str]] = {}
    want: dict[tuple[str, str], dict[str, str]] = {}
    for role in ROLES:
        login, password = matrix.logins[role]
        conn = await asyncpg.connect(**{**matrix.settings.pg_connect_kwargs, "user": login,
                                        "password": password})
        try:
            assert await conn.fetchval("SELECT current_user") == login
            assert not await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls"
                " FROM pg_roles WHERE rolname = current_user")
            with pytest.raises(asyncpg.InsufficientPrivilegeError,
                               match="COPY to or from an external program"):
                await conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
            for table in TABLES:
                got[role, table] = await _outcomes(matrix, conn, role, table)
                want[role, table] = outcomes(EXPECTED[table].get(role, "—"))
        finally:
            await conn.close()
    wrong = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert wrong == {}, "\n".join(f"{k}: expected {w}, got {g}" for k, (w, g) in wrong.items())


def test_group_role_names() -> None:
    assert group_role("sinkfleet.events") == "sinkfleet_events"
    assert login_of(group_role("sinkfleet.events")) == "sinkfleet_events_login"
    assert group_role("test-AB.c") == "sinkfleet_test_ab_c"
    long = group_role("x" * 200)
    assert len(login_of(long)) <= 63 and re.fullmatch(r"sinkfleet_x+_[0-9a-f]{8}", long)
    assert group_role("x" * 200) != group_role("x" * 199)


if __name__ == "__main__":
    print(render(EXPECTED))
