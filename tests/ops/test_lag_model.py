"""Burrow-style status rules and lag arithmetic (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinkfleet.ops.lag.model import PartitionHistory, Sample, partition_status, worst


def s(at: float, committed: int | None, end: int, start: int = 0,
      ts: float | None = None) -> Sample:
    return Sample(at, committed, start, end, ts)


def test_lag_in_records_and_seconds() -> None:
    sample = s(1000.0, 40, 100, ts=990.5)
    assert sample.lag_records == 60
    assert sample.lag_seconds == pytest.approx(9.5)
    assert s(1000.0, 100, 100).lag_seconds == 0.0  # caught up: no age to report


def test_missing_offsets_are_unknown_not_zero() -> None:
    sample = s(1000.0, None, 100)
    assert sample.lag_records is None and sample.lag_seconds is None
    assert s(1000.0, 10, 100, ts=None).lag_seconds is None  # timestamp not fetched


def test_committed_below_log_start_is_lag_as_kafka_counts_it_plus_expired() -> None:
    """`kafka-consumer-groups --describe` says LAG = log end - committed (95 here), so
    dashboards and Kafka's own tools agree; the 45 records deleted by retention before
    the group read them are their own figure."""
    sample = s(1000.0, 5, 100, start=50, ts=990.0)
    assert sample.lag_records == 95
    assert sample.expired_records == 45
    assert sample.lag_seconds == pytest.approx(10.0)  # the oldest record still readable
    assert sample.out_of_range
    assert partition_status([sample]) == "ERROR"


def test_expired_is_zero_when_nothing_was_lost_and_unknown_without_a_commit() -> None:
    assert s(1000.0, 50, 100, start=50).expired_records == 0
    assert s(1000.0, 70, 100, start=50).expired_records == 0
    assert s(1000.0, None, 100, start=50).expired_records is None


def test_everything_expired_lags_without_an_age() -> None:
    """All unread records were deleted: Kafka's lag is 40, but no record waits, so its
    age is 0, not unknown."""
    sample = s(1000.0, 60, 100, start=100)
    assert (sample.lag_records, sample.expired_records, sample.lag_seconds) == (40, 40, 0.0)


def test_caught_up_and_idle_is_ok() -> None:
    assert partition_status([s(t, 100, 100) for t in range(0, 300, 10)]) == "OK"


def test_stall_needs_lag_and_a_still_offset_over_the_whole_window() -> None:
    stalled = [s(t, 50, 100) for t in range(0, 70, 10)]
    assert partition_status(stalled, stall_seconds=60) == "STALL"
    assert partition_status(stalled[:3], stall_seconds=60) == "OK"  # too short to judge
    moving = [s(t, 50 + t, 100 + t) for t in range(0, 70, 10)]
    assert partition_status(moving, stall_seconds=60) == "OK"


def test_rewind_when_the_offset_goes_back() -> None:
    window = [s(0, 90, 100), s(10, 95, 100), s(20, 0, 100)]
    assert partition_status(window) == "REWIND"


def test_warn_when_lag_keeps_growing_while_consuming() -> None:
    window = [s(0, 10, 20), s(10, 15, 40), s(20, 20, 70)]
    assert partition_status(window) == "WARN"
    shrinking = [s(0, 10, 70), s(10, 40, 75), s(20, 70, 80)]
    assert partition_status(shrinking) == "OK"


def test_group_takes_the_worst_status() -> None:
    assert worst(["OK", "WARN", "STALL", "REWIND"]) == "STALL"
    assert worst(["OK", "ERROR", "STALL"]) == "ERROR"
    assert worst([]) == "OK"


def test_history_window_and_bound() -> None:
    hist = PartitionHistory()
    for t in range(1000):
        hist.add(s(float(t), t, t))
    assert len(hist) == 720
    # The last 5 s, plus the sample just before them so the window spans all 5 s.
    assert [x.at for x in hist.window(5)] == [993.0, 994.0, 995.0, 996.0, 997.0, 998.0, 999.0]
    sparse = PartitionHistory()
    for t in (0.0, 10.0):
        sparse.add(s(t, 1, 2))
    assert [x.at for x in sparse.window(5)] == [0.0, 10.0]


def test_scraped_lag_seconds_keep_ageing_between_polls() -> None:
    from sinkfleet.ops.lag.metrics import age_now

    waiting = s(110.0, 10, 20, ts=100.0)  # polled at 110: 10 s old
    assert waiting.lag_seconds == 10.0
    assert age_now(waiting, now=125.0) == 25.0  # a scrape at 125 sees 25 s, not 10
    assert age_now(s(110.0, 20, 20, ts=None), now=125.0) == 0.0  # caught up stays 0


def test_history_points_are_the_samples_oldest_first_across_the_ring() -> None:
    hist = PartitionHistory(maxlen=4)
    added = [s(1000.0 + t + 0.0004, None if t == 4 else t, 10 + t, ts=990.0)
             for t in range(7)]
    for sample in added:
        hist.add(sample)
    assert hist.points() == [[round(x.at, 3), x.lag_records, x.lag_seconds, x.committed]
                             for x in added[-4:]]
    assert hist.points()[0] == [1003.0, 10, pytest.approx(13.0004), 3]
    assert hist.points()[1][1:] == [None, None, None]  # unknown stays unknown, not 0
    assert PartitionHistory().points() == []


# Histories that exercise every rule: offsets that stall, move, go back or go missing,
# lag that grows, falls or is 0, samples dense and sparse, rings that wrap.
_steps = st.lists(st.tuples(
    st.sampled_from([0.5, 1.0, 5.0, 20.0]),  # seconds since the previous sample
    st.one_of(st.none(), st.integers(-3, 6)),  # offset move (None: no offset)
    st.integers(0, 8),  # records produced
    st.booleans()), min_size=1, max_size=60)  # the log start jumps past the offset


@settings(max_examples=400, deadline=None)
@given(_steps, st.sampled_from([3, 8, 720]), st.sampled_from([1.0, 10.0, 30.0]),
       st.sampled_from([2.0, 10.0, 60.0]))
def test_history_status_equals_the_rules_over_the_window(
        steps: list[tuple[float, int | None, int, bool]], maxlen: int, stall: float,
        window: float) -> None:
    hist, kept = PartitionHistory(maxlen=maxlen), []
    at, offset, end = 1000.0, 50, 60
    for gap, move, produced, truncated in steps:
        at, end = at + gap, end + produced
        offset = max(0, offset + (move or 0))
        sample = Sample(at, None if move is None else offset, offset + 1 if truncated else 0,
                        end, at - 3.0)
        hist.add(sample)
        kept = [*kept, sample][-maxlen:]
        expected = partition_status(_window(kept, window), stall)
        assert hist.status(window, stall) == expected
    assert [x.at for x in hist.window(window)] == [x.at for x in _window(kept, window)]
    assert len(hist) == len(kept)
    assert all(math.isclose(p[0], round(x.at, 3)) for p, x in zip(hist.points(), kept,
                                                                  strict=True))


def _window(samples: list[Sample], seconds: float) -> list[Sample]:
    """The reference window: newest first until one past ``seconds``."""
    out: list[Sample] = []
    for sample in reversed(samples):
        out.append(sample)
        if samples[-1].at - sample.at > seconds:
            break
    return out[::-1]
