"""Exact codecs for PostgreSQL's time types, installed on every sinkfleet connection.

asyncpg's own codecs send ``datetime.min``/``max`` (0001-01-01T00:00:00 and
9999-12-31T23:59:59.999999, whatever the zone says, once in UTC) and ``date.min``/``max``
as -infinity/infinity: two legal instants stored as something else, on COPY and on
parameters alike. These codecs send every value as the integer PostgreSQL stores
(µs or days since 2000-01-01), so each is stored exactly.

Reading, ±infinity (not written by sinkfleet since; rows stored before are exactly those
two instants) decodes to the first/last value Python holds, as asyncpg did, but aware
for ``timestamptz``. Values past year 9999 or before year 1 cannot be read into Python.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

_PG_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_DAY = dt.date(2000, 1, 1).toordinal()
_ONE_US = dt.timedelta(microseconds=1)
_INF64, _NEG_INF64 = 2**63 - 1, -(2**63)  # PostgreSQL's binary ±infinity
_INF32, _NEG_INF32 = 2**31 - 1, -(2**31)
_MAX_UTC = dt.datetime.max.replace(tzinfo=dt.UTC)
_MIN_UTC = dt.datetime.min.replace(tzinfo=dt.UTC)


def _local_midnight(day: dt.date) -> dt.datetime:
    """A date bound to a timestamptz means its midnight in the local zone (as asyncpg)."""
    return dt.datetime(day.year, day.month, day.day).astimezone()


def encode_timestamptz(value: dt.datetime | dt.date) -> tuple[int]:
    if not isinstance(value, dt.datetime):
        value = _local_midnight(value)
    elif value.tzinfo is None:  # naive means local time, as asyncpg reads it
        value = value.astimezone()
    return ((value - _PG_EPOCH_UTC) // _ONE_US,)


def decode_timestamptz(value: tuple[int], _td: type[dt.timedelta] = dt.timedelta
                       ) -> dt.datetime:
    us = value[0]
    if us == _INF64:
        return _MAX_UTC
    if us == _NEG_INF64:
        return _MIN_UTC
    return _PG_EPOCH_UTC + _td(0, 0, us)  # positional: a quarter faster per value


def encode_timestamp(value: dt.datetime | dt.date) -> tuple[int]:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return ((value - _PG_EPOCH) // _ONE_US,)  # aware: TypeError, as with asyncpg's


def decode_timestamp(value: tuple[int], _td: type[dt.timedelta] = dt.timedelta
                     ) -> dt.datetime:
    us = value[0]
    if us == _INF64:
        return dt.datetime.max
    if us == _NEG_INF64:
        return dt.datetime.min
    return _PG_EPOCH + _td(0, 0, us)


def encode_date(value: dt.date) -> tuple[int]:
    return (value.toordinal() - _PG_EPOCH_DAY,)


def decode_date(value: tuple[int]) -> dt.date:
    days = value[0]
    if days == _INF32:
        return dt.date.max
    if days == _NEG_INF32:
        return dt.date.min
    return dt.date.fromordinal(days + _PG_EPOCH_DAY)


_CODECS = (("timestamptz", encode_timestamptz, decode_timestamptz),
           ("timestamp", encode_timestamp, decode_timestamp),
           ("date", encode_date, decode_date))


async def exact_time_codecs(conn: asyncpg.Connection) -> None:
    """Install the exact codecs on ``conn`` (binary, so COPY uses them too)."""
    for name, encode, decode in _CODECS:
        await conn.set_type_codec(name, schema="pg_catalog", encoder=encode, decoder=decode,
                                  format="tuple")


def with_exact_time_codecs(init: Any = None) -> Any:
    """A pool ``init`` that installs the exact codecs, then runs ``init`` (if any)."""
    async def setup(conn: asyncpg.Connection) -> None:
        await exact_time_codecs(conn)
        if init is not None:
            await init(conn)
    return setup
