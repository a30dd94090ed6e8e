import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.sink.postgres.ddl import (
    create_table_sql,
    derived_name,
    partition_plan,
    quote_ident,
)

ROOT = Path(__file__).resolve().parents[2]


def test_daily_plan_covers_history_and_premake() -> None:
    now = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)
    plan = partition_plan("day", now, history=2, premake=3)
    assert [p[0] for p in plan] == ["p20260227", "p20260228", "p20260301", "p20260302",
                                    "p20260303", "p20260304"]
    for (_, _, end), (_, start, _) in itertools.pairwise(plan):
        assert end == start  # contiguous, no gaps or overlaps


def test_monthly_plan_rolls_over_years() -> None:
    plan = partition_plan("month", datetime(2026, 12, 5, tzinfo=UTC), history=1, premake=1)
    assert [(p[1].month, p[2].month) for p in plan] == [(11, 12), (12, 1), (1, 2)]
    assert plan[-1][2].year == 2027


def test_hourly_and_weekly_bounds() -> None:
    now = datetime(2026, 11, 25, 13, 59, tzinfo=UTC)  # a Wednesday
    assert partition_plan("hour", now, 0, 0)[0][1] == datetime(2026, 11, 25, 13, tzinfo=UTC)
    assert partition_plan("week", now, 0, 0)[0][1] == datetime(2026, 11, 23, tzinfo=UTC)


def test_identifiers_are_quoted_and_checked() -> None:
    assert quote_ident("events") == '"events"'
    with pytest.raises(ValueError):
        quote_ident('x"; drop table y; --')
    long = derived_name("a" * 40, "b" * 40)
    assert len(long) <= 63 and long != derived_name("a" * 40, "c" * 40)


def test_table_ddl_is_partitioned_with_composite_key() -> None:
    sql = create_table_sql(load_catalogue(ROOT).sinks["experience_events"])
    assert 'PRIMARY KEY ("event_id", "ts")' in sql
    assert 'PARTITION BY RANGE ("ts")' in sql
    assert "DEFAULT;" in sql  # a default partition catches out-of-range times
