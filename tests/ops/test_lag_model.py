"""Burrow-style status rules and lag arithmetic (pure)."""

from __future__ import annotations

import pytest

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


def test_committed_below_log_start_counts_from_the_log_start() -> None:
    sample = s(1000.0, 5, 100, start=50)
    assert sample.lag_records == 50
    assert sample.out_of_range
    assert partition_status([sample]) == "ERROR"


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
    assert len(hist.samples) == 720
    # The last 5 s, plus the sample just before them so the window spans all 5 s.
    assert [x.at for x in hist.window(5)] == [993.0, 994.0, 995.0, 996.0, 997.0, 998.0, 999.0]
    sparse = PartitionHistory()
    for t in (0.0, 10.0):
        sparse.add(s(t, 1, 2))
    assert [x.at for x in sparse.window(5)] == [0.0, 10.0]


def test_scraped_lag_seconds_keep_ageing_between_polls() -> None:
    from sinkfleet.ops.lag.exporter import _age_now

    waiting = s(110.0, 10, 20, ts=100.0)  # polled at 110: 10 s old
    assert waiting.lag_seconds == 10.0
    assert _age_now(waiting, now=125.0) == 25.0  # a scrape at 125 sees 25 s, not 10
    assert _age_now(s(110.0, 20, 20, ts=None), now=125.0) == 0.0  # caught up stays 0
