"""The least-privilege worker role created by `db migrate`, on the real PostgreSQL.

As ``sinkfleet_worker_login`` (a member of ``sinkfleet_worker``) the worker's whole
storage path works — COPY into the sink table, the TEMP staging table and merge for
re-deliveries, the offsets upsert, the heartbeat upsert — and everything else is
refused with permission errors: DDL anywhere, UPDATE/DELETE/TRUNCATE of sink rows,
deleting offsets.
"""

from __future__ import annotations

import socket
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import ConfigError
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.group_roles import group_role, login_of
from sinkfleet.sink.postgres.offsets import load_offsets, save_offsets
from sinkfleet.sink.postgres.roles import scram_verifier
from sinkfleet.sink.postgres.writer import AppendWriter
from sinkfleet.worker.heartbeat import UPSERT
from sinkfleet.worker.rows import RowBuilder
from tests.support.catalogue import TestCatalogue

pytestmark = pytest.mark.integration


def worker_settings(tc: TestCatalogue, login: str | None = None) -> Settings:
    # As a worker would run: SINKFLEET_PG_USER=sinkfleet_worker_login (or its group's
    # login), and the password the secret `db migrate` generated.
    return load_settings(home=tc.root, state_dir=tc.settings.state,
                         pg_user=login or tc.settings.pg_worker_user)


@pytest.mark.parametrize("who", ["legacy", "group"])
async def test_worker_role_can_do_the_worker_path(catalogue_factory: Any, who: str) -> None:
    tc: TestCatalogue = await catalogue_factory()
    login = login_of(group_role(tc.group)) if who == "group" else None
    settings = worker_settings(tc, login)
    assert settings.pg_user == (login or "sinkfleet_worker_login")
    password = settings.secret("pg_password")
    assert password is not None
    if who == "legacy":
        assert password == settings.secret("pg_worker_password")
    else:
        assert password.get_secret_value() == settings.login_secret_path(
            login or "").read_text().strip()
    sink = tc.catalogue.sinks[tc.table]
    build = RowBuilder(sink)
    writer = AppendWriter(sink, build.names)
    codec = Codec(tc.catalogue.schemas["experience_event"], SchemaStore(None))
    load = ExperienceLoad(seed=5, agent_prefix=f"r{tc.suffix}")
    rows = [build(codec.decode(codec.encode(next(load)))) for _ in range(50)]
    tp = TopicPartition(tc.topic, 0)
    async with pg(settings) as conn:
        assert await conn.fetchval("SELECT current_user") == settings.pg_user
        assert not await conn.fetchval("SELECT rolsuper OR rolcreaterole OR rolcreatedb"
                                        " FROM pg_roles WHERE rolname = current_user")
        await writer.prepare(conn)  # CREATE TEMP TABLE … (LIKE sink): needs TEMPORARY
        async with conn.transaction():
            assert (await writer.write(conn, rows)).inserted == 50  # COPY straight into the table
            await save_offsets(conn, tc.group, {tp: 50})
        async with conn.transaction():  # a re-delivery: staging table + ON CONFLICT
            assert (await writer.write(conn, rows[:10])).inserted == 0
            assert writer.direct is False
            await save_offsets(conn, tc.group, {tp: 60})  # the upsert's UPDATE branch
        assert await load_offsets(conn, tc.group, [tp]) == {tp: 60}
        for state in ("ok", "stopped"):  # heartbeat: insert, then update
            await conn.execute(UPSERT, f"roles-{tc.suffix}", tc.group, socket.gethostname(),
                               1, None, state, 1, 50, 50, 0)
        assert await conn.fetchval(f'SELECT count(*) FROM "{tc.table}"') == 50


REFUSED = [
    ("CREATE TABLE public.evil (x int)", "permission denied for schema public"),
    ("CREATE TABLE sinkfleet.evil (x int)", "permission denied for schema sinkfleet"),
    ("CREATE SCHEMA evil", "permission denied for database"),
    ('DROP TABLE "{t}"', "must be owner of table"),
    ('ALTER TABLE "{t}" ADD COLUMN evil int', "must be owner of table"),
    ('CREATE INDEX evil_idx ON "{t}" (agent_id)', "must be owner of table"),
    ('CREATE TABLE public.evil_part PARTITION OF "{t}" FOR VALUES FROM'
     " ('2001-01-01') TO ('2001-01-02')", "permission denied for schema public"),
    ('UPDATE "{t}" SET agent_id = \'x\'', "permission denied for table {t}"),
    ('DELETE FROM "{t}"', "permission denied for table {t}"),
    ('TRUNCATE "{t}"', "permission denied for table {t}"),
    ("DELETE FROM sinkfleet.consumer_offsets", "permission denied for table consumer_offsets"),
    ("DROP TABLE sinkfleet.consumer_offsets", "must be owner of table consumer_offsets"),
    ("SELECT * FROM sinkfleet.schema_migrations", "permission denied for table"
                                                  " schema_migrations"),
    ("CREATE ROLE evil LOGIN", "permission denied to create role"),
]


async def test_worker_role_is_refused_ddl_and_rewrites(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    async with pg(worker_settings(tc)) as conn:
        for sql, message in REFUSED:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as caught:
                await conn.execute(sql.format(t=tc.table))
            assert message.format(t=tc.table) in str(caught.value), sql


async def test_tables_created_later_get_no_grants(catalogue_factory: Any, stack: Settings
                                                ) -> None:
    """Deliberately changed (issue #12): no role's grants extend to tables created later
    (no ALTER DEFAULT PRIVILEGES); partitions need none, rows reach them through the
    parent (the worker path above COPYs into a partitioned table)."""
    tc: TestCatalogue = await catalogue_factory()
    async with pg(tc.settings) as owner:
        name = f"later_{tc.suffix}"
        role = group_role(tc.group)
        try:
            partition = await owner.fetchval(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 LIMIT 1", tc.table)
            await owner.execute(f'CREATE TABLE public."{name}" (x int)')
            for table in (partition, name):
                privileges = await owner.fetchrow(
                    "SELECT has_table_privilege($2, $1, 'SELECT') AS s,"
                    " has_table_privilege($2, $1, 'INSERT') AS i,"
                    " has_table_privilege($2, $1, 'UPDATE') AS u,"
                    " has_table_privilege($2, $1, 'DELETE') AS d", f'public."{table}"', role)
                assert tuple(privileges) == (False, False, False, False), table
        finally:
            await owner.execute(f'DROP TABLE IF EXISTS public."{name}"')


@pytest.mark.parametrize("password", ["plain-ascii-Pa55", "wörker ﬁ\u00a0pässwörd"])
async def test_scram_verifier_matches_what_postgresql_computes(
        stack: Settings, password: str) -> None:
    """Our client-side verifier equals the server's for the same salt (SASLprep too)."""
    import base64

    async with pg(stack) as conn:
        role = f"sinkfleet_scram_probe_{abs(hash(password)) % 10_000}"
        try:
            await conn.execute(f"CREATE ROLE {role} NOLOGIN")
            quoted = password.replace("'", "''")
            await conn.execute("SET password_encryption = 'scram-sha-256'")
            await conn.execute(f"ALTER ROLE {role} PASSWORD '{quoted}'")
            server = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                                         role)
        finally:
            await conn.execute(f"DROP ROLE IF EXISTS {role}")
    iterations, salt = server.split("$")[1].split(":")
    assert scram_verifier(password, base64.b64decode(salt), int(iterations)) == server


def test_worker_user_must_be_a_plain_identifier(stack: Settings) -> None:
    with pytest.raises(ConfigError, match="SINKFLEET_PG_WORKER_USER"):
        import asyncio

        from sinkfleet.sink.postgres.roles import ensure_worker_login

        asyncio.run(ensure_worker_login(None, load_settings(  # type: ignore[arg-type]
            state_dir=stack.state, pg_worker_user='x"; DROP ROLE sinkfleet; --')))
