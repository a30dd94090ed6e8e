"""The same-version conflict rule (pure): order-independent, identical is no conflict."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime

from sinkfleet.sink.changes import row_json
from sinkfleet.sink.state_conflicts import (
    NO_TIME,
    Content,
    as_time,
    content_hash,
    millis,
    rank_text,
    resolve,
)


def content(status: str, ms: int | None, offset: int) -> Content:
    return Content.of({"id": "a", "version": 2, "status": status, "detail": '{"b": 1, "a": 2}'},
                      frozenset({"detail"}), ms, ("topic", 0, offset))


def test_hash_is_sha256_of_the_canonical_row_json() -> None:
    row = {"id": "a", "version": 2, "detail": '{"b":1,  "a":2}'}
    assert row_json(row, frozenset({"detail"})) == '{"detail":{"a":2,"b":1},"id":"a","version":2}'
    assert content_hash(row, frozenset({"detail"})) == hashlib.sha256(
        b'{"detail":{"a":2,"b":1},"id":"a","version":2}').digest()


def test_later_timestamp_wins_then_greater_hash() -> None:
    early, late = content("x", 1000, 1), content("y", 2000, 2)
    assert resolve([early, late]) == (late, [early])
    a, b = content("x", 1000, 1), content("y", 1000, 2)
    high, low = (a, b) if a.digest > b.digest else (b, a)
    assert resolve([a, b]) == (high, [low])
    assert resolve([b, a]) == (high, [low])


def test_identical_content_is_one_candidate_with_its_latest_timestamp() -> None:
    first, again = content("x", 1000, 1), content("x", 5000, 9)
    winner, losers = resolve([first, again])
    assert losers == []
    assert (winner.produced_ms, winner.source) == (5000, ("topic", 0, 1))  # first seen


def test_every_delivery_order_gives_the_same_winner_and_losers() -> None:
    deliveries = [content("x", 5, 1), content("y", 7, 2), content("x", 10, 3),
                  content("z", 7, 4), content("y", None, 5)]
    outcomes = set()
    for order in itertools.permutations(deliveries):
        winner, losers = resolve(order)
        outcomes.add((winner.row["status"], winner.produced_ms,
                      tuple(sorted((c.row["status"], c.produced_ms) for c in losers))))
    assert outcomes == {("x", 10, (("y", 7), ("z", 7)))}


def test_resolving_in_steps_equals_resolving_at_once() -> None:
    """The writer resolves a batch, then against the stored winner: same result."""
    deliveries = [content("x", 5, 1), content("y", 7, 2), content("z", 7, 3)]
    for split in range(1, 3):
        first, _ = resolve(deliveries[:split])
        stored = Content(first.row, first.digest, first.produced_ms, first.source, True)
        winner, _ = resolve([stored, *deliveries[split:]])
        assert winner.digest == resolve(deliveries)[0].digest


def test_missing_timestamp_ranks_lowest_and_ranks_sort_as_text() -> None:
    none, zero = content("x", None, 1), content("y", 0, 2)
    assert none.produced_ms == NO_TIME and resolve([none, zero])[0] is zero
    assert rank_text(NO_TIME, b"\xff") < rank_text(0, b"\x00") < rank_text(10, b"\x00")
    assert rank_text(9, b"\xff") < rank_text(10, b"\x00")
    when = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)
    assert as_time(millis(when)) == when and as_time(NO_TIME) is None and millis(None) == NO_TIME
