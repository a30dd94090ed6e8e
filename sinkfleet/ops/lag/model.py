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

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

STATUSES = ("OK", "WARN", "REWIND", "STALL", "ERROR")
_RANK = {s: i for i, s in enumerate(STATUSES)}


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of a partition."""

    at: float  # unix seconds
    committed: int | None  # next offset to consume; None = the group has none
    log_start: int
    log_end: int
    first_unconsumed_ts: float | None = None  # unix seconds of the record at `committed`

    @property
    def lag_records(self) -> int | None:
        if self.committed is None:
            return None
        return max(0, self.log_end - max(self.committed, self.log_start))

    @property
    def lag_seconds(self) -> float | None:
        """How old the oldest unconsumed record is (exact, from its timestamp)."""
        lag = self.lag_records
        if lag is None:
            return None
        if lag == 0:
            return 0.0
        if self.first_unconsumed_ts is None:
            return None
        return max(0.0, self.at - self.first_unconsumed_ts)

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


@dataclass
class PartitionHistory:
    """Samples of one partition, bounded; the window for status is the newest ones."""

    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=720))

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def window(self, seconds: float) -> list[Sample]:
        """The samples of the last ``seconds``, plus the one just before, so the window
        spans the whole period even when samples are sparse."""
        if not self.samples:
            return []
        newest = self.samples[-1].at
        window: list[Sample] = []
        for sample in reversed(self.samples):  # newest first: stop one past the window
            window.append(sample)
            if newest - sample.at > seconds:
                break
        window.reverse()
        return window
