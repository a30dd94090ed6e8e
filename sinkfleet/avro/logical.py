"""Strict readers for Avro logical types: a value is decoded exactly or refused.

fastavro's own readers change some legal wire values silently: a negative ``time-millis``
/``time-micros`` wraps to a time of day (-1 ms reads as 00:00:00.999), and a ``decimal``
with more digits than its ``precision`` is rounded to fit (8388607 at precision 4 reads as
8.389E+4). Values a Python ``datetime``/``date`` cannot hold (before year 1, after 9999)
raise ``OverflowError: date value out of range``, naming neither field nor limit. These
readers refuse all of those with ``UnrepresentableValue``, whose message says what and why
(it becomes the dead letter's reason). They are installed through fastavro's documented
extension point (``fastavro.read.LOGICAL_READERS``) when ``sinkfleet.avro`` is imported.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Any

import fastavro.read

UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NAIVE_EPOCH = dt.datetime(1970, 1, 1)
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# The instants a Python datetime holds, in µs since the Unix epoch, and dates in days.
FIRST_US = (dt.datetime.min.replace(tzinfo=dt.UTC) - UTC_EPOCH) // dt.timedelta(microseconds=1)
LAST_US = (dt.datetime.max.replace(tzinfo=dt.UTC) - UTC_EPOCH) // dt.timedelta(microseconds=1)
FIRST_DAY = dt.date.min.toordinal() - EPOCH_ORDINAL
LAST_DAY = dt.date.max.toordinal() - EPOCH_ORDINAL
DAY_US = 86_400_000_000


class UnrepresentableValue(ValueError):
    """A legal Avro value that cannot be decoded without changing it."""


def _instant(us: int, logical: str, raw: int, epoch: dt.datetime) -> dt.datetime:
    if not FIRST_US <= us <= LAST_US:
        side = ("before 0001-01-01T00:00:00" if us < FIRST_US
                else "after 9999-12-31T23:59:59.999999")
        raise UnrepresentableValue(f"{logical} {raw} is {side}, past what Python's datetime"
                                   " holds")
    return epoch + dt.timedelta(microseconds=us)


def read_timestamp_micros(data: int, writer: Any = None, reader: Any = None) -> dt.datetime:
    return _instant(data, "timestamp-micros", data, UTC_EPOCH)


def read_timestamp_millis(data: int, writer: Any = None, reader: Any = None) -> dt.datetime:
    return _instant(data * 1000, "timestamp-millis", data, UTC_EPOCH)


def read_local_timestamp_micros(data: int, writer: Any = None, reader: Any = None
                                ) -> dt.datetime:
    return _instant(data, "local-timestamp-micros", data, NAIVE_EPOCH)


def read_local_timestamp_millis(data: int, writer: Any = None, reader: Any = None
                                ) -> dt.datetime:
    return _instant(data * 1000, "local-timestamp-millis", data, NAIVE_EPOCH)


def read_date(data: int, writer: Any = None, reader: Any = None) -> dt.date:
    if not FIRST_DAY <= data <= LAST_DAY:
        raise UnrepresentableValue(f"date {data} (days since 1970-01-01) is outside"
                                   " 0001-01-01..9999-12-31 (Python's date)")
    return dt.date.fromordinal(data + EPOCH_ORDINAL)


def _time(us: int, logical: str, raw: int) -> dt.time:
    if not 0 <= us < DAY_US:
        raise UnrepresentableValue(f"{logical} {raw} is not a time of day (the spec counts"
                                   " from midnight, up to 24 h)")
    return (dt.datetime.min + dt.timedelta(microseconds=us)).time()


def read_time_millis(data: int, writer: Any = None, reader: Any = None) -> dt.time:
    return _time(data * 1000, "time-millis", data)


def read_time_micros(data: int, writer: Any = None, reader: Any = None) -> dt.time:
    return _time(data, "time-micros", data)


_EXACT = Context(prec=1_000_000)  # never rounds: the digits are checked first


def read_decimal(data: bytes, writer: Any = None, reader: Any = None) -> Decimal:
    schema = writer or {}
    precision, scale = schema["precision"], schema.get("scale", 0)
    unscaled = int.from_bytes(data, byteorder="big", signed=True)
    digits = len(str(abs(unscaled)))
    if digits > precision:
        raise UnrepresentableValue(f"decimal has {digits} digits, more than its precision"
                                   f" {precision}: it would be rounded")
    return Decimal(unscaled).scaleb(-scale, _EXACT)


READERS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "long-timestamp-micros": read_timestamp_micros,
    "long-timestamp-millis": read_timestamp_millis,
    "long-local-timestamp-micros": read_local_timestamp_micros,
    "long-local-timestamp-millis": read_local_timestamp_millis,
    "int-date": read_date,
    "int-time-millis": read_time_millis,
    "long-time-micros": read_time_micros,
    "bytes-decimal": read_decimal,
    "fixed-decimal": read_decimal,
}


def install() -> None:
    """Make fastavro decode logical types with these readers (process-wide)."""
    fastavro.read.LOGICAL_READERS.update(READERS)
