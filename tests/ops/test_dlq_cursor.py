"""The replay cursor (pure): a filtered replay neither re-sends nor passes over anything."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinkfleet.ops.deadletters import cursor as dlq_cursor
from sinkfleet.ops.deadletters.cursor import ReplayCursor, format_ranges, parse_ranges


def run(start: int, meta: str, kinds: list[str], wanted: set[str], *, stop: int | None = None
        ) -> tuple[list[int], tuple[int, str], ReplayCursor]:
    """One replay over a partition whose record at offset i is of kind ``kinds[i]``."""
    cursor = ReplayCursor(start, parse_ranges(meta))
    sent = []
    for offset in range(start, len(kinds) if stop is None else stop):
        if cursor.is_done(offset):
            cursor.mark(offset, done=True)
        elif kinds[offset] in wanted and cursor.can_add(offset):
            sent.append(offset)
            cursor.mark(offset, done=True)
        else:
            cursor.mark(offset, done=False)
    if stop is None:
        cursor.finish(len(kinds))
    return sent, cursor.snapshot(), cursor


def test_ranges_round_trip_and_refuse_garbage() -> None:
    assert parse_ranges("") == []
    assert parse_ranges("20,12-15") == [(12, 15), (20, 20)]
    assert format_ranges([(12, 15), (20, 20)]) == "12-15,20"
    for bad in ("x", "5-3", "-1", "1-2-3"):
        with pytest.raises(ValueError):
            parse_ranges(bad)


def test_unfiltered_replay_moves_the_offset_to_the_end() -> None:
    sent, snap, _ = run(0, "", ["d"] * 5, {"d", "v"})
    assert sent == [0, 1, 2, 3, 4] and snap == (5, "")


def test_filtered_replays_remember_what_they_left_and_what_they_sent() -> None:
    kinds = ["d", "v", "d", "d", "v", "d"]
    sent, snap, _ = run(0, "", kinds, {"d"})
    assert sent == [0, 2, 3, 5] and snap == (1, "2-3,5")
    sent, snap2, _ = run(*snap, kinds, {"d"})  # the same filter again: nothing new
    assert sent == [] and snap2 == snap
    sent, snap3, _ = run(*snap, kinds, {"v"})  # the complementary filter fills the gaps
    assert sent == [1, 4] and snap3 == (6, "")


def test_a_commit_mid_scan_keeps_earlier_replays_not_read_again_yet() -> None:
    kinds = ["v", "d", "d", "v", "d", "d", "v", "d"]
    _, snap, _ = run(0, "", kinds, {"d"})
    assert snap == (0, "1-2,4-5,7")
    sent, mid, _ = run(*snap, kinds, {"v"}, stop=2)  # crash after reading offsets 0, 1
    assert sent == [0] and mid == (3, "4-5,7")
    sent, end, _ = run(*mid, kinds, {"v"})
    assert sent == [3, 6] and end == (8, "")


def test_the_metadata_stays_within_kafkas_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlq_cursor, "METADATA_LIMIT", 20)
    kinds = ["v", "d"] * 30
    sent, (offset, meta), cursor = run(0, "", kinds, {"d"})
    assert cursor.full and len(meta) <= 20 and offset == 0
    assert sent == [int(x) for x in meta.split(",")]
    again, (offset2, meta2), _ = run(offset, meta, kinds, {"d"})
    assert again == [] and (offset2, meta2) == (offset, meta)
    rest, final, _ = run(offset, meta, kinds, {"d", "v"})  # unfiltered: everything, once
    assert sorted(rest + sent) == list(range(60)) and final == (60, "")


def test_metadata_exactly_at_the_limit_still_lets_the_next_run_replay_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by the property below: the metadata "7-8,10-11,13" is exactly 12 characters;
    # an unfiltered run from offset 6 counted one comma too many ahead of it and left 6.
    monkeypatch.setattr(dlq_cursor, "METADATA_LIMIT", 12)
    kinds = list("ddddddvddvddvd")
    sent, snap, _ = run(0, "", kinds, {"d"})
    assert snap == (6, "7-8,10-11,13")
    rest, final, _ = run(*snap, kinds, {"d", "v"})
    assert sorted(sent + rest) == list(range(14)) and final == (14, "")


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(st.sampled_from("dvw"), min_size=1, max_size=60),
       runs=st.lists(st.tuples(st.sets(st.sampled_from("dvw")), st.integers(0, 70)),
                     max_size=8),
       limit=st.sampled_from([12, 40, 3000]))
def test_any_sequence_of_replays_sends_each_dead_letter_at_most_once(
        kinds: list[str], runs: list[tuple[set[str], int]], limit: int) -> None:
    old = dlq_cursor.METADATA_LIMIT
    dlq_cursor.METADATA_LIMIT = limit
    try:
        snap: tuple[int, str] = (0, "")
        sent: list[int] = []
        for wanted, crash_at in runs:  # some runs "crash" after a mid-scan commit
            stop = crash_at if crash_at < len(kinds) and crash_at >= snap[0] else None
            new, snap, _ = run(*snap, kinds, wanted, stop=stop)
            assert all(kinds[o] in wanted for o in new)
            sent += new
            assert len(snap[1]) <= limit
        assert len(sent) == len(set(sent))
        new, snap, _ = run(*snap, kinds, {"d", "v", "w"})  # unfiltered: the rest, once
        assert sorted(sent + new) == list(range(len(kinds))) and snap == (len(kinds), "")
    finally:
        dlq_cursor.METADATA_LIMIT = old
