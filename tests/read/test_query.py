"""The query model end to end: records published to Kafka, stored by a real worker in
PostgreSQL, read back through the Reader and `sinkfleet query rows` as a reader login, and
over HTTP (`sinkfleet serve`, a tenant's token).
Every query the seeds name is a case, worded as the seed words it; pages of every order
concatenate to exactly the full ordered result."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from sinkfleet import Reader
from sinkfleet.plainjson import json_default
from sinkfleet.read.query import Filter
from tests.read.query_support import NOW, TIE_TS, Seeded, json_rows, seeded
from tests.read.serve_support import Served, served

__all__ = ["seeded", "served"]  # the module-scoped fixtures
pytestmark = pytest.mark.integration

TOTAL_REWARD = "reward_homeostasis+reward_curiosity+reward_efficiency+reward_goal"


@dataclass(frozen=True)
class Case:
    seed: str  # the query as the seed words it
    sink: str
    where: tuple[str, ...]
    key: str  # the column the expected values are of
    expected: list[Any]
    order_by: str | None = None
    desc: bool = False
    limit: int = 100
    tenant: str | None = None


def uid(n: int) -> str:
    return str(uuid.UUID(int=n))


SEEDS = [
    Case("000 query 1: events with total reward above 0.5 (newest first)",
         "experience_events", (f"{TOTAL_REWARD}>0.5",), "step_number", [4, 3, 0],
         desc=True, limit=1000),
    Case("000 query 1, with its time bound: … and timestamp > $1",
         "experience_events", (f"{TOTAL_REWARD}>0.5", f"ts>{NOW.isoformat()}"),
         "step_number", [4, 3], desc=True, limit=1000),
    Case("000 query 2: policies ordered by avg_reward (DESC, LIMIT 100)", "policies", (),
         "state_bin_id", ["bin-e", "bin-g", "bin-f", "bin-c", "bin-a", "bin-d", "bin-b"],
         order_by="avg_reward", desc=True),
    Case("002: a tenant's failed workflows", "workflow_states", ("status=failed",),
         "workflow_id", ["wf-1", "wf-3"], tenant="tenant-1"),
    Case("002: memory entries by tag (tags @> ARRAY['important'], GIN)", "memory_entries",
         ("tags contains important",), "entry_id", [uid(1), uid(3)], tenant="tenant-1"),
    Case("003: running jobs", "jobs", ("status=running",), "job_id",
         ["job-1", "job-5", "job-3"], order_by="spawned_at"),
    Case("003: expired workers (live, past their expiry)", "agent_workers",
         ("status=active", f"expiry_at<{NOW.isoformat()}"), "worker_id",
         ["w-1", "w-4", "w-5"], order_by="expiry_at"),
    Case("001: get_recent_events(count=10): the newest events overall, newest first",
         "experience_events", (), "step_number",
         [106, 105, 104, 103, 102, 101, 100, 5, 4, 3], desc=True, limit=10),
]


def _key(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


@pytest.mark.parametrize("case", SEEDS, ids=[c.seed for c in SEEDS])
async def test_seed_queries_through_the_reader_the_cli_and_http(
        seeded: Seeded, served: Served, case: Case) -> None:
    sink = seeded.names[case.sink]
    async with Reader(seeded.reader, seeded.catalogue, tenant=case.tenant) as r:
        page = await r.query(sink, case.where, order_by=case.order_by,
                             newest_first=case.desc, limit=case.limit)
    assert [_key(row[case.key]) for row in page.rows] == case.expected
    assert page.next_cursor is None or case.limit == len(case.expected)
    args = ["rows", "--sink", sink, "--json", "--limit", str(case.limit)]
    args += [a for w in case.where for a in ("--where", w)]
    args += ["--order-by", case.order_by] if case.order_by else []
    args += ["--desc"] if case.desc else []
    args += ["--tenant", case.tenant] if case.tenant else []
    out = json_rows(seeded.cli(*args, as_reader=True))
    assert [row[case.key] for row in out["rows"]] == case.expected
    assert len(out["rows"]) == len(page.rows)
    params = [("limit", str(case.limit)), *(("where", w) for w in case.where)]
    params += [("order_by", case.order_by)] if case.order_by else []
    params += [("desc", "true")] if case.desc else []
    # every token has a tenant; the shared sinks read the same for any
    status, body, _ = await served.get(f"/v1/sinks/{sink}/rows", case.tenant or "tenant-1",
                                       params=params)
    assert status == 200, body
    assert body == out


async def test_a_tenants_failed_workflows_by_filter_as_the_owner(seeded: Seeded) -> None:
    """Without a tenant (the owner, who reads the tables), the tenant is a filter."""
    async with Reader(seeded.settings, seeded.catalogue) as r:
        page = await r.query(seeded.names["workflow_states"],
                             [Filter("tenant_id", "=", "tenant-1"), "status=failed"])
        everyone = await r.query(seeded.names["workflow_states"], ["status=failed"])
    assert [(w["tenant_id"], w["workflow_id"]) for w in page.rows] == [
        ("tenant-1", "wf-1"), ("tenant-1", "wf-3")]
    assert [(w["tenant_id"], w["workflow_id"]) for w in everyone.rows] == [
        ("tenant-1", "wf-1"), ("tenant-1", "wf-3"), ("tenant-2", "wf-1"),
        ("tenant-2", "wf-9")]


async def all_pages(r: Reader, sink: str, size: int, **kw: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        page = await r.query(sink, limit=size, cursor=cursor, **kw)
        pages.append(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 100


def nulls_ordered(rows: list[tuple[Any, str]], desc: bool) -> list[str]:
    """PostgreSQL's B-tree order: nulls last ascending, first descending; id ties."""
    present = sorted((r for r in rows if r[0] is not None), reverse=desc)
    nulls = sorted((r for r in rows if r[0] is None), key=lambda r: r[1], reverse=desc)
    return [r[1] for r in ([*nulls, *present] if desc else [*present, *nulls])]


@pytest.mark.parametrize("desc", [False, True], ids=["oldest-first", "newest-first"])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
async def test_pages_concatenate_to_the_whole_ordered_result(seeded: Seeded, desc: bool,
                                                             size: int) -> None:
    async with Reader(seeded.reader, seeded.catalogue) as r:
        # experience_events by ts: 7 events share TIE_TS, so ties straddle page ends
        sink = seeded.names["experience_events"]
        whole = (await r.query(sink, newest_first=desc, limit=1000)).rows
        assert len(whole) == 13
        assert sum(row["ts"] == TIE_TS for row in whole) == 7
        pages = await all_pages(r, sink, size, newest_first=desc)
        assert [row for page in pages for row in page] == whole
        assert all(len(page) == size for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= size
        ids = [row["event_id"] for page in pages for row in page]
        assert len(set(ids)) == len(ids) == 13
        # policies by avg_reward: four share 0.75
        sink = seeded.names["policies"]
        pages = await all_pages(r, sink, size, order_by="avg_reward", newest_first=desc)
        got = [row["state_bin_id"] for page in pages for row in page]
        expected = ["bin-b", "bin-d", "bin-a", "bin-c", "bin-f", "bin-g", "bin-e"]
        assert got == (expected[::-1] if desc else expected)
        # agent_workers by a nullable indexed column: nulls last ascending, first descending
        sink = seeded.names["agent_workers"]
        pages = await all_pages(r, sink, size, order_by="job_id", newest_first=desc)
        got = [row["worker_id"] for page in pages for row in page]
        from tests.read.query_support import WORKERS
        assert got == nulls_ordered([(w["job_id"], w["worker_id"]) for w in WORKERS], desc)
        assert got[:3] == (["w-6", "w-4", "w-2"] if desc else ["w-1", "w-3", "w-7"])


async def test_pages_of_a_filtered_tenant_query(seeded: Seeded) -> None:
    async with Reader(seeded.reader, seeded.catalogue, tenant="tenant-1") as r:
        pages = await all_pages(r, seeded.names["workflow_states"], 1,
                                order_by="updated_at", newest_first=True)
    assert [p[0]["workflow_id"] for p in pages] == ["wf-4", "wf-3", "wf-2", "wf-1"]
    assert {p[0]["tenant_id"] for p in pages} == {"tenant-1"}


async def test_projection_keeps_only_the_asked_columns(seeded: Seeded) -> None:
    async with Reader(seeded.reader, seeded.catalogue) as r:
        sink = seeded.names["policies"]
        first = await r.query(sink, order_by="avg_reward", newest_first=True, limit=2,
                              columns=["rule_id"])
        rest = await r.query(sink, order_by="avg_reward", newest_first=True, limit=10,
                             columns=["rule_id"], cursor=first.next_cursor)
    assert first.rows == [{"rule_id": "rule-bin-e"}, {"rule_id": "rule-bin-g"}]
    assert [row["rule_id"] for row in rest.rows] == [
        "rule-bin-f", "rule-bin-c", "rule-bin-a", "rule-bin-d", "rule-bin-b"]
    assert rest.next_cursor is None


async def test_the_cli_prints_the_next_cursor_and_follows_it(seeded: Seeded) -> None:
    sink = seeded.names["jobs"]
    seen, cursor = [], None
    for _ in range(5):
        args = ["rows", "--sink", sink, "--order-by", "job_id", "--limit", "2", "--json"]
        out = json_rows(seeded.cli(*args, *(["--cursor", cursor] if cursor else [])))
        seen += [row["job_id"] for row in out["rows"]]
        cursor = out["next_cursor"]
        if cursor is None:
            break
    assert seen == ["job-1", "job-2", "job-3", "job-4", "job-5"]
    table = seeded.cli("rows", "--sink", sink, "--order-by", "job_id", "--limit", "2")
    assert table.returncode == 0, table.stderr
    assert "job-2" in table.stdout and "job-3" not in table.stdout
    assert "next page: --cursor " in table.stderr


async def test_events_and_other_reader_methods_still_work_on_the_model(seeded: Seeded
                                                                       ) -> None:
    async with Reader(seeded.reader, seeded.catalogue) as r:
        rows = await r.events(seeded.names["experience_events"], start=NOW,
                              where={"agent_id": "agent-1"}, limit=3)
    assert [row["step_number"] for row in rows] == [0, 1, 2]


async def test_a_summary_tiers_windows_read_the_same_through_the_reader_the_cli_and_http(
        seeded: Seeded, served: Served) -> None:
    """Seed 003's judgement ledger keeps a daily summary: per day and verdict, the count
    and exact sum/min/max/mean of the scores (all detail here: the retention tiers' test
    reads them across a drop), as the reader login, the CLI and a token read them."""
    sink = seeded.names["judgement_snapshots"]
    start, end = NOW.isoformat(), (NOW + dt.timedelta(seconds=10)).isoformat()
    async with Reader(seeded.reader, seeded.catalogue) as r:
        got = await r.windows(sink, start=start, end=end)
    day = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    # NOW + 4 s may cross midnight: the windows are computed, not assumed
    days = sorted({w["window_start"] for w in got})
    assert days == sorted({(t_ - dt.timedelta(hours=t_.hour, minutes=t_.minute,
                                              seconds=t_.second))
                           for t_ in (NOW + dt.timedelta(seconds=s) for s in (1, 2, 3, 4))})
    assert day in days or len(days) == 1
    totals = {v: sum((w["rows"] for w in got if w["verdict"] == v), 0)
              for v in ("retain", "promote")}
    assert totals == {"retain": 3, "promote": 1}
    retain = [w for w in got if w["verdict"] == "retain"]
    if len(retain) == 1:  # the usual case: one day
        [w] = retain
        assert (w["rows"], w["overall_score_count"], w["overall_score_sum"],
                w["overall_score_min"], w["overall_score_max"]) == (
            3, 3, Decimal("0.1") + Decimal("0.2") + Decimal("0.30000000000000004"), 0.1,
            0.30000000000000004)
        assert float(w["overall_score_avg"]) == pytest.approx(0.2)
    out = seeded.cli("windows", "--sink", sink, "--start", start, "--end", end,
                     "--where", "verdict=retain", "--json", as_reader=True)
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    assert cli == json.loads(json.dumps(retain, default=json_default))
    status, body, _ = await served.get(f"/v1/sinks/{sink}/windows", params=[
        ("start", start), ("end", end), ("where", "verdict=retain")])
    assert status == 200, body
    assert body == {"windows": cli}
    status, body, _ = await served.get(f"/v1/sinks/{sink}/windows",
                                       params=[("where", "agent_id=agent-1")])
    assert status == 400 and "give start" in body["error"], body
    status, body, _ = await served.get(f"/v1/sinks/{sink}/windows", params=[
        ("start", start), ("where", "agent_id=agent-1")])
    assert status == 400 and "keeps only its by columns" in body["error"], body
