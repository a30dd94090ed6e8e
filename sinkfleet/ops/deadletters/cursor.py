"""Replay progress of one dead-letter partition, kept as a Kafka commit (pure, no I/O).

The committed offset is the first dead letter not replayed yet; the commit's metadata
lists the offsets above it that were replayed, as inclusive ranges (``12-15,20``). So
a filtered replay (``--stage decode``, say) neither re-sends what an earlier run
replayed nor passes over the dead letters it left for a later run. Kafka refuses
metadata longer than ``offset.metadata.max.bytes`` (4096 by default): a replay stops
adding ranges at ``METADATA_LIMIT`` characters and says so (``full``).
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

METADATA_LIMIT = 3000

Range = tuple[int, int]  # inclusive


def _fmt(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


def format_ranges(ranges: list[list[int]] | list[Range]) -> str:
    return ",".join(_fmt(a, b) for a, b in ranges)


def parse_ranges(text: str) -> list[Range]:
    """``"12-15,20"`` → ``[(12, 15), (20, 20)]``; raises ValueError on anything else."""
    ranges: list[Range] = []
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        a, b = int(first), int(last or first)
        if a < 0 or b < a:
            raise ValueError(f"bad range {part!r}")
        ranges.append((a, b))
    return sorted(ranges)


class ReplayCursor:
    """Walks one partition's dead letters in offset order, from ``start``.

    ``mark(offset, done=...)`` records each one (replayed now or before: done; left
    for later: not done); ``offset`` and ``metadata`` are what to commit at any time.
    """

    def __init__(self, start: int, done: list[Range]) -> None:
        self.start = start
        self._done = [r for r in sorted(done) if r[1] >= start]  # replayed before
        self._starts = [a for a, _ in self._done]
        sizes = [len(_fmt(a, b)) + 1 for a, b in self._done]
        self._suffix = [*reversed(list(accumulate(reversed(sizes)))), 0]  # chars of _done[i:]
        self.first_pending: int | None = None  # first dead letter seen and left
        self.runs: list[list[int]] = []  # replayed ranges after first_pending
        self._len = 0  # len(format_ranges(self.runs))
        self._prev_done = False
        self._next = start  # the next offset to look at
        self.full = False

    def is_done(self, offset: int) -> bool:
        """Whether an earlier run replayed ``offset``."""
        i = bisect_right(self._starts, offset) - 1
        return i >= 0 and self._done[i][1] >= offset

    def _cost(self, offset: int) -> int:
        if self.first_pending is None:
            return 0  # joins the replayed prefix: below the committed offset
        if self._prev_done and self.runs:
            a, b = self.runs[-1]
            return len(_fmt(a, offset)) - len(_fmt(a, b))
        return len(str(offset)) + (1 if self.runs else 0)

    def can_add(self, offset: int) -> bool:
        """Whether replaying ``offset`` keeps the metadata within the limit, counting the
        earlier replays above it that are still to be read."""
        ahead = self._suffix[bisect_right(self._starts, offset)]  # a comma before each
        before = self._len + self._cost(offset)
        if ahead and not before:
            ahead -= 1  # nothing before them: the first one needs no comma
        ok = before + ahead <= METADATA_LIMIT
        self.full = self.full or not ok
        return ok

    def mark(self, offset: int, *, done: bool) -> None:
        if not done:
            if self.first_pending is None:
                self.first_pending = offset
        elif self.first_pending is not None:
            self._len += self._cost(offset)
            if self._prev_done and self.runs:
                self.runs[-1][1] = offset
            else:
                self.runs.append([offset, offset])
        self._prev_done = done
        self._next = offset + 1

    def finish(self, end: int) -> None:
        """The partition was read up to ``end`` (exclusive)."""
        self._next = max(self._next, end)

    def snapshot(self) -> tuple[int, str]:
        """(offset, metadata) to commit: what was seen so far, plus earlier replays
        not read again yet."""
        offset = self.first_pending if self.first_pending is not None else self._next
        runs = [list(r) for r in self.runs]
        for a, b in self._done:
            if b < self._next:
                continue
            a = max(a, self._next)
            if self.first_pending is None and a <= offset:
                offset = max(offset, b + 1)
            elif runs and runs[-1][1] + 1 >= a:
                runs[-1][1] = max(runs[-1][1], b)
            else:
                runs.append([a, b])
        return offset, format_ranges(runs)
