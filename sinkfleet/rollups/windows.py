"""Event-time tumbling windows and the aggregates kept per window: pure logic, no I/O.

Times are integer microseconds since the epoch (Avro ``timestamp-micros``), so window
boundaries are exact: a window of size S starts at ``ts - ts % S`` (UTC-aligned, as
PostgreSQL's ``date_trunc`` on a UTC timestamp). Sums, minima and maxima are
``Decimal``s parsed from the JSON text, so they equal PostgreSQL's ``numeric`` sums over
the same ``jsonb`` values digit for digit.

A state entry is one window of one key fed by one source partition; it remembers the
last source offset it absorbed (``o``), so a record re-read after a restart is
recognised and not counted twice (docs/rollups.md).
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
#: every grain a roll-up may keep (PostgreSQL's ``date_trunc`` field) -> length in µs
GRAINS: dict[str, int] = {"minute": MINUTE_US, "hour": HOUR_US, "day": DAY_US,
                          "week": WEEK_US}
#: the grains a family keeps unless it names others (Family.grains)
WINDOWS: dict[str, int] = {"minute": MINUTE_US, "hour": HOUR_US}
# 1970-01-01 was a Thursday; weeks start on Monday (as date_trunc('week')), 4 days later.
_WEEK_OFFSET_US = 4 * DAY_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXACT = decimal.Context(prec=200)  # sums stay exact (PostgreSQL numeric is exact too)

Dims = tuple[str | None, ...]
#: (source partition, window size name, window start µs, *dims)
EntryKey = tuple[Any, ...]
#: (source partition, "closed"): windows ending at or before ``h`` µs are closed
CLOSED = "closed"


class Entry(TypedDict):
    """A window's aggregate, as kept in the faust table (JSON: decimals as strings)."""

    n: int  # values (or records) counted
    s: str | None  # exact sum
    lo: str | None  # minimum
    hi: str | None  # maximum
    o: int  # the last source offset absorbed


def to_micros(value: datetime | int) -> int:
    """µs since the epoch of a ``timestamp-micros`` value (fastavro gives a datetime)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - EPOCH) // timedelta(microseconds=1)
    return int(value)


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def window_start(ts_us: int, size_us: int) -> int:
    """Start of the tumbling window of ``size_us`` containing ``ts_us`` (epoch-aligned)."""
    return ts_us - ts_us % size_us


def grain_start(ts_us: int, grain: str) -> int:
    """Start of the ``grain`` window containing ``ts_us``: ``date_trunc(grain, ts, 'UTC')``
    (a week starts on Monday, not on the epoch's Thursday)."""
    if grain == "week":
        return ts_us - (ts_us - _WEEK_OFFSET_US) % WEEK_US
    return window_start(ts_us, GRAINS[grain])


def closing_horizon(watermark_us: int, grace_us: int) -> int:
    """Windows ending at or before this (whole minutes) may close: the partition's event
    time has passed their end by the grace period."""
    return window_start(watermark_us - grace_us, MINUTE_US)


def absorb(entry: Entry | None, value: Decimal | None, offset: int) -> Entry:
    """``entry`` with one more record (``value`` None: counted only) from ``offset``."""
    if entry is None:
        entry = Entry(n=0, s=None, lo=None, hi=None, o=-1)
    if value is None:
        return Entry(n=entry["n"] + 1, s=entry["s"], lo=entry["lo"], hi=entry["hi"],
                     o=offset)
    if entry["s"] is None:
        s, lo, hi = value, value, value
    else:
        s = _EXACT.add(Decimal(entry["s"]), value)
        lo = min(Decimal(entry["lo"] or value), value)
        hi = max(Decimal(entry["hi"] or value), value)
    return Entry(n=entry["n"] + 1, s=str(s), lo=str(lo), hi=str(hi), o=offset)


@dataclass
class Verdict:
    """What absorbing one record did: entries changed, and why others were not."""

    changed: list[EntryKey]
    duplicate: bool = False  # every entry had already absorbed this offset
    closed: bool = False  # every window of the record had closed (late, or re-read)


def plan_record(get: Any, partition: int, offset: int, ts_us: int,
                contributions: list[tuple[Dims, Decimal | None]], horizon: int,
                grains: Iterable[str] = tuple(WINDOWS)
                ) -> tuple[list[tuple[EntryKey, Entry]], Verdict]:
    """The entries one record changes in each of ``grains``' windows, given ``get(key) ->
    Entry | None`` (the table) and the partition's closing ``horizon``. Pure: the caller
    writes the entries."""
    updates: dict[EntryKey, Entry] = {}
    open_windows = seen = 0
    for size_name in grains:
        size_us = GRAINS[size_name]
        start = grain_start(ts_us, size_name)
        if start + size_us <= horizon:
            continue  # this window closed: its row is final
        open_windows += 1
        for dims, value in contributions:
            key: EntryKey = (partition, size_name, start, *dims)
            current = updates.get(key) or get(key)
            if current is not None and current["o"] >= offset and key not in updates:
                seen += 1
                continue
            updates[key] = absorb(current, value, offset)
    verdict = Verdict(list(updates), closed=open_windows == 0,
                      duplicate=open_windows > 0 and not updates and seen > 0)
    return list(updates.items()), verdict


def entry_end(key: EntryKey) -> int:
    """End (µs, exclusive) of an entry's window."""
    return int(key[2]) + GRAINS[key[1]]


def is_entry(key: Any) -> bool:
    return isinstance(key, tuple) and len(key) >= 3 and key[1] in GRAINS
