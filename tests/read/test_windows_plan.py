"""Window reads, planned without a database: windows as PostgreSQL's date_trunc makes
them, ranges widened to whole windows and bounded, filters on the summary's by columns
only, and the SQL reading both tiers with every value bound (end to end:
tests/ops/test_retention_tiers.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.errors import ConfigError
from sinkfleet.read.query import Filter, QueryError, SinkQuery
from sinkfleet.read.windows import SinkWindows, window_range
from sinkfleet.sink.postgres.ddl import floor_time

ROOT = Path(__file__).resolve().parents[2]
SINKS = load_catalogue(ROOT).sinks
T = datetime(2026, 3, 4, 17, 45, 12, 345, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize("grain, start", [
    ("hour", datetime(2026, 3, 4, 17, tzinfo=UTC)),
    ("day", datetime(2026, 3, 4, tzinfo=UTC)),
    ("week", datetime(2026, 3, 2, tzinfo=UTC)),  # Monday, as date_trunc('week')
    ("month", datetime(2026, 3, 1, tzinfo=UTC))])
def test_a_window_starts_where_date_trunc_says(grain: str, start: datetime) -> None:
    assert floor_time(T, grain) == start
    assert floor_time(start, grain) == start
    # another zone's clock is the same instant: windows are UTC's
    assert floor_time(T.astimezone(timezone(timedelta(hours=-5))), grain) == start


def test_a_range_is_widened_to_whole_windows_and_bounded() -> None:
    assert window_range(T, T + timedelta(days=1), "day") == (
        datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC), 2)
    # an end on a boundary is exclusive: no empty window after it
    assert window_range("2026-03-04", "2026-03-06T00:00:00Z", "day")[1:] == (
        datetime(2026, 3, 6, tzinfo=UTC), 2)
    assert window_range("2025-12-15", "2026-01-15", "month") == (
        datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), 2)
    with pytest.raises(QueryError, match="must come after start"):
        window_range(T, T - timedelta(days=1), "day")
    with pytest.raises(QueryError, match="spans more than 10,000 hour windows"):
        window_range("2020-01-01", "2026-01-01", "hour")
    with pytest.raises(ConfigError, match="start: 'yesterday' is not an ISO-8601 time"):
        window_range("yesterday", T, "day")


def test_only_sinks_with_a_summary_tier_have_windows() -> None:
    with pytest.raises(QueryError, match="'job_events' keeps no summary tier"):
        SinkWindows(SinkQuery(SINKS["job_events"]))


def test_filters_reach_the_by_columns_only_and_every_value_is_bound() -> None:
    planner = SinkWindows(SinkQuery(SINKS["judgement_snapshots"]))
    with pytest.raises(QueryError, match="keeps only its by columns .rubric_version,"
                                         " verdict."):
        planner.plan([Filter("agent_id", "=", "a")], start=T, end=T)
    hostile = "pass'; DROP TABLE judgement_snapshots; --"
    sql, args = planner.plan([Filter("verdict", "=", hostile)], start=T,
                             end=T + timedelta(days=2))
    assert hostile not in sql and hostile in args
    assert args[1:3] == [datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 7, tzinfo=UTC)]
    # both tiers, the summary parts without those of still-attached partitions
    assert 'FROM "public"."judgement_snapshots" WHERE' in sql
    assert 'FROM "public"."judgement_snapshots_summary_parts" WHERE grain = $5' in sql
    assert "detail_partition <> ALL(ARRAY(SELECT c.relname::text" in sql
    assert args[3:5] == ['"public"."judgement_snapshots"', "day"]


def test_a_tenant_reads_its_tenant_views_of_both_tiers(tmp_path: Path) -> None:
    for sub in ("schemas", "topics", "workers"):
        (tmp_path / sub).symlink_to(ROOT / sub)
    sinks = tmp_path / "sinks"
    sinks.mkdir()
    for path in (ROOT / "sinks").glob("*.yaml"):
        text = path.read_text()
        if path.name == "judgement_snapshots.yaml":
            text = text.replace("mode: append", "mode: append\ntenant: agent_id").replace(
                "by: [rubric_version, verdict]", "by: [agent_id, rubric_version, verdict]")
        (sinks / path.name).write_text(text)
    sink = load_catalogue(tmp_path).sinks["judgement_snapshots"]
    sql, _ = SinkWindows(SinkQuery(sink, tenant="agent-1")).plan([], start=T, end=T)
    assert 'FROM "public"."judgement_snapshots_tenant" WHERE' in sql
    assert 'FROM "public"."judgement_snapshots_summary_parts_tenant" WHERE' in sql
    assert "agent-1" not in sql  # the view keeps the tenant: set per transaction
