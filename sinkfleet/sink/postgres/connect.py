"""Connections to PostgreSQL with errors that say what to do."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError, StorageRefused, StorageUnavailable
from sinkfleet.sink.postgres.codecs import exact_time_codecs, with_exact_time_codecs

RETRIABLE_PG_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    # A shutting-down server sends FATAL 57P01 to idle sessions, then closes them. If
    # the next query starts before asyncpg reads the EOF, it fails with "cannot switch
    # to state …; another operation (2) is in progress": the connection is useless,
    # the server may be back in a second — drop the connection and connect again.
    asyncpg.InternalClientError,
)


# Refused by the server (wrong password, no pg_hba.conf entry, no such database).
_REFUSED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)

# Everything that means "PostgreSQL is not there right now": back off and retry.
RETRIABLE_STORAGE: tuple[type[BaseException], ...] = (StorageUnavailable, *RETRIABLE_PG_ERRORS)


def _unavailable(settings: Settings, exc: BaseException) -> SinkfleetError:
    """Down or slow → StorageUnavailable (retriable); refused (credentials, TLS, no such
    database) → StorageRefused: waiting will not fix a configuration."""
    if isinstance(exc, ssl.SSLError):
        hint = ("check SINKFLEET_PG_SSLMODE and SINKFLEET_PG_SSLROOTCERT, and that the"
                " server's certificate names the host you connect to (SINKFLEET_PG_HOST)")
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        hint = ("check SINKFLEET_PG_USER and SINKFLEET_PG_PASSWORD, and that the server"
                " accepts this user and SINKFLEET_PG_SSLMODE (pg_hba.conf)")
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        hint = "check SINKFLEET_PG_DATABASE, or create the database"
    else:
        hint = "is it running (sinkfleet stack status)?"
    where = (f"PostgreSQL at {settings.pg_host}:{settings.pg_port}"
             f" (database {settings.pg_database}, user {settings.pg_user})")
    if isinstance(exc, (ssl.SSLError, *_REFUSED)):
        return StorageRefused(f"{where} refused the connection: {type(exc).__name__}: {exc};"
                              f" {hint}")
    return StorageUnavailable(f"cannot reach {where}: {type(exc).__name__}: {exc}; {hint}")


async def connect(settings: Settings, timeout: float = 10.0) -> asyncpg.Connection:
    """A connection whose time codecs store every value exactly (``codecs``)."""
    try:
        conn = await asyncpg.connect(**settings.pg_connect_kwargs, timeout=timeout)
    except (*RETRIABLE_PG_ERRORS, *_REFUSED) as exc:
        raise _unavailable(settings, exc) from None
    try:
        await exact_time_codecs(conn)
    except BaseException as exc:
        conn.terminate()
        if isinstance(exc, RETRIABLE_PG_ERRORS):
            raise _unavailable(settings, exc) from None
        raise
    return conn


@asynccontextmanager
async def pg(settings: Settings, timeout: float = 10.0) -> AsyncIterator[asyncpg.Connection]:
    """``async with pg(settings) as conn:`` — ``connect``'s connection, closed on the way
    out (terminated if closing itself fails, e.g. the server went away)."""
    conn = await connect(settings, timeout)
    try:
        yield conn
    finally:
        try:
            await conn.close(timeout=5)
        except (*RETRIABLE_PG_ERRORS, asyncpg.PostgresError):
            conn.terminate()


async def create_pool(settings: Settings, size: int = 2, **kwargs: Any) -> asyncpg.Pool:
    """A pool of connections like ``connect``'s; an ``init`` of the caller runs after."""
    kwargs["init"] = with_exact_time_codecs(kwargs.get("init"))
    try:
        pool = await asyncpg.create_pool(**settings.pg_connect_kwargs, min_size=1,
                                         max_size=size, timeout=10, command_timeout=120,
                                         **kwargs)
    except (*RETRIABLE_PG_ERRORS, *_REFUSED) as exc:
        raise _unavailable(settings, exc) from None
    assert pool is not None
    return pool
