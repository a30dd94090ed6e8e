"""Scratch PostgreSQL databases on the local stack: ``await scratch_db()`` gives the name of
a new, empty database; every one is dropped (WITH FORCE) when the test ends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest_asyncio

from sinkfleet.config import Settings


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _admin(stack: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(**{**stack.pg_connect_kwargs, "database": "postgres"})


async def create_db(stack: Settings) -> str:
    name = f"sftest_{uuid.uuid4().hex[:10]}"
    conn = await _admin(stack)
    try:
        await conn.execute(f"CREATE DATABASE {quoted(name)}")
    finally:
        await conn.close()
    return name


async def drop_db(stack: Settings, name: str) -> None:
    conn = await _admin(stack)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def scratch_db(stack: Settings) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    made: list[str] = []

    async def make() -> str:
        made.append(await create_db(stack))
        return made[-1]

    yield make
    for name in made:
        await drop_db(stack, name)
