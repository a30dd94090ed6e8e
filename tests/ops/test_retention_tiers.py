"""Retention tiers on the real servers, with seed 003's ledgers as shipped: publish →
worker → PostgreSQL, then `sinkfleet retention run --now` at dates that cross each tier,
and the exact detail, summary and archive left after each; the summary of dropped detail
is stored by the transaction that drops it, never lost; forever drops nothing."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.ops.lifecycle.archive.avro import read_records
from sinkfleet.ops.lifecycle.partitions import detach
from sinkfleet.ops.lifecycle.retention.tiers import summarise
from sinkfleet.producer import Publisher
from sinkfleet.read import Reader
from sinkfleet.read.query import QueryError
from sinkfleet.sink.postgres.connect import connect
from tests.ops.tiers_support import (
    EPOCH_MONDAY,
    Summary,
    expected_summary,
    forget_tiers,
    insert,
    make_partitions,
    partition_rows,
    retention_cli,
    stored_summary,
    with_archive,
)
from tests.sink.merge_support import project_family
from tests.support.family import Family, drain, drop_family, rows, running_worker
from tests.support.postgres import reader_login

pytestmark = pytest.mark.integration

D0 = EPOCH_MONDAY
DAY, WEEK, YEAR = timedelta(days=1), timedelta(weeks=1), timedelta(days=365)
HOUR, SEC = timedelta(hours=1), timedelta(seconds=1)
JUDGED = (["rubric_version", "verdict"], ["overall_score"])
POOLS = (["pool"], ["compute_units", "memory_mb", "bandwidth_mbps", "thread_count"])


async def ledger(stack: Settings, tmp_path: Path, name: str) -> AsyncIterator[Family]:
    fam = with_archive(await project_family(tmp_path, stack, name), tmp_path / "archive")
    try:
        yield fam
    finally:
        await forget_tiers(fam)
        await drop_family(fam)


@pytest_asyncio.fixture
async def judgements(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    async for fam in ledger(stack, tmp_path, "judgement_snapshots"):
        yield fam


@pytest_asyncio.fixture
async def resources(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    async for fam in ledger(stack, tmp_path, "job_resource_ledger"):
        yield fam


@pytest_asyncio.fixture
async def journal(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    async for fam in ledger(stack, tmp_path, "worker_journal"):
        yield fam


@pytest_asyncio.fixture
async def eggs(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    async for fam in ledger(stack, tmp_path, "egg_revisions"):
        yield fam


def snapshots(days: int, per_day: int, seed: int = 1) -> list[dict[str, Any]]:
    """Judgement snapshots over ``days`` days from D0, the last ones a minute before
    midnight; scores include floats with no short binary form (0.1 + 0.2)."""
    rng = random.Random(seed)
    out = []
    for d in range(days):
        for k in range(per_day):
            at = D0 + d * DAY + (timedelta(hours=23, minutes=59) if k == per_day - 1
                                 else timedelta(minutes=37 * k))
            score = 0.1 + 0.2 if k % 5 == 0 else rng.random()
            out.append({"snapshot_id": str(uuid.UUID(int=rng.getrandbits(128))),
                        "agent_id": f"agent-{k % 3}", "rubric_version": f"r{k % 2 + 1}",
                        "verdict": ("promote", "retain", "retire")[k % 3],
                        "overall_score": score, "scores": f'{{"honesty": {k}}}',
                        "judge_id": None if k % 4 else "judge-1", "judged_at": at})
    return out


def allocations(weeks: int, seed: int = 2) -> list[dict[str, Any]]:
    """Allocations over ``weeks`` weeks from D0, with one a microsecond before a week
    ends and one just as the next begins (windows start on Monday, UTC)."""
    rng = random.Random(seed)
    out = []
    for w in range(weeks):
        times = [D0 + w * WEEK + timedelta(hours=13 * i) for i in range(10)]
        times += [D0 + (w + 1) * WEEK - timedelta(microseconds=1)]
        if w:
            times.append(D0 + w * WEEK)
        for i, at in enumerate(times):
            out.append({"allocation_id": str(uuid.UUID(int=rng.getrandbits(128))),
                        "job_id": f"job-{i % 4}", "pool": ("gpu-a", "cpu-b")[i % 2],
                        "compute_units": rng.randint(1, 64),
                        "memory_mb": rng.randint(256, 2**31 - 1) if i == 3 else
                        rng.randint(256, 65536),
                        "bandwidth_mbps": rng.randint(10, 10_000),
                        "thread_count": rng.randint(1, 128), "allocated_at": at,
                        "released_at": None if i % 3 else at + timedelta(hours=2)})
    return out


async def publish_and_store(fam: Family, records: list[dict[str, Any]]) -> None:
    async with Publisher(fam.settings, catalogue=fam.catalogue) as pub:
        for rec in records:
            await pub.publish(fam.family, rec)
    async with running_worker(fam) as worker:
        await drain(fam, worker)


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def with_time(records: list[dict[str, Any]], field: str, start: datetime, end: datetime
              ) -> list[dict[str, Any]]:
    return [r for r in records if start <= r[field] < end]


async def test_judgement_snapshots_90_days_detailed_1_year_summary(judgements: Family
                                                                   ) -> None:
    fam = judgements
    await make_partitions(fam, D0 + 2 * DAY)  # days D0 … D0 + 9
    published = snapshots(days=5, per_day=12)
    await publish_and_store(fam, published)
    assert sum((await partition_rows(fam)).values()) == 60
    archive = fam.settings.archive

    # the plan says what each tier will do, and a dry run changes nothing
    before = await partition_rows(fam)
    plan = json.loads(ok(retention_cli(fam, archive, D0 + 3 * DAY + 90 * DAY, "--dry-run",
                                       "--json")))["plans"][0]
    assert plan["keep"] == "detail 90d, summary 1y by day"
    assert [s["action"] for s in plan["steps"]] == ["summary+drop"] * 3
    assert plan["summary_horizon"] == (D0 + 3 * DAY + 90 * DAY - YEAR).isoformat()
    assert await partition_rows(fam) == before

    # 90 days after day 2 ended: days 0-2 leave detail, their summary is stored
    out = ok(retention_cli(fam, archive, D0 + 3 * DAY + 90 * DAY))
    assert "3 partition(s) dropped (36 rows" in out, out
    detail = await rows(fam, f'SELECT snapshot_id FROM "{fam.table}"')
    assert sorted(r["snapshot_id"] for r in detail) == sorted(
        uuid.UUID(r["snapshot_id"]) for r in with_time(published, "judged_at", D0 + 3 * DAY,
                                                        D0 + 5 * DAY))
    assert await stored_summary(fam, *JUDGED) == expected_summary(
        with_time(published, "judged_at", D0, D0 + 3 * DAY), "judged_at", "day", *JUDGED)

    # a year after day 0 ended: its summary goes; the rest of the detail leaves too
    out = ok(retention_cli(fam, archive, D0 + DAY + YEAR))
    assert await partition_rows(fam) == {}
    summary = await stored_summary(fam, *JUDGED)
    assert summary == expected_summary(with_time(published, "judged_at", D0 + DAY,
                                                 D0 + 5 * DAY), "judged_at", "day", *JUDGED)
    assert {k[0] for k in summary} == {D0 + d * DAY for d in (1, 2, 3, 4)}
    assert "summary row(s)" in out

    # a year after the last day: nothing of it is left
    ok(retention_cli(fam, archive, D0 + 5 * DAY + YEAR))
    assert await stored_summary(fam, *JUDGED) == {}
    assert not list(archive.glob("**/*.avro"))  # no archive tier: nothing archived


async def test_job_resource_ledger_180_days_detailed_2_years_weekly_summary(
        resources: Family) -> None:
    fam = resources
    await make_partitions(fam, D0 + 2 * WEEK)  # weeks D0 … D0 + 6w
    published = allocations(weeks=3)
    await publish_and_store(fam, published)
    archive = fam.settings.archive

    ok(retention_cli(fam, archive, D0 + WEEK + 180 * DAY))  # week 0 leaves detail
    assert sum((await partition_rows(fam)).values()) == len(
        with_time(published, "allocated_at", D0 + WEEK, D0 + 3 * WEEK))
    want = expected_summary(published, "allocated_at", "week", *POOLS)
    got = await stored_summary(fam, *POOLS)
    assert got == {k: v for k, v in want.items() if k[0] == D0}
    assert len(got) == 2  # one row per pool
    parts = await rows(fam, f'SELECT DISTINCT detail_partition FROM "{fam.table}_summary_parts"')
    assert [r["detail_partition"] for r in parts] == [f"{fam.table}_p20250303"]

    ok(retention_cli(fam, archive, D0 + 2 * WEEK + 730 * DAY))  # weeks 0, 1 out of summary
    assert await partition_rows(fam) == {}
    assert await stored_summary(fam, *POOLS) == {
        k: v for k, v in want.items() if k[0] == D0 + 2 * WEEK}


async def test_a_failed_summary_drops_nothing(judgements: Family) -> None:
    fam = judgements
    await make_partitions(fam, D0 + 2 * DAY)
    published = snapshots(days=2, per_day=6)
    await insert(fam, published)
    before = await partition_rows(fam)
    conn = await connect(fam.settings)
    try:  # summary rows cannot be stored now
        await conn.execute(f'ALTER TABLE "{fam.table}_summary_parts" ADD CONSTRAINT broken'
                           " CHECK (rows < 0) NOT VALID")
    finally:
        await conn.close()
    result = retention_cli(fam, fam.settings.archive, D0 + 2 * DAY + 90 * DAY)
    assert result.returncode == 1 and "FAILED" in result.stdout + result.stderr
    assert await partition_rows(fam) == before  # attached, every row still there
    assert await rows(fam, f'SELECT * FROM "{fam.table}_summary_parts"') == []
    assert await rows(fam, "SELECT * FROM sinkfleet.retention_pending WHERE sink = $1",
                      fam.table) == []

    conn = await connect(fam.settings)
    try:
        await conn.execute(f'ALTER TABLE "{fam.table}_summary_parts" DROP CONSTRAINT broken')
    finally:
        await conn.close()
    ok(retention_cli(fam, fam.settings.archive, D0 + 2 * DAY + 90 * DAY))
    assert await partition_rows(fam) == {}
    assert await stored_summary(fam, *JUDGED) == expected_summary(published, "judged_at",
                                                                  "day", *JUDGED)


async def test_rows_that_reach_a_detached_partition_are_summarised(judgements: Family
                                                                   ) -> None:
    """A run died after DETACH; a late row went into the detached table. The next run
    summarises the table as it is when it drops it."""
    fam = judgements
    await make_partitions(fam, D0 + 2 * DAY)
    published = snapshots(days=1, per_day=6)
    await insert(fam, published)
    name = f"{fam.table}_p20250303"
    conn = await connect(fam.settings)
    try:
        await conn.execute(
            "INSERT INTO sinkfleet.retention_pending (table_schema, partition, sink,"
            " range_start, range_end) VALUES ('public', $1, $2, $3, $4)",
            name, fam.table, D0, D0 + DAY)
        await detach(conn, fam.sink, name, concurrently=False)
    finally:
        await conn.close()
    late = snapshots(days=1, per_day=3, seed=9)
    await insert(fam, late, table=name)
    out = ok(retention_cli(fam, fam.settings.archive, D0 + DAY + 90 * DAY))
    assert "detached by an interrupted run" in out or "left by an interrupted run" in out
    assert await stored_summary(fam, *JUDGED) == expected_summary(
        published + late, "judged_at", "day", *JUDGED)
    assert await rows(fam, "SELECT to_regclass($1) AS t", f'"{name}"') == [{"t": None}]


def journal_entries(week: int, n: int) -> list[dict[str, Any]]:
    return [{"entry_id": uuid.UUID(int=week * 1000 + i), "worker_id": f"w-{i % 2}",
             "job_id": None if i % 2 else f"job-{i}", "entry_type": "reflection",
             "body": f"entry {i} of week {week}", "metrics": f'{{"n": {i}}}',
             "written_at": D0 + week * WEEK + timedelta(hours=i)} for i in range(n)]


async def test_worker_journal_365_days_detailed_3_years_archive(journal: Family) -> None:
    fam = journal
    archive = fam.settings.archive
    await make_partitions(fam, D0 + WEEK)
    week0, week1 = journal_entries(0, 5), journal_entries(1, 3)
    await insert(fam, week0 + week1)

    ok(retention_cli(fam, archive, D0 + WEEK + 365 * DAY))  # week 0 leaves PostgreSQL
    files = await rows(fam, "SELECT partition, rows, path FROM sinkfleet.archives"
                            " WHERE sink = $1 ORDER BY range_start", fam.table)
    assert [(f["partition"], f["rows"]) for f in files] == [(f"{fam.table}_p20250303", 5)]
    stored = sorted(read_records(archive / files[0]["path"]), key=lambda r: r["entry_id"])
    assert [{k: r[k] for k in week0[0]} for r in stored] == [
        {**e, "metrics": e["metrics"]} for e in week0]
    assert sum((await partition_rows(fam)).values()) == 3

    ok(retention_cli(fam, archive, D0 + WEEK + 3 * YEAR - DAY))  # week 1 archived too
    files = await rows(fam, "SELECT partition, rows, path FROM sinkfleet.archives"
                            " WHERE sink = $1 ORDER BY range_start", fam.table)
    assert [f["rows"] for f in files] == [5, 3]
    assert all((archive / f["path"]).exists() for f in files)

    out = ok(retention_cli(fam, archive, D0 + WEEK + 3 * YEAR))  # week 0 is 3 years old
    assert "1 archive file(s)" in out, out
    left = await rows(fam, "SELECT partition, rows, path FROM sinkfleet.archives"
                           " WHERE sink = $1", fam.table)
    assert [(f["partition"], f["rows"]) for f in left] == [(f"{fam.table}_p20250310", 3)]
    gone = archive / files[0]["path"]
    assert not gone.exists() and not gone.with_name(gone.name + ".json").exists()
    assert (archive / files[1]["path"]).exists()


def revisions(month: datetime, n: int, first: int = 0) -> list[dict[str, Any]]:
    return [{"revision_id": uuid.UUID(int=month.month * 1000 + first + i), "egg_id": "egg-1",
             "revision": first + i + 1, "action": "proposed", "author": "ops",
             "changes": '{"ttl": 60}', "rationale": None,
             "revised_at": month + timedelta(days=first + i)} for i in range(n)]


async def test_egg_revisions_permanent_with_archival(eggs: Family) -> None:
    fam = eggs
    archive = fam.settings.archive
    jan, feb = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    await make_partitions(fam, datetime(2025, 2, 15, tzinfo=UTC))  # Jan … Apr 2025
    await insert(fam, revisions(jan, 3) + revisions(feb, 2))
    before = await partition_rows(fam)
    far = datetime(2125, 1, 1, tzinfo=UTC)

    out = ok(retention_cli(fam, archive, far))  # a century on: nothing is dropped
    assert "0 partition(s) dropped" in out and "2 partition(s) of forever-kept" in out, out
    assert await partition_rows(fam) == before
    copies = "SELECT partition, rows, dropped_at FROM sinkfleet.archives WHERE sink = $1" \
             " ORDER BY partition, archived_at"
    assert [(r["partition"], r["rows"], r["dropped_at"]) for r in await rows(
        fam, copies, fam.table)] == [(f"{fam.table}_p202501", 3, None),
                                     (f"{fam.table}_p202502", 2, None)]

    out = ok(retention_cli(fam, archive, far))  # unchanged partitions are not copied again
    assert "copied" not in out
    await insert(fam, revisions(jan, 1, first=20))  # a late revision of January
    ok(retention_cli(fam, archive, far))
    assert [(r["partition"], r["rows"]) for r in await rows(fam, copies, fam.table)] == [
        (f"{fam.table}_p202501", 3), (f"{fam.table}_p202501", 4),
        (f"{fam.table}_p202502", 2)]
    assert sum((await partition_rows(fam)).values()) == 6
    assert len(list(archive.glob("**/*.avro"))) == 3


async def test_a_missing_summary_table_says_to_migrate(judgements: Family) -> None:
    fam = judgements
    conn = await connect(fam.settings)
    try:  # as if the summary tier was added to the sink after its last `db migrate`
        await conn.execute(f'DROP TABLE "{fam.table}_summary_parts" CASCADE')
    finally:
        await conn.close()
    result = retention_cli(fam, fam.settings.archive, D0 + YEAR)
    assert result.returncode == 2  # a user error (`friendly`), not a failed step
    assert (f"summary table public.{fam.table}_summary_parts of sink {fam.table} does not"
            " exist: run `sinkfleet db migrate`") in " ".join(
                (result.stdout + result.stderr).split())


def as_windows(summary: Summary, by: list[str], values: list[str]) -> list[dict[str, Any]]:
    """``expected_summary`` in the shape of ``Reader.windows`` rows, in its order."""
    out = []
    for key in sorted(summary, key=lambda k: tuple(str(x) for x in k)):
        row: dict[str, Any] = {"window_start": key[0], **dict(zip(by, key[1:], strict=True)),
                               "rows": summary[key][0]}
        for i, v in enumerate(values):
            n, total, low, high = summary[key][1 + 4 * i: 5 + 4 * i]
            row |= {f"{v}_count": n, f"{v}_sum": total, f"{v}_min": low, f"{v}_max": high}
        out.append(row)
    return out


async def read_windows(settings: Settings, fam: Family, *filters: str, start: datetime,
                       end: datetime) -> list[dict[str, Any]]:
    async with Reader(settings, fam.catalogue) as reader:
        got = await reader.windows(fam.table, list(filters), start=start, end=end)
    for row in got:  # the mean is the exact sum over the count, to numeric's precision
        for v in JUDGED[1]:
            mean, n = row.pop(f"{v}_avg"), row[f"{v}_count"]
            assert (mean is None) if not n else abs(
                mean - row[f"{v}_sum"] / n) < Decimal("1e-15"), row
    return sorted(got, key=lambda r: (r["window_start"], *(str(r[c]) for c in JUDGED[0])))


async def test_windows_read_detail_and_summary_as_one_answer(judgements: Family,
                                                             reader: Settings) -> None:
    """Per-day scores read the same before retention (all detail), while a partition is
    summarised but still attached (counted once), and after three days left the detail
    (their summary): exact sums, as the reader login (its grants) reads them."""
    fam = judgements
    await make_partitions(fam, D0 + 2 * DAY)
    published = snapshots(days=5, per_day=12)
    await publish_and_store(fam, published)
    want = as_windows(expected_summary(published, "judged_at", "day", *JUDGED), *JUDGED)
    whole = {"start": D0, "end": D0 + 5 * DAY}

    assert await read_windows(reader, fam, **whole) == want
    # day 3 summarised by a first pass that has not dropped it yet: counted once
    conn = await connect(fam.settings)
    try:
        async with conn.transaction():
            assert await summarise(conn, fam.sink, f"{fam.table}_p20250306") > 0
    finally:
        await conn.close()
    assert await read_windows(reader, fam, **whole) == want

    ok(retention_cli(fam, fam.settings.archive, D0 + 3 * DAY + 90 * DAY))
    assert len(await partition_rows(fam)) == 2  # days 3 and 4 are still detail
    assert await read_windows(reader, fam, **whole) == want  # days 0-2 from the summary
    # filters on by columns; a range inside windows is widened to whole days
    promoted = [w for w in want if w["verdict"] == "promote"
                and D0 + DAY <= w["window_start"] <= D0 + 3 * DAY]
    assert await read_windows(reader, fam, "verdict=promote", start=D0 + DAY + 5 * HOUR,
                              end=D0 + 3 * DAY + SEC) == promoted
    assert len({w["window_start"] for w in promoted}) == 3
    with pytest.raises(QueryError, match="keeps only its by columns"):
        await read_windows(reader, fam, "agent_id=agent-1", **whole)



@pytest_asyncio.fixture
async def reader(judgements: Family) -> AsyncIterator[Settings]:
    """A login that is a member of sinkfleet_reader only: what `db migrate` grants it."""
    async with reader_login(judgements.settings,
                            f"sinkfleet_w{uuid.uuid4().hex[:8]}_reader") as settings:
        yield settings
