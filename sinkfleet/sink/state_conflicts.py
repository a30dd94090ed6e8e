"""Same-version conflicts of state sinks: which content wins (pure, no I/O).

Two updates of one id with the same version but different content are a conflict.
The winner is the content with the greatest rank ``(produced_ms, content_hash)``:
the later producer timestamp (the Kafka record's timestamp; a content delivered
several times counts with its latest one), then the greater SHA-256 of the content.
The rank is a function of the set of deliveries, never of their order, so every
delivery order and every replay converges to the same row. An identical content
delivered again is not a conflict.

>>> a = Content.of({"id": 1, "v": 2, "s": "a"}, frozenset(), 5, ("t", 0, 7))
>>> b = Content.of({"id": 1, "v": 2, "s": "b"}, frozenset(), 9, ("t", 0, 8))
>>> resolve([a, b])[0] is b and resolve([b, a])[0] is b
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sinkfleet.sink.changes import row_json

NO_TIME = -1  # a record without a timestamp (or a history row from before ranks)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def content_hash(row: dict[str, Any], jsonb: frozenset[str] = frozenset()) -> bytes:
    """SHA-256 of the row's canonical JSON (the cache's row JSON: sorted keys, jsonb
    embedded): a decoded row and the same row read back from PostgreSQL hash alike."""
    return hashlib.sha256(row_json(row, jsonb).encode()).digest()


def millis(ts: datetime | None) -> int:
    """A stored ``produced_at`` as Kafka timestamp milliseconds (None: NO_TIME)."""
    if ts is None:
        return NO_TIME
    return (ts - _EPOCH) // _ONE_MS



def as_time(ms: int) -> datetime | None:
    """Kafka timestamp milliseconds as ``produced_at`` (NO_TIME or less: None)."""
    return None if ms <= NO_TIME else _EPOCH + ms * _ONE_MS


def rank_text(produced_ms: int, digest: bytes) -> str:
    """The rank as a string that sorts like the rank (for the Redis compare-and-set)."""
    return f"{max(produced_ms, NO_TIME) + 1:016d}{digest.hex()}"


@dataclass(frozen=True)
class Content:
    """One distinct content of an (id, version): the row, its hash, its latest producer
    timestamp and where it was first seen (topic, partition, offset)."""

    row: dict[str, Any]
    digest: bytes
    produced_ms: int
    source: tuple[str, int, int]
    stored: bool = False  # read from the history (the current winner)

    @classmethod
    def of(cls, row: dict[str, Any], jsonb: frozenset[str], produced_ms: int | None,
           source: tuple[str, int, int], *, digest: bytes | None = None,
           stored: bool = False) -> Content:
        ms = NO_TIME if produced_ms is None or produced_ms < 0 else produced_ms
        return cls(row, digest or content_hash(row, jsonb), ms, source, stored)

    @property
    def rank(self) -> tuple[int, bytes]:
        return (self.produced_ms, self.digest)


def merge(contents: Iterable[Content]) -> list[Content]:
    """One entry per distinct content (first seen kept, with the latest timestamp)."""
    by_hash: dict[bytes, Content] = {}
    for c in contents:
        seen = by_hash.get(c.digest)
        if seen is None:
            by_hash[c.digest] = c
        else:
            keep = c if c.stored and not seen.stored else seen
            by_hash[c.digest] = replace(keep, produced_ms=max(c.produced_ms,
                                                              seen.produced_ms))
    return list(by_hash.values())


def resolve(contents: Iterable[Content]) -> tuple[Content, list[Content]]:
    """(winner, losers) among the contents of one (id, version)."""
    merged = merge(contents)
    winner = max(merged, key=lambda c: c.rank)
    return winner, [c for c in merged if c is not winner]
