"""PostgreSQL errors the worker must survive: which ones mean "reconnect and retry"."""

from __future__ import annotations

import asyncio

import pytest

from sinkfleet.config import Settings, load_settings
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect, pg
from tests.support.faults import TcpProxy

pytestmark = pytest.mark.integration


async def test_session_ended_by_the_server_while_idle_is_retriable(stack: Settings) -> None:
    """A PostgreSQL restart sends FATAL 57P01 to idle sessions, then closes them. A query
    issued before the client reads the EOF found asyncpg's protocol desynchronised
    (InternalClientError); that ended the worker's store task — the chaos suite's
    PostgreSQL-restart flake. The proxy holds the EOF back to make the window certain."""
    proxy = TcpProxy(stack.pg_host, stack.pg_port, hold_eof=True)
    await proxy.start()
    admin = await connect(stack)
    conn = await connect(load_settings(home=stack.home, state_dir=stack.state,
                                       pg_port=proxy.port))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        await asyncio.sleep(0.3)  # the FATAL message has arrived, the EOF has not
        assert not conn.is_closed()
        with pytest.raises(RETRIABLE_STORAGE):
            await conn.execute("BEGIN")
    finally:
        conn.terminate()
        await admin.close()
        await proxy.stop()


async def test_pg_closes_its_connection_on_every_way_out(stack: Settings) -> None:
    """``async with pg(settings)`` closes the connection after the block, after an error
    in it, and when the server already ended the session (no error from the close)."""
    async with pg(stack) as conn:
        assert await conn.fetchval("SELECT 1") == 1
    assert conn.is_closed()

    with pytest.raises(ZeroDivisionError):
        async with pg(stack) as failing:
            1 / 0  # noqa: B018
    assert failing.is_closed()

    async with pg(stack) as admin, pg(stack) as killed:
        await admin.execute("SELECT pg_terminate_backend($1)", killed.get_server_pid())
        await asyncio.sleep(0.2)
    assert killed.is_closed() and admin.is_closed()
