"""Lag arithmetic and Burrow-style status rules (pure: no I/O, unit-tested).

A partition's status over a sliding window of samples:

* ERROR  — its committed offset is outside the log (below log start: records were
           deleted before they were consumed; above log end: the offset is invalid).
* REWIND — the committed offset moved backwards within the window (e.g. a replay).
* STALL  — lag > 0 in every sample and the committed offset has not moved, over a
           window spanning at least ``stall_seconds``.
* WARN   — the offset moves but lag grew from sample to sample over the window.
* OK     — anything else (including a group that is simply idle and caught up).

A group takes the worst status of its partitions.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise

STATUSES = ("OK", "WARN", "REWIND", "STALL", "ERROR")
_RANK = {s: i for i, s in enumerate(STATUSES)}


@dataclass(slots=True)
class Sample:
    """One observation of a partition (not to be changed once made: histories and
    snapshots share it); its lag is worked out once, when it is made. Not frozen: a
    frozen dataclass takes four times as long to make, and a poll makes thousands."""

    at: float  # unix seconds
    committed: int | None  # next offset to consume; None = the group has none
    log_start: int
    log_end: int
    first_unconsumed_ts: float | None = None  # unix seconds of the oldest readable one
    # Records not yet consumed, as Kafka counts them (`kafka-consumer-groups` LAG: log end
    # - committed, so dashboards and Kafka's tools agree); None: no committed offset.
    lag_records: int | None = field(init=False, compare=False)
    # Of those, records deleted by retention before the group read them (committed below
    # the log start): lost to this group, never to be read.
    expired_records: int | None = field(init=False, compare=False)
    # How old the oldest unconsumed record still in the log is (exact, from its
    # timestamp; 0 when none waits, None when its timestamp is unknown).
    lag_seconds: float | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        lag, expired, age, committed = None, None, None, self.committed
        if committed is not None:
            lag = self.log_end - committed
            expired = self.log_start - committed if committed < self.log_start else 0
            if lag <= 0:
                lag, expired, age = 0, 0, 0.0
            elif lag <= expired:  # every unread record expired: none waits
                age = 0.0
            elif self.first_unconsumed_ts is not None:
                age = self.at - self.first_unconsumed_ts
                age = age if age > 0.0 else 0.0
        self.lag_records, self.expired_records, self.lag_seconds = lag, expired, age

    @property
    def out_of_range(self) -> bool:
        return self.committed is not None and (
            self.committed < self.log_start or self.committed > self.log_end)


def worst(statuses: list[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default="OK")


def partition_status(window: list[Sample], stall_seconds: float = 60.0) -> str:
    """The status of one partition from its samples, oldest first."""
    if not window:
        return "OK"
    last = window[-1]
    if last.out_of_range:
        return "ERROR"
    offsets = [s.committed for s in window if s.committed is not None]
    if any(b < a for a, b in pairwise(offsets)):
        return "REWIND"
    lags = [s.lag_records for s in window]
    if len(window) < 2 or len(offsets) < len(window):
        return "OK"
    known = [lag for lag in lags if lag is not None]
    span = last.at - window[0].at
    if span >= stall_seconds and all(lag > 0 for lag in known) and len(set(offsets)) == 1:
        return "STALL"
    if (len(window) >= 3 and len(set(offsets)) > 1
            and all(b >= a for a, b in pairwise(known)) and known[-1] > known[0]):
        return "WARN"
    return "OK"


_UNKNOWN = -(2**63)  # an unknown offset or lag in an int column (None in a Sample)


class PartitionHistory:
    """The newest ``maxlen`` samples of one partition, and its status.

    Stored as columns, ring buffers of machine numbers (at, committed, lag_records,
    lag_seconds: 32 bytes a sample, no Python object each), so an hour of 5,000
    partitions takes ~115 MB, not ~300 MB of objects the garbage collector walks.
    The status rules' state is kept as samples are added: ``status()`` costs O(1) and
    equals ``partition_status(window(seconds), stall_seconds)`` (property-tested), as
    long as the clock does not step back.
    """

    __slots__ = ("_at", "_caught_up_at", "_committed", "_drop_from", "_lag", "_lag_s", "_n",
                 "_prev_lag", "_prev_lag_at", "_prev_off", "_prev_off_at", "_rewind_from",
                 "_run_from", "_unknown_at", "_win", "_win_seconds", "last", "maxlen")

    def __init__(self, maxlen: int = 720) -> None:
        self.maxlen = maxlen
        self.last: Sample | None = None  # the newest sample as added (its log bounds too)
        self._at = array("d")
        self._committed = array("q")
        self._lag = array("q")
        self._lag_s = array("d")  # NaN: unknown
        self._n = 0  # samples ever added; sample i sits in slot i % maxlen while kept
        self._win, self._win_seconds = 0, -1.0  # first sample of the status window
        # The rules' state, as sample numbers (-1: never). Offsets and lags compare with
        # the previous *known* one, as partition_status() does.
        self._prev_off, self._prev_off_at = 0, -1
        self._rewind_from = -1  # a of the newest known offsets a > b (a replay)
        self._unknown_at = -1  # the newest sample without an offset
        self._run_from = -1  # where the newest run of equal known offsets began
        self._prev_lag, self._prev_lag_at = 0, -1
        self._drop_from = -1  # a of the newest known lags a > b
        self._caught_up_at = -1  # the newest sample with lag 0

    def __len__(self) -> int:
        return min(self._n, self.maxlen)

    def add(self, sample: Sample) -> None:
        i, lag, lag_s = self._n, sample.lag_records, sample.lag_seconds
        off = _UNKNOWN if sample.committed is None else sample.committed
        if i < self.maxlen:
            self._at.append(sample.at)
            self._committed.append(off)
            self._lag.append(_UNKNOWN if lag is None else lag)
            self._lag_s.append(math.nan if lag_s is None else lag_s)
        else:
            slot = i % self.maxlen
            self._at[slot] = sample.at
            self._committed[slot] = off
            self._lag[slot] = _UNKNOWN if lag is None else lag
            self._lag_s[slot] = math.nan if lag_s is None else lag_s
        self._n, self.last = i + 1, sample
        if sample.committed is None:
            self._unknown_at = i
        else:
            if self._prev_off_at < 0 or sample.committed != self._prev_off:
                self._run_from = i
            if self._prev_off_at >= 0 and sample.committed < self._prev_off:
                self._rewind_from = self._prev_off_at
            self._prev_off, self._prev_off_at = sample.committed, i
        if lag is not None:
            if self._prev_lag_at >= 0 and lag < self._prev_lag:
                self._drop_from = self._prev_lag_at
            if lag == 0:
                self._caught_up_at = i
            self._prev_lag, self._prev_lag_at = lag, i

    def _window_start(self, seconds: float) -> int:
        """The number of the window's first sample: the newest one more than ``seconds``
        older than the newest sample, or the oldest kept (see window())."""
        n, m = self._n, self.maxlen
        newest, oldest = n - 1, (n - m if n > m else 0)
        if seconds != self._win_seconds:  # slides forward from here on
            self._win, self._win_seconds = oldest, seconds
        start, newest_at = (self._win if self._win > oldest else oldest), self._at[newest % m]
        while start < newest and newest_at - self._at[(start + 1) % m] > seconds:
            start += 1
        self._win = start
        return start

    def status(self, seconds: float, stall_seconds: float = 60.0) -> str:
        """partition_status() of the window of the last ``seconds``, in O(1)."""
        if self.last is None:
            return "OK"
        if self.last.out_of_range:
            return "ERROR"
        start, newest = self._window_start(seconds), self._n - 1
        if self._rewind_from >= start:
            return "REWIND"
        if newest - start < 1 or self._unknown_at >= start:
            return "OK"
        all_same = self._run_from <= start
        first = start % self.maxlen
        if (self.last.at - self._at[first] >= stall_seconds and all_same
                and self._caught_up_at < start):
            return "STALL"
        if (newest - start >= 2 and not all_same and self._drop_from < start
                and self._lag[newest % self.maxlen] > self._lag[first]):
            return "WARN"
        return "OK"

    def _rows(self, start: int) -> Iterator[tuple[float, int, int, float]]:
        """Samples number ``start`` … newest as stored (start must still be kept)."""
        m, n = self.maxlen, self._n
        a, b = start % m, n % m if n > m else n
        for lo, hi in ((a, b),) if a < b or n - start == 0 else ((a, m), (0, b)):
            yield from zip(self._at[lo:hi], self._committed[lo:hi], self._lag[lo:hi],
                           self._lag_s[lo:hi], strict=True)

    def points(self) -> list[list[float | int | None]]:
        """[at (ms), lag_records, lag_seconds, committed] of each kept sample, oldest
        first (None where unknown): the series /api/history serves."""
        return [[round(at, 3), None if lag == _UNKNOWN else lag,
                 None if lag_s != lag_s else lag_s, None if off == _UNKNOWN else off]
                for at, off, lag, lag_s in self._rows(max(0, self._n - self.maxlen))]

    def window(self, seconds: float) -> list[Sample]:
        """The samples of the last ``seconds``, plus the one just before, so the window
        spans the whole period even when samples are sparse. Rebuilt from the columns:
        at, committed, lag_records and lag_seconds as stored; the newest as added."""
        if self.last is None:
            return []
        start = self._window_start(seconds)
        out = []
        for at, off, lag, lag_s in self._rows(start):
            committed = None if off == _UNKNOWN else off
            base = committed or 0
            ts = None if lag_s != lag_s else at - lag_s
            out.append(Sample(at, committed, base, base + max(lag, 0), ts))
        out[-1] = self.last
        return out
