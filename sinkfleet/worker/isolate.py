"""Find the records PostgreSQL refuses, so one bad record never blocks its partition.

Only errors about the data itself (SQLSTATE classes 22 data exception, 23 integrity
violation, 54 program limit such as an oversized index row) are isolated; anything
else (a missing table, a lost connection) is not the record's fault and is raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from sinkfleet.sink.changes import Written

ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)

Write = Callable[[asyncpg.Connection, list[tuple[Any, ...]], Sequence[Any]], Awaitable[Written]]


async def write_isolating(conn: asyncpg.Connection, write: Write,
                          rows: list[tuple[Any, ...]], sources: Sequence[Any],
                          ) -> tuple[Written, list[tuple[Any, BaseException]]]:
    """Write ``rows`` under savepoints, bisecting on data errors.

    Returns (what the good rows wrote, [(source of a refused row, its error)]). Every
    good row is stored; about 2·log2(n) extra statements per bad row.
    """
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            return await write(conn, rows, sources), []
    except ROW_ERRORS as exc:
        if len(rows) == 1:
            return Written(), [(sources[0], exc)]
    mid = len(rows) // 2
    written, refused = await write_isolating(conn, write, rows[:mid], sources[:mid])
    right, refused_right = await write_isolating(conn, write, rows[mid:], sources[mid:])
    written += right
    return written, refused + refused_right
