"""Every value Avro can carry is stored exactly or dead-lettered with a reason — never
changed (guarantee 6, docs/avro.md "Extreme values").

asyncpg encodes ``datetime.min``/``max`` (and ``date.min``/``max``) as PostgreSQL's
-infinity/infinity; sinkfleet's connections take exact codecs instead. The property test
sends wire values over each type's whole range — the bytes any publisher may send —
through decode → RowBuilder → COPY → PostgreSQL → the read API.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import struct
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.framing import frame_single_object
from sinkfleet.config import Settings
from sinkfleet.errors import DecodeError, ValidationError
from sinkfleet.read import Reader
from sinkfleet.sink.postgres.connect import connect, create_pool
from sinkfleet.sink.postgres.writer import AppendWriter
from sinkfleet.worker.rows import RowBuilder
from tests.sink.support import Family, drop_family, make_family

UTC = dt.UTC
MIN_UTC = dt.datetime(1, 1, 1, tzinfo=UTC)
MAX_UTC = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DAY = dt.date(1970, 1, 1)
MIN_US = -62135596800000000  # 0001-01-01T00:00:00Z in µs since the Unix epoch
MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z
MIN_DAY, MAX_DAY = -719162, 2932896  # 0001-01-01, 9999-12-31 in days since 1970-01-01
INT32 = (-2**31, 2**31 - 1)
INT64 = (-2**63, 2**63 - 1)

# ---------------------------------------------------------------- storage, both paths


@pytest.mark.parametrize("path", ["copy", "parameters"])
async def test_first_and_last_instants_are_stored_exactly(stack: Settings, path: str) -> None:
    """The issue: 0001-01-01T00:00:00Z became -infinity, 9999-12-31T23:59:59.999999Z
    infinity (timestamptz, timestamp and date alike); 1 µs inside round-tripped."""
    rows = [(MIN_UTC, MIN_UTC.replace(tzinfo=None), dt.date.min),
            (MAX_UTC, MAX_UTC.replace(tzinfo=None), dt.date.max),
            (MIN_UTC + dt.timedelta(microseconds=1), dt.datetime(1, 1, 1, 0, 0, 0, 1),
             dt.date(1, 1, 2))]
    conn = await connect(stack)
    try:
        await conn.execute("CREATE TEMP TABLE extremes (n int, a timestamptz, b timestamp,"
                           " c date)")
        numbered = [(n, *row) for n, row in enumerate(rows)]
        if path == "copy":
            await conn.copy_records_to_table("extremes", records=numbered)
        else:
            await conn.executemany("INSERT INTO extremes VALUES ($1, $2, $3, $4)", numbered)
        stored = await conn.fetch(
            "SELECT n, isfinite(a) AND isfinite(b) AND isfinite(c) AS finite,"
            " to_char(a AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS a_utc,"
            " to_char(b, 'YYYY-MM-DD HH24:MI:SS.US') AS b_text, c::text AS c_text,"
            " a, b, c FROM extremes ORDER BY n")
    finally:
        await conn.close()
    assert [r["finite"] for r in stored] == [True, True, True]
    assert [r["a_utc"] for r in stored] == ["0001-01-01 00:00:00.000000",
                                           "9999-12-31 23:59:59.999999",
                                           "0001-01-01 00:00:00.000001"]
    assert [r["b_text"] for r in stored] == [r["a_utc"] for r in stored]
    assert [r["c_text"] for r in stored] == ["0001-01-01", "9999-12-31", "0001-01-02"]
    assert [(r["a"], r["b"], r["c"]) for r in stored] == rows  # and read back unchanged


async def test_pool_connections_store_extremes_exactly(stack: Settings) -> None:
    """Pools (the read API's) take the same codecs, beside their own ``init``."""
    seen: list[bool] = []

    async def init(conn: Any) -> None:
        seen.append(True)

    pool = await create_pool(stack, init=init)
    try:
        value = await pool.fetchval("SELECT $1::timestamptz::text = '9999-12-31"
                                    " 23:59:59.999999+00'", MAX_UTC)
        back = await pool.fetchval("SELECT '0001-01-01 00:00:00+00'::timestamptz")
    finally:
        await pool.close()
    assert seen and value is True
    assert back == MIN_UTC and back.tzinfo is not None
