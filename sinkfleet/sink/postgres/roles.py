"""Login roles and sink grants, maintained by `sinkfleet db migrate`.

* ``sinkfleet_worker`` (NOLOGIN, migration ``core:0003_roles``): the legacy role of
  every group at once: CONNECT and TEMPORARY on the database, SELECT/INSERT/UPDATE on
  ``sinkfleet.consumer_offsets`` and ``sinkfleet.workers`` (any group's rows), and —
  granted here on every run — USAGE on each sink's schema and what ``sink_grants``
  lists on its tables. Deployments use the per-group roles instead (``group_roles``).
* ``SINKFLEET_PG_WORKER_USER`` (default ``sinkfleet_worker_login``): a LOGIN
  member of it. Its password is ``SINKFLEET_PG_WORKER_PASSWORD``, else one
  generated once into ``.sinkfleet/secrets/pg_worker_password`` (mode 0600).

Every login's password is sent as a SCRAM-SHA-256 verifier computed here, so the
plain text never reaches the server (nor its statement logs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata
from pathlib import Path

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.config import Settings, env_name
from sinkfleet.errors import ConfigError, MigrationError
from sinkfleet.secrets import generated_secret
from sinkfleet.sink.postgres.ddl import HISTORY_RANK_COLUMNS, quote_ident

WORKER_ROLE = "sinkfleet_worker"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def _saslprep(password: str) -> str:
    """SASLprep (RFC 4013) the way PostgreSQL applies it to SCRAM passwords: ASCII is
    kept as is; a password SASLprep rejects is used raw."""
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(c) else c
                     for c in password if not stringprep.in_table_b1(c))
    out = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22,
                  stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
                  stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
                  stringprep.in_table_c9, stringprep.in_table_a1)
    if not out or any(check(c) for c in out for check in prohibited):
        return password
    if any(stringprep.in_table_d1(c) for c in out) and (
            any(stringprep.in_table_d2(c) for c in out)
            or not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1]))):
        return password
    return out


def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL stores for ``password`` (pg_authid format)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return (f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}")


def worker_password(settings: Settings) -> str:
    """The legacy worker login's password: from settings, else the generated secret."""
    if settings.pg_worker_password is not None:
        return settings.pg_worker_password.get_secret_value()
    if settings.pg_secrets_dir is not None:
        return login_password(settings, settings.pg_worker_user)
    return _generated(settings, settings.state / "secrets" / "pg_worker_password",
                      settings.pg_worker_user)


def login_password(settings: Settings, login: str) -> str:
    """The password of least-privilege login ``login``: the file named after it in
    ``SINKFLEET_PG_SECRETS_DIR``, else one generated once under the state directory."""
    path = settings.login_secret_path(login)
    if settings.pg_secrets_dir is not None:
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"no password for PostgreSQL login {login}: cannot read {path}"
                f" ({exc.strerror}); put it there (a file named after the login, e.g. a"
                f" Docker or Kubernetes secret) or unset {env_name('pg_secrets_dir')}"
                " to generate one") from None
        if not password:
            raise ConfigError(f"{path} is empty: write PostgreSQL login {login}'s password")
        return password
    return _generated(settings, path, login)


def _generated(settings: Settings, path: Path, login: str) -> str:
    try:
        return generated_secret(path)
    except OSError as exc:  # e.g. the image's root-owned /app/.sinkfleet as uid 10001
        raise ConfigError(
            f"cannot store a generated password for PostgreSQL login {login} in {path}"
            f" ({exc.strerror}): give the passwords as files named after the logins in"
            f" {env_name('pg_secrets_dir')} (Docker or Kubernetes secrets), or point"
            f" {env_name('state_dir')} at a writable directory") from None


def sink_grants(sink: Sink, grantee: str) -> list[str]:
    """What a worker writing ``sink`` may do to its tables, as GRANT statements."""
    spec = sink.spec
    schema = quote_ident(spec.db_schema)
    # state: the latest row is updated in place and deleted by tombstones; its history
    # is insert-only but for a same-version conflict's winner (the loser moves to
    # sinkfleet.state_conflicts); audit tables and events are insert-only.
    latest = "SELECT, INSERT, UPDATE, DELETE" if spec.state is not None else "SELECT, INSERT"
    if spec.merge is not None:  # merge: rows are joined in place, never deleted
        latest = "SELECT, INSERT, UPDATE"
    out = [f"GRANT {latest} ON {spec.qualified_table} TO {grantee}"]
    if spec.state is not None:
        history = f"{schema}.{quote_ident(spec.history_table)}"
        out.append(f"GRANT SELECT, INSERT ON {history} TO {grantee}")
        keep = {*spec.id, spec.state.version}  # the id, version and lineage never change
        updatable = [c.name for c in sink.columns if c.name not in keep]
        updatable += [*HISTORY_RANK_COLUMNS, "kafka_partition", "kafka_offset", "recorded_at"]
        out.append(f"GRANT UPDATE ({', '.join(map(quote_ident, updatable))})"
                   f" ON {history} TO {grantee}")
    return out


def sink_tables(sink: Sink) -> list[str]:
    """The sink's tables, qualified and quoted (a state sink's history included)."""
    spec = sink.spec
    tables = [spec.qualified_table]
    if spec.state is not None:
        tables.append(f"{quote_ident(spec.db_schema)}.{quote_ident(spec.history_table)}")
    return tables


async def grant_sink_access(conn: asyncpg.Connection, sink: Sink) -> None:
    """Let the legacy all-groups role write ``sink`` (no grants on later tables: rows
    reach partitions through their parent)."""
    async with conn.transaction():
        await conn.execute(f"GRANT USAGE ON SCHEMA {quote_ident(sink.spec.db_schema)}"
                           f" TO {WORKER_ROLE}")
        for statement in sink_grants(sink, WORKER_ROLE):
            await conn.execute(statement)


def check_login_name(login: str, setting: str | None = None) -> str:
    """``login`` quoted, or a ConfigError naming where it came from."""
    try:
        return quote_ident(login)
    except ValueError:
        where = f"{env_name(setting)}={login!r}" if setting else f"login {login!r}"
        raise ConfigError(f"{where} is not a valid role name (lower-case letters, digits,"
                          " _)") from None


async def ensure_login(conn: asyncpg.Connection, login: str, password: str,
                       member_of: str) -> bool:
    """Create (or update) LOGIN role ``login``, a member of ``member_of`` with
    ``password``; True if it was created now."""
    user = check_login_name(login)
    verifier = scram_verifier(password)
    exists = await conn.fetchval("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                                 login)
    # The verifier is a literal (utility statements take no parameters); it is not the
    # password, and escaping quotes keeps it a literal whatever it contains.
    literal = "'" + verifier.replace("'", "''") + "'"
    try:
        async with conn.transaction():
            if exists:
                await conn.execute(f"ALTER ROLE {user} WITH LOGIN PASSWORD {literal}")
            else:
                await conn.execute(f"CREATE ROLE {user} WITH LOGIN INHERIT PASSWORD {literal}")
            await conn.execute(f"GRANT {quote_ident(member_of)} TO {user}")
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationError(
            f"cannot create or update the login role {login}: {exc}; run `db migrate` as"
            f" a role with CREATEROLE, or create it yourself (LOGIN, member of"
            f" {member_of})") from None
    return not exists


async def ensure_worker_login(conn: asyncpg.Connection, settings: Settings) -> bool:
    """Create (or update) the legacy workers' LOGIN role; True if it was created now."""
    check_login_name(settings.pg_worker_user, "pg_worker_user")
    if settings.pg_worker_user == settings.pg_user:
        raise ConfigError(f"{env_name('pg_worker_user')} must differ from"
                          f" {env_name('pg_user')}: `db migrate` runs as the owner")
    try:
        return await ensure_login(conn, settings.pg_worker_user, worker_password(settings),
                                  WORKER_ROLE)
    except MigrationError as exc:
        raise MigrationError(f"{exc}, or set {env_name('pg_worker_user')}='' to skip this"
                             " step") from None
