"""Roll-up grains beyond minute and hour: day and week windows start where PostgreSQL's
``date_trunc`` starts them (weeks on Monday, not on the epoch's Thursday), and a family
keeps the grains it names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sinkfleet.rollups.families import FAMILIES
from sinkfleet.rollups.windows import (
    GRAINS,
    WEEK_US,
    entry_end,
    grain_start,
    is_entry,
    plan_record,
    to_micros,
)

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)


def test_week_windows_start_on_monday_and_day_windows_at_midnight() -> None:
    for ts in (MONDAY, MONDAY + timedelta(days=3, hours=5),
               MONDAY + timedelta(weeks=1) - timedelta(microseconds=1)):
        assert grain_start(to_micros(ts), "week") == to_micros(MONDAY)
        day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        assert grain_start(to_micros(ts), "day") == to_micros(day)
    assert grain_start(to_micros(MONDAY + timedelta(weeks=1)), "week") == \
        to_micros(MONDAY) + WEEK_US
    assert grain_start(0, "week") == to_micros(datetime(1969, 12, 29, tzinfo=UTC))
    assert grain_start(to_micros(MONDAY) + 7, "minute") == to_micros(MONDAY)
    key = (0, "week", to_micros(MONDAY), "x")
    assert is_entry(key) and entry_end(key) == to_micros(MONDAY + timedelta(weeks=1))


def test_a_record_lands_in_each_grain_asked_for() -> None:
    ts = to_micros(MONDAY + timedelta(days=2, hours=3, minutes=4))
    updates, verdict = plan_record(lambda key: None, 0, 5, ts, [(("k",), None)], -(2**62),
                                   grains=("hour", "day", "week"))
    assert [(key[1], key[2]) for key, _ in updates] == [
        ("hour", to_micros(MONDAY + timedelta(days=2, hours=3))),
        ("day", to_micros(MONDAY + timedelta(days=2))), ("week", to_micros(MONDAY))]
    assert verdict.changed and not verdict.closed
    # a closed week is late for the week grain only
    updates, _ = plan_record(lambda key: None, 0, 6, ts, [(("k",), None)],
                             to_micros(MONDAY + timedelta(days=3)), grains=("day", "week"))
    assert [key[1] for key, _ in updates] == ["week"]


def test_families_keep_minute_and_hour_unless_they_say_otherwise() -> None:
    assert {f.grains for f in FAMILIES.values()} == {("minute", "hour")}
    assert set(GRAINS) == {"minute", "hour", "day", "week"}
