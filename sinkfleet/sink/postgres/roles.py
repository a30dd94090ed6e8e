"""The workers' least-privilege roles, maintained by `sinkfleet db migrate`.

* ``sinkfleet_worker`` (NOLOGIN, migration ``core:0003_roles``): CONNECT and
  TEMPORARY on the database, SELECT/INSERT/UPDATE on ``sinkfleet.consumer_offsets``
  and ``sinkfleet.workers``, and — granted here on every run — USAGE on each
  sink's schema and SELECT/INSERT on its table (plus UPDATE/DELETE on a state
  sink's latest-version table, whose history stays insert-only), and default
  privileges so tables ``db migrate`` creates later in that schema get SELECT/INSERT.
  No CREATE on any schema, no UPDATE/DELETE/TRUNCATE on events, history or audit
  tables, not an owner of anything.
* ``SINKFLEET_PG_WORKER_USER`` (default ``sinkfleet_worker_login``): a LOGIN
  member of it. Its password is ``SINKFLEET_PG_WORKER_PASSWORD``, else one
  generated once into ``.sinkfleet/secrets/pg_worker_password`` (mode 0600).
  The password is sent as a SCRAM-SHA-256 verifier computed here, so the
  plain text never reaches the server (nor its statement logs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.config import Settings, env_name
from sinkfleet.errors import ConfigError, MigrationError
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
    """The worker login role's password: from settings, else the generated secret."""
    from sinkfleet.stack.services import ensure_secret

    return ensure_secret(settings, "pg_worker_password")


async def grant_sink_access(conn: asyncpg.Connection, sink: Sink) -> None:
    """Let workers append to ``sink`` (and to tables later created in its schema)."""
    spec = sink.spec
    schema = quote_ident(spec.db_schema)
    async with conn.transaction():
        await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {WORKER_ROLE}")
        # state: the latest row is updated in place and deleted by tombstones; its
        # history is insert-only but for a same-version conflict's winner (the loser
        # moves to sinkfleet.state_conflicts); audit tables and events are insert-only.
        latest = "SELECT, INSERT, UPDATE, DELETE" if spec.state is not None else "SELECT, INSERT"
        await conn.execute(f"GRANT {latest} ON {spec.qualified_table} TO {WORKER_ROLE}")
        if spec.state is not None:
            history = f"{schema}.{quote_ident(spec.history_table)}"
            await conn.execute(f"GRANT SELECT, INSERT ON {history} TO {WORKER_ROLE}")
            keep = {*spec.id, spec.state.version}  # the id, version and lineage never change
            updatable = [c.name for c in sink.columns if c.name not in keep]
            updatable += [*HISTORY_RANK_COLUMNS, "kafka_partition", "kafka_offset",
                          "recorded_at"]
            await conn.execute(f"GRANT UPDATE ({', '.join(map(quote_ident, updatable))})"
                               f" ON {history} TO {WORKER_ROLE}")
        await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema}"
                           f" GRANT SELECT, INSERT ON TABLES TO {WORKER_ROLE}")


async def ensure_worker_login(conn: asyncpg.Connection, settings: Settings) -> bool:
    """Create (or update) the workers' LOGIN role; True if it was created now."""
    try:
        user = quote_ident(settings.pg_worker_user)
    except ValueError:
        raise ConfigError(f"{env_name('pg_worker_user')}={settings.pg_worker_user!r} is not a"
                          " valid role name (lower-case letters, digits, _)") from None
    if settings.pg_worker_user == settings.pg_user:
        raise ConfigError(f"{env_name('pg_worker_user')} must differ from"
                          f" {env_name('pg_user')}: `db migrate` runs as the owner")
    verifier = scram_verifier(worker_password(settings))
    exists = await conn.fetchval("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                                 settings.pg_worker_user)
    # The verifier is a literal (utility statements take no parameters); it is not the
    # password, and escaping quotes keeps it a literal whatever it contains.
    literal = "'" + verifier.replace("'", "''") + "'"
    try:
        async with conn.transaction():
            if exists:
                await conn.execute(f"ALTER ROLE {user} WITH LOGIN PASSWORD {literal}")
            else:
                await conn.execute(f"CREATE ROLE {user} WITH LOGIN INHERIT PASSWORD {literal}")
            await conn.execute(f"GRANT {WORKER_ROLE} TO {user}")
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationError(
            f"cannot create or update the workers' login role {settings.pg_worker_user}:"
            f" {exc}; run `db migrate` as a role with CREATEROLE, or create it yourself"
            f" (LOGIN, member of {WORKER_ROLE}) and set {env_name('pg_worker_user')}=''"
            " to skip this step") from None
    return not exists
