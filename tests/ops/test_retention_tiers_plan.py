"""Retention plans of the tiered ledgers, without servers: which partitions go and what
retiring them does, the summary and archive horizons, and forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sinkfleet.catalogue import load_catalogue
from sinkfleet.ops.lifecycle.partitions import Partition
from sinkfleet.ops.lifecycle.retention.plan import drop_action, plan_sink

ROOT = Path(__file__).resolve().parents[2]
CAT = load_catalogue(ROOT)
NOW = datetime(2026, 6, 4, 0, 0, tzinfo=UTC)


def days(name: str, first: datetime, n: int) -> list[Partition]:
    return [Partition(f"{name}_p{first + timedelta(days=i):%Y%m%d}", first + timedelta(days=i),
                      first + timedelta(days=i + 1), False, False, 8192) for i in range(n)]


def test_a_summary_tier_summarises_what_it_drops() -> None:
    sink = CAT.sinks["judgement_snapshots"]
    parts = [Partition("j_default", None, None, True, False, 0),
             *days("j", NOW - timedelta(days=93), 6)]  # days -93 … -88
    plan = plan_sink(sink, parts, NOW)
    assert plan.horizon == NOW - timedelta(days=90)
    assert plan.summary_horizon == NOW - timedelta(days=365)
    assert plan.archive_horizon is None
    # -93, -92, -91 end by the horizon (the -91 one exactly on it); -90 … -88 stay
    assert [(s.partition, s.action) for s in plan.steps] == [
        ("j_p20260303", "summary+drop"), ("j_p20260304", "summary+drop"),
        ("j_p20260305", "summary+drop")]
    assert plan.kept == 3 and plan.keep == "detail 90d, summary 1y by day"


def test_an_archive_tier_has_its_own_horizon() -> None:
    sink = CAT.sinks["worker_journal"]
    plan = plan_sink(sink, days("w", NOW - timedelta(days=366), 2), NOW)
    assert [s.action for s in plan.steps] == ["archive+drop"]
    assert plan.archive_horizon == NOW - timedelta(days=3 * 365)
    assert plan.summary_horizon is None
    assert plan_sink(CAT.sinks["job_events"], days("e", NOW - timedelta(days=400), 1),
                     NOW).steps[0].action == "drop"


def test_forever_drops_nothing_and_copies_closed_partitions() -> None:
    sink = CAT.sinks["egg_revisions"]
    far = NOW + timedelta(days=100 * 365)
    parts = [Partition("e_default", None, None, True, False, 0),
             *days("e", NOW - timedelta(days=2), 4)]  # -2, -1 closed; 0, +1 not yet
    plan = plan_sink(sink, parts, NOW)
    assert [(s.partition, s.action) for s in plan.steps] == [
        ("e_p20260602", "archive"), ("e_p20260603", "archive")]
    assert plan.kept == 2 and plan.summary_horizon is None and plan.archive_horizon is None
    assert all(s.action == "archive" for s in plan_sink(sink, parts, far).steps)
    bare = CAT.sinks["egg_revisions"].spec.model_copy(
        update={"retention": sink.spec.retention.model_copy(update={"archive": False})
                if sink.spec.retention else None})
    assert plan_sink(type(sink)(bare, sink.topic, sink.schema, sink.columns), parts,
                     far).steps == []


def test_the_action_names_every_tier_it_writes() -> None:
    assert [drop_action(s, a) for s in (False, True) for a in (False, True)] == [
        "drop", "archive+drop", "summary+drop", "summary+archive+drop"]
