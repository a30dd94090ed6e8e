"""The scale-advice formula and the arithmetic of its inputs (pure)."""

from __future__ import annotations

import pytest

from sinkfleet.errors import ConfigError
from sinkfleet.ops.fleet.advice import metrics_url
from sinkfleet.ops.fleet.scaling import (
    backlog,
    cap_at_current,
    consumed_total,
    counter_increase,
    rate,
    workers_needed,
)


def test_ingress_alone() -> None:
    # 3,000/s arriving, 1,000/s per worker planned at 80 %: 3000 / 800 = 3.75 → 4
    a = workers_needed(ingress=3000, lag=0, per_worker_rate=1000, partitions=12)
    assert (a.workers, a.uncapped, a.demand, a.planned_per_worker) == (4, 4, 3000, 800)
    assert not a.capped and a.notes == ()


def test_lag_adds_lag_over_drain_seconds() -> None:
    # 1,000/s + 600,000 records / 300 s = 3,000/s; / 800 = 3.75 → 4
    a = workers_needed(ingress=1000, lag=600_000, per_worker_rate=1000, partitions=12)
    assert a.demand == 3000 and a.workers == 4
    b = workers_needed(ingress=1000, lag=600_000, per_worker_rate=1000, partitions=12,
                       drain_seconds=60)
    assert (b.demand, b.uncapped, b.workers, b.capped) == (11_000, 14, 12, True)


def test_exact_multiples_do_not_round_up_on_float_noise() -> None:
    # 2400 / (1000 * 0.8) is 2.9999999999999996 or 3.0000000000000004 depending on order
    assert workers_needed(ingress=2400, lag=0, per_worker_rate=1000, partitions=9).workers == 3
    assert workers_needed(ingress=0.1 + 0.2, lag=0, per_worker_rate=0.3, partitions=9,
                          headroom=1).workers == 1


def test_headroom() -> None:
    assert workers_needed(ingress=1000, lag=0, per_worker_rate=1000, partitions=6,
                          headroom=1).workers == 1
    assert workers_needed(ingress=1000, lag=0, per_worker_rate=1000, partitions=6,
                          headroom=0.5).workers == 2


def test_clamped_to_partitions_with_a_note() -> None:
    a = workers_needed(ingress=100_000, lag=0, per_worker_rate=1000, partitions=6)
    assert (a.workers, a.uncapped, a.capped) == (6, 125, True)
    assert "capped at 6 partitions: 125 workers would be needed" in a.notes[0]
    assert "cannot keep up with 100,000 records/s" in a.notes[1]


def test_capped_but_draining_says_how_long() -> None:
    # 6 workers * 800 = 4,800/s planned, 1,800/s arriving: 3,000/s spare for 1.5M records
    a = workers_needed(ingress=1800, lag=1_500_000, per_worker_rate=1000, partitions=6,
                       drain_seconds=300)
    assert a.capped and a.workers == 6
    assert "the lag clears in about 500s instead of 300s" in a.notes[1]


def test_at_least_one_worker() -> None:
    a = workers_needed(ingress=0, lag=0, per_worker_rate=1000, partitions=6)
    assert (a.workers, a.uncapped) == (1, 0)
    assert "minimum of 1 worker" in a.notes[0]
    assert workers_needed(ingress=1, lag=0, per_worker_rate=1e6, partitions=6).workers == 1
    # no demand: an unknown (zero) per-worker rate does not matter
    assert workers_needed(ingress=0, lag=0, per_worker_rate=0, partitions=6).workers == 1


@pytest.mark.parametrize("kwargs", [
    {"per_worker_rate": 0}, {"per_worker_rate": -5}, {"partitions": 0},
    {"drain_seconds": 0}, {"headroom": 0}, {"headroom": 1.5}, {"ingress": -1}, {"lag": -1},
])
def test_bad_inputs_are_config_errors(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"ingress": 10, "lag": 0, "per_worker_rate": 100,
                              "partitions": 6, **kwargs}
    with pytest.raises(ConfigError):
        workers_needed(**args)  # type: ignore[arg-type]


def test_workers_that_kept_up_cap_the_advice_at_their_count() -> None:
    # 2 workers kept up with 1,000/s: measured 500/s each, the formula says 3
    a = workers_needed(ingress=1000, lag=0, per_worker_rate=500, partitions=6)
    assert a.workers == 3
    capped = cap_at_current(a, 2, 500)
    assert capped.workers == 2 and capped.uncapped == 3
    assert "the 2 worker(s) kept up during the window" in capped.notes[-1]
    assert cap_at_current(a, 4, 500) is a  # never raises the advice
    assert cap_at_current(a, 0, 500) is a


def test_rate_ignores_partitions_new_in_the_second_sample() -> None:
    assert rate({"a": 100, "b": 0}, {"a": 600, "b": 500, "c": 900}, 10) == 100
    assert rate({"a": 100}, {"a": 50}, 1) == 0  # never negative
    with pytest.raises(ValueError):
        rate({}, {}, 0)


def test_backlog_counts_from_the_group_position_or_the_log_start() -> None:
    ends = {0: 1000, 1: 1000, 2: 1000, 3: 1000}
    starts = {0: 0, 1: 0, 2: 400, 3: 0}
    stored = {0: 900, 2: 100, 3: 1200}
    # p0: 100 waiting; p1: no position, from the log start: 1000; p2: its position was
    # deleted by retention, from the log start: 600; p3: ahead of the end: 0
    assert backlog(ends, starts, stored) == 1700


def test_counter_increase_survives_a_restart() -> None:
    assert counter_increase(100, 250) == 150
    assert counter_increase(1000, 40) == 40


METRICS = """\
# HELP sinkfleet_records_consumed_total Records consumed
# TYPE sinkfleet_records_consumed_total counter
sinkfleet_records_consumed_total{group="g1",topic="a"} 1200.0
sinkfleet_records_consumed_total{group="g1",topic="b"} 300.0
sinkfleet_records_consumed_total{group="g2",topic="a"} 7.0
# HELP sinkfleet_assigned_partitions Partitions assigned
# TYPE sinkfleet_assigned_partitions gauge
sinkfleet_assigned_partitions{group="g3"} 2.0
"""


def test_consumed_total_per_group() -> None:
    assert consumed_total(METRICS, "g1") == 1500
    assert consumed_total(METRICS, "g3") == 0  # a worker of g3 that consumed nothing yet
    assert consumed_total(METRICS, "other") is None  # not a worker of that group


@pytest.mark.parametrize("given, url", [
    ("127.0.0.1:9301", "http://127.0.0.1:9301/metrics"),
    ("http://h:9301/", "http://h:9301/metrics"),
    ("http://h:9301/custom", "http://h:9301/custom"),
])
def test_metrics_url(given: str, url: str) -> None:
    assert metrics_url(given) == url
