"""What a worker process stored in PostgreSQL: rows of a test catalogue's table, and the
offsets stored with them (sinkfleet.consumer_offsets); a reader login to read them with."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import SecretStr

from sinkfleet.config import Settings
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.group_roles import READER_ROLE
from tests.support.catalogue import TestCatalogue


@asynccontextmanager
async def reader_login(settings: Settings, login: str) -> AsyncIterator[Settings]:
    """``settings`` as a new login that is a member of sinkfleet_reader only (what `db
    migrate` grants it, so migrate first); the login is dropped afterwards."""
    password = secrets.token_hex(12)
    async with pg(settings) as conn:
        await conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{password}'"
                           f" IN ROLE {READER_ROLE}")
    try:
        yield settings.model_copy(update={"pg_user": login,
                                          "pg_password": SecretStr(password)})
    finally:
        async with pg(settings) as conn:
            await conn.execute(f"DROP ROLE IF EXISTS {login}")


async def count_rows(tc: TestCatalogue) -> tuple[int, int]:
    async with pg(tc.settings) as conn:
        row = await conn.fetchrow(f'SELECT count(*) AS n, count(DISTINCT event_id) AS d'
                                  f' FROM "{tc.table}"')
        return row["n"], row["d"]


async def stored_ids(tc: TestCatalogue) -> set[bytes]:
    async with pg(tc.settings) as conn:
        return {bytes(r[0]) for r in await conn.fetch(f'SELECT event_id FROM "{tc.table}"')}


async def stored_offsets(tc: TestCatalogue) -> dict[int, int]:
    async with pg(tc.settings) as conn:
        rows = await conn.fetch("SELECT partition, next_offset FROM sinkfleet.consumer_offsets"
                                " WHERE group_id = $1 AND topic = $2", tc.group, tc.topic)
        return {r["partition"]: r["next_offset"] for r in rows}
