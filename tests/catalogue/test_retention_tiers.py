"""Retention tiers in the catalogue: seed 003's ledgers carry the policies the seed gives
them, the first spelling (`keep:`) still means what it did, and bad tier specs are
refused with a message naming the file and what to change."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.catalogue.retention import ArchiveSpec, RetentionSpec, SummarySpec, parse_keep
from sinkfleet.errors import CatalogueError
from sinkfleet.sink.postgres.migrate import sink_migrations
from sinkfleet.sink.postgres.tenancy import tenant_relations

ROOT = Path(__file__).resolve().parents[2]
SINK = "sinks/judgement_snapshots.yaml"
TIERS = """retention:
  detail: 90d
  summary: {keep: 1y, grain: day, by: [rubric_version, verdict], values: [overall_score]}
"""


@pytest.fixture
def cat_root(tmp_path: Path) -> Path:
    for sub in ("schemas", "topics", "sinks", "workers"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    return tmp_path


def _set_policy(root: Path, policy: str) -> None:
    path = root / SINK
    text = path.read_text()
    assert TIERS in text
    path.write_text(text.replace(TIERS, policy + "\n"))


def test_seed_003_ledgers_have_the_seeds_policies() -> None:
    sinks = load_catalogue(ROOT).sinks
    got = {}
    for name in ("judgement_snapshots", "egg_revisions", "job_resource_ledger", "job_events",
                 "worker_journal", "tadpole_activity"):
        policy = sinks[name].spec.retention
        assert policy is not None
        got[name] = policy.describe()
    assert got == {
        "judgement_snapshots": "detail 90d, summary 1y by day",  # 90_days_detailed_1_year_summary
        "egg_revisions": "detail forever, archive forever",  # permanent_with_archival
        "job_resource_ledger": "detail 180d, summary 2y by week",  # 180d detailed, 2y summary
        "job_events": "detail 365d",  # 365_days_detailed
        "worker_journal": "detail 365d, archive 3y",  # 365_days_detailed_3_years_archive
        "tadpole_activity": "detail 90d",  # 90_days_detailed
    }
    ledger = sinks["job_resource_ledger"].spec.retention
    assert ledger is not None and ledger.summary == SummarySpec(
        keep="2y", grain="week", by=["pool"],
        values=["compute_units", "memory_mb", "bandwidth_mbps", "thread_count"])
    journal = sinks["worker_journal"].spec.retention
    assert journal is not None and journal.archive == ArchiveSpec(keep="3y")
    assert journal.archive_keep == timedelta(days=3 * 365)
    assert journal.detail_delta == timedelta(days=365)
    eggs = sinks["egg_revisions"].spec.retention
    assert eggs is not None and eggs.detail_delta is None and eggs.archive is True
    # only sinks with a summary tier get a summary migration
    assert [m.id for m in sink_migrations(sinks["judgement_snapshots"])] == [
        "sink:judgement_snapshots:0001", "sink:judgement_snapshots:summary"]
    assert [m.id for m in sink_migrations(sinks["job_events"])] == ["sink:job_events:0001"]


def test_the_first_spelling_means_what_it_did() -> None:
    old = RetentionSpec.model_validate({"keep": "7d", "archive": True})
    assert old == RetentionSpec.model_validate({"detail": "7d", "archive": True})
    assert (old.keep, old.keep_delta, old.archives, old.archive_keep) == (
        "7d", timedelta(days=7), True, None)
    assert RetentionSpec.model_validate("forever") == RetentionSpec(detail="forever")
    assert RetentionSpec.model_validate({"keep": "2w"}).archives is False
    assert parse_keep("2y") == timedelta(days=730)
    sinks = load_catalogue(ROOT).sinks
    experience = sinks["experience_events"].spec.retention
    assert experience == RetentionSpec(detail="7d", archive=True)


@pytest.mark.parametrize("policy, match", [
    ("retention: {detail: 90d, summary: {keep: 30d, grain: day}}",
     "summary.keep 30d is not longer than detail 90d: a summary outlives the detail"),
    ("retention: {detail: 90d, summary: {keep: 90d, grain: day}}",
     "summary.keep 90d is not longer than detail 90d"),
    ("retention: {detail: 90d, summary: {keep: 1y, grain: fortnight}}",
     "summary.grain 'fortnight' is not a grain: use one of hour, day, week, month"),
    ("retention: {detail: 3d, summary: {keep: 1y, grain: week}}",
     "summary.grain week is longer than detail 3d"),
    ("retention: {detail: forever, summary: {keep: 1y, grain: day}}",
     "summary needs detail to be dropped"),
    ("retention: {detail: 90d, summary: {keep: 1y}}", "summary.grain"),
    ("retention: {detail: 365d, archive: {keep: 180d}}",
     "archive.keep 180d is not longer than detail 365d"),
    ("retention: {detail: forever, archive: {keep: 3y}}",
     "archive.keep needs detail to be dropped"),
    ("retention: {detail: 90d, archive: {keep: 3y, after: 1d}}", "Extra inputs"),
    ("retention: {keep: 90d, detail: 90d}", "give 'detail' or its older spelling 'keep'"),
    ("retention: {archive: true}", "retention needs 'detail'"),
    ("retention: {detail: 3 months}", "not a duration like 48h, 7d or 2w (or 1y: 365 days),"
                                      " nor 'forever'"),
    ("retention: always", "retention 'always' is neither 'forever' nor tiers like"),
    ("retention: {detail: 90d, summary: {keep: 1y, grain: day, by: [judge]}}",
     "retention.summary: column 'judge' is not among the columns"),
    ("retention: {detail: 90d, summary: {keep: 1y, grain: day, values: [verdict]}}",
     "'verdict' is text, not a number: only numeric columns are summed"),
    ("retention: {detail: 90d, summary: {keep: 1y, grain: day, by: [verdict],"
     " values: [verdict]}}", "named twice"),
])
def test_bad_tier_specs_are_refused(cat_root: Path, policy: str, match: str) -> None:
    _set_policy(cat_root, policy)
    with pytest.raises(CatalogueError, match=re.escape(match)) as info:
        load_catalogue(cat_root)
    assert "judgement_snapshots.yaml" in str(info.value)


def test_a_summary_column_may_not_shadow_the_summary_tables_own(cat_root: Path) -> None:
    path = cat_root / SINK
    path.write_text(path.read_text().replace("{name: verdict, from: verdict}",
                                             "{name: rows, from: verdict}")
                    .replace("by: [rubric_version, verdict]", "by: [rubric_version, rows]"))
    with pytest.raises(CatalogueError, match="'rows' is a column of the summary table"):
        load_catalogue(cat_root)


def test_a_tenant_sinks_summary_groups_by_the_tenant(cat_root: Path) -> None:
    """Readers see a tenant sink one tenant at a time: a summary adding tenants' rows
    together would be readable by none of them; grouped by the tenant it gets a tenant
    view like the sink's own tables."""
    path = cat_root / SINK
    text = path.read_text().replace("mode: append", "mode: append\ntenant: agent_id")
    path.write_text(text)
    with pytest.raises(CatalogueError, match="retention.summary.by must list the tenant"
                                             " column 'agent_id'"):
        load_catalogue(cat_root)
    path.write_text(text.replace("by: [rubric_version, verdict]",
                                 "by: [agent_id, rubric_version, verdict]"))
    sink = load_catalogue(cat_root).sinks["judgement_snapshots"]
    assert [view for _, view in tenant_relations(sink)] == [
        '"public"."judgement_snapshots_tenant"',
        '"public"."judgement_snapshots_summary_parts_tenant"']


def test_forever_needs_no_partition_history_check(cat_root: Path) -> None:
    _set_policy(cat_root, "retention: forever")
    policy = load_catalogue(cat_root).sinks["judgement_snapshots"].spec.retention
    assert policy is not None and policy.detail == "forever" and not policy.archives
