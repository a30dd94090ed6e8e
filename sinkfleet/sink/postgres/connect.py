"""Connections to PostgreSQL with errors that say what to do."""

from __future__ import annotations

from typing import Any

import asyncpg

from sinkfleet.config import Settings
from sinkfleet.errors import StorageUnavailable

RETRIABLE_PG_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


# Everything that means "PostgreSQL is not there right now": back off and retry.
RETRIABLE_STORAGE: tuple[type[BaseException], ...] = (StorageUnavailable, *RETRIABLE_PG_ERRORS)


def _unavailable(settings: Settings, exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(
        f"cannot reach PostgreSQL at {settings.pg_host}:{settings.pg_port}"
        f" (database {settings.pg_database}, user {settings.pg_user}):"
        f" {type(exc).__name__}: {exc}; is it running (sinkfleet stack status)?"
    )


async def connect(settings: Settings, timeout: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(**settings.pg_connect_kwargs, timeout=timeout)
    except (*RETRIABLE_PG_ERRORS, asyncpg.InvalidPasswordError,
            asyncpg.InvalidCatalogNameError) as exc:
        raise _unavailable(settings, exc) from None


async def create_pool(settings: Settings, size: int = 2, **kwargs: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(**settings.pg_connect_kwargs, min_size=1,
                                         max_size=size, timeout=10, command_timeout=120,
                                         **kwargs)
    except (*RETRIABLE_PG_ERRORS, asyncpg.InvalidPasswordError,
            asyncpg.InvalidCatalogNameError) as exc:
        raise _unavailable(settings, exc) from None
    assert pool is not None
    return pool
