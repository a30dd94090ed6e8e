"""Retention and the cold archive on the real PostgreSQL: dry run, archive → detach →
drop of exactly the partitions past the horizon, the archive re-read field by field,
restore (twice), the advisory lock, an interrupted run, rows arriving mid-archive, and
the scheduled mode."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings, load_settings
from sinkfleet.ops.lifecycle.archive.avro import read_records
from sinkfleet.ops.lifecycle.archive.restore import restore_range
from sinkfleet.ops.lifecycle.archive.store import list_archives
from sinkfleet.ops.lifecycle.partitions import detach, list_partitions
from sinkfleet.ops.lifecycle.retention import run as retention_run
from sinkfleet.ops.lifecycle.retention.run import RETENTION_LOCK_KEY, run_retention
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import floor_time
from sinkfleet.sink.postgres.migrate import ensure_partitions
from tests.ops.retention_support import event_rows, fill_day, insert_rows, table_rows
from tests.support.catalogue import TestCatalogue
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
TODAY = floor_time(NOW, "day")
OLD_DAYS = (20, 16, 14)  # days ago with rows, in partitions past the 7-day horizon
PER_DAY = 1500
STRAY_DAYS = 30  # rows with no partition: they sit in DEFAULT


def day(ago: int) -> datetime:
    return TODAY - timedelta(days=ago)


@pytest_asyncio.fixture
async def made(stack: Settings) -> AsyncIterator[list[TestCatalogue]]:
    """Catalogues made by the test; their archive rows are deleted afterwards (their
    tables go with catalogue_factory's clean-up)."""
    out: list[TestCatalogue] = []
    yield out
    async with pg(stack) as conn:
        for tc in out:
            await conn.execute("DELETE FROM sinkfleet.archives WHERE sink = $1", tc.table)
            await conn.execute("DELETE FROM sinkfleet.retention_pending WHERE sink = $1",
                               tc.table)


async def make_events(catalogue_factory: Callable[..., Any], tmp_path: Path,
                      made: list[TestCatalogue]) -> TestCatalogue:
    """An experience-events catalogue (keep 7d, archive) with old, recent and stray rows.

    Partitions: days -22 … -13 (made as if it were 20 days ago) and -2 … +7 (migrate).
    """
    tc: TestCatalogue = await catalogue_factory()
    made.append(tc)
    tc.settings = load_settings(home=tc.root, state_dir=tc.settings.state,
                                archive_dir=tmp_path / "archive")
    sink = tc.catalogue.sinks[tc.table]
    assert sink.spec.retention is not None and sink.spec.retention.keep == "7d"
    async with pg(tc.settings) as conn:
        await ensure_partitions(conn, sink, now=NOW - timedelta(days=20))
        for i, ago in enumerate((*OLD_DAYS, 1)):
            await fill_day(conn, sink, day(ago), PER_DAY, seed=i)
        await fill_day(conn, sink, day(STRAY_DAYS), 7, seed=99)
    return tc


async def snapshot(tc: TestCatalogue) -> dict[str, int]:
    """Partition → row count (the whole table's state, as far as retention goes)."""
    sink = tc.catalogue.sinks[tc.table]
    async with pg(tc.settings) as conn:
        return {p.name: await conn.fetchval(f'SELECT count(*) FROM ONLY "{p.name}"')
                for p in await list_partitions(conn, sink)}


def cli_env(tc: TestCatalogue, tmp_path: Path) -> dict[str, str]:
    return {**tc.env(), "SINKFLEET_ARCHIVE_DIR": str(tmp_path / "archive"), "COLUMNS": "200"}


def cli(tc: TestCatalogue, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], cwd=tc.root,
                          env=cli_env(tc, tmp_path), capture_output=True, text=True,
                          timeout=120)


def start_schedule(tc: TestCatalogue, tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "retention", "run", "--every", "2s"],
            stdout=fh, stderr=subprocess.STDOUT, cwd=tc.root, env=cli_env(tc, tmp_path))


def old_partitions(tc: TestCatalogue) -> list[str]:
    """Partitions entirely before now - 7d: days -22 … -13 (ten)."""
    return [f"{tc.table}_p{day(ago):%Y%m%d}" for ago in range(22, 12, -1)]


async def test_dry_run_changes_nothing(
        catalogue_factory: Callable[..., Any], tmp_path: Path, made: list[TestCatalogue]
) -> None:
    tc = await make_events(catalogue_factory, tmp_path, made)
    before = await snapshot(tc)
    report = await run_retention(tc.settings, tc.catalogue, sinks=[tc.table], dry_run=True,
                                 say=lambda _: None)
    assert await snapshot(tc) == before
    assert not (tmp_path / "archive").exists()
    (plan,) = report.plans
    assert [s.partition for s in plan.steps] == old_partitions(tc)
    full = {f"{tc.table}_p{day(ago):%Y%m%d}" for ago in OLD_DAYS}
    assert {s.partition: (s.action, s.rows) for s in plan.steps} == {
        s.partition: ("archive+drop", PER_DAY) if s.partition in full else ("drop", 0)
        for s in plan.steps}
    assert plan.kept == 10  # days -2 … +7
    assert plan.stranded_rows == 7 and plan.stranded_oldest is not None
    assert report.results == []
    # The CLI prints the plan (and the DEFAULT rows) and changes nothing either.
    out = await asyncio.to_thread(cli, tc, tmp_path, "retention", "run", "--dry-run",
                                  "--sink", tc.table)
    assert out.returncode == 0, out.stderr
    assert "dry run" in out.stdout and old_partitions(tc)[0] in out.stdout
    assert "7 row(s) older than the horizon" in out.stdout
    assert await snapshot(tc) == before


async def test_run_archives_drops_and_restores(
        catalogue_factory: Callable[..., Any], tmp_path: Path, made: list[TestCatalogue]
) -> None:
    tc = await make_events(catalogue_factory, tmp_path, made)
    sink = tc.catalogue.sinks[tc.table]
    before = await snapshot(tc)
    async with pg(tc.settings) as conn:
        doomed = await table_rows(conn, sink, day(22), day(12))
        kept = await table_rows(conn, sink, day(12), day(-30))
    assert len(doomed) == len(OLD_DAYS) * PER_DAY

    report = await run_retention(tc.settings, tc.catalogue, sinks=[tc.table],
                                 say=lambda _: None)
    assert report.acquired and not report.failed
    assert [r.step.partition for r in report.results] == old_partitions(tc)
    after = await snapshot(tc)
    assert set(after) == set(before) - set(old_partitions(tc))
    assert {k: before[k] for k in after} == after  # the other partitions are untouched
    assert sum(r.rows for r in report.results) == len(doomed)

    # One verified archive per non-empty partition; together exactly the dropped rows.
    async with pg(tc.settings) as conn:
        archives = await list_archives(conn, [tc.table])
        assert await table_rows(conn, sink, day(12), day(-30)) == kept
    assert sorted(a.partition for a in archives) == sorted(
        f"{tc.table}_p{day(ago):%Y%m%d}" for ago in OLD_DAYS)
    assert all(a.dropped_at is not None and a.rows == PER_DAY for a in archives)
    root = tmp_path / "archive"
    archived = [rec for a in archives for rec in read_records(root / a.path)]
    key = lambda r: (r["event_id"], r["ts"])  # noqa: E731
    assert sorted(archived, key=key) == doomed  # field by field, types included
    assert all((root / (a.path + ".json")).is_file() for a in archives)

    # Restore two of the three days; then again: nothing is added the second time.
    window = (day(17), day(13))
    done = await restore_range(tc.settings, tc.catalogue, tc.table, *window,
                               say=lambda _: None)
    assert sum(d.inserted for d in done) == 2 * PER_DAY
    assert all(d.created_partition for d in done)
    again = await restore_range(tc.settings, tc.catalogue, tc.table, *window,
                                say=lambda _: None)
    assert sum(d.inserted for d in again) == 0
    assert sum(d.in_range for d in again) == 2 * PER_DAY
    async with pg(tc.settings) as conn:
        assert await table_rows(conn, sink, *window) == [
            r for r in doomed if window[0] <= r["ts"] < window[1]]

    # Retention holds what was just restored (for another `keep`).
    report = await run_retention(tc.settings, tc.catalogue, sinks=[tc.table],
                                 say=lambda _: None)
    assert report.results == []
    assert [s.action for s in report.plans[0].steps] == ["hold", "hold"]


async def test_concurrent_runs_do_not_both_act(
        catalogue_factory: Callable[..., Any], tmp_path: Path, made: list[TestCatalogue]
) -> None:
    tc = await make_events(catalogue_factory, tmp_path, made)
    before = await snapshot(tc)
    async with pg(tc.settings) as holder:  # another run holds the lock: this one does
        # nothing and says who holds it
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY)
        report = await run_retention(tc.settings, tc.catalogue, sinks=[tc.table],
                                     say=lambda _: None)
        assert not report.acquired and report.results == []
        assert report.holder and f"pid {holder.get_server_pid()}" in report.holder
        out = await asyncio.to_thread(cli, tc, tmp_path, "retention", "run", "--sink",
                                      tc.table)
        assert out.returncode == 1 and "holds the lock" in out.stderr, out.stderr
        assert await snapshot(tc) == before

    # Two runs at once: one acts, the other is refused; every partition goes once.
    reports = await asyncio.gather(*(run_retention(
        tc.settings, tc.catalogue, sinks=[tc.table], say=lambda _: None) for _ in range(2)))
    acted = [r for r in reports if r.results]
    assert len(acted) == 1
    assert len(acted[0].results) == len(old_partitions(tc))
    async with pg(tc.settings) as conn:
        assert len(await list_archives(conn, [tc.table])) == len(OLD_DAYS)


async def test_interrupted_run_is_finished(
        catalogue_factory: Callable[..., Any], tmp_path: Path, made: list[TestCatalogue]
) -> None:
    """A run that died after DETACH: the next one archives the detached table and
    drops it."""
    tc = await make_events(catalogue_factory, tmp_path, made)
    sink = tc.catalogue.sinks[tc.table]
    name = f"{tc.table}_p{day(16):%Y%m%d}"
    async with pg(tc.settings) as conn:
        await conn.execute(
            "INSERT INTO sinkfleet.retention_pending (table_schema, partition, sink,"
            " range_start, range_end) VALUES ('public', $1, $2, $3, $4)",
            name, tc.table, day(16), day(15))
        assert await detach(conn, sink, name, concurrently=False) == "plain"
    report = await run_retention(tc.settings, tc.catalogue, sinks=[tc.table],
                                 say=lambda _: None)
    (step,) = [r for r in report.results if r.step.partition == name]
    assert step.status == "done" and step.rows == PER_DAY and step.detached == "detached"
    assert step.archive is not None and step.archive.rows == PER_DAY
    async with pg(tc.settings) as conn:
        assert await conn.fetchval("SELECT to_regclass($1)", name) is None
        assert not await conn.fetchval("SELECT count(*) FROM sinkfleet.retention_pending"
                                       " WHERE sink = $1", tc.table)


async def test_rows_arriving_while_archiving_are_archived_too(
        catalogue_factory: Callable[..., Any], tmp_path: Path, made: list[TestCatalogue],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tc = await make_events(catalogue_factory, tmp_path, made)
    sink = tc.catalogue.sinks[tc.table]
    real = retention_run.archive_partition
    late = 0

    async def archive_then_late_row(*args: Any, **kwargs: Any) -> Any:
        nonlocal late
        archive = await real(*args, **kwargs)
        if archive is not None and archive.rows and not late:  # a replay writes old rows
            late = 3
            names, rows = event_rows(sink, archive.range_start + timedelta(hours=5), late, 7)
            async with pg(tc.settings) as conn:
                await insert_rows(conn, sink, names, rows)
        return archive

    monkeypatch.setattr(retention_run, "archive_partition", archive_then_late_row)
    report = await run_retention(tc.settings, tc.catalogue, sinks=[tc.table],
                                 say=lambda _: None)
    (again,) = [r for r in report.results if r.rearchived]
    assert again.archive is not None and again.archive.rows == again.rows == PER_DAY + late
    async with pg(tc.settings) as conn:
        archives = await list_archives(conn, [tc.table])
    assert sum(a.rows for a in archives) == len(OLD_DAYS) * PER_DAY + late
    files = {p.name for p in (tmp_path / "archive" / tc.table).iterdir()}
    assert len(files) == 2 * len(archives)  # the first, short archive was discarded


async def test_scheduled_mode_keeps_partitions_ahead(
        catalogue_factory: Callable[..., Any], tmp_path: Path, made: list[TestCatalogue]
) -> None:
    tc = await make_events(catalogue_factory, tmp_path, made)
    furthest = f"{tc.table}_p{day(-7):%Y%m%d}"
    async with pg(tc.settings) as conn:
        await conn.execute(f'DROP TABLE "{furthest}"')  # as if migrated a day ago
    log = tmp_path / "schedule.log"
    proc = start_schedule(tc, tmp_path, log)
    try:
        await asyncio.to_thread(wait_for, lambda: "cycle 2:" in log.read_text(), 120,
                                "two scheduled cycles")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    text = log.read_text()
    assert code == 0, text
    assert "created partitions" in text and furthest in text
    assert "cycle 1: 10 partition(s) dropped" in text
    assert "cycle 2: 0 partition(s) dropped" in text
    assert "stopped after" in text
    after = await snapshot(tc)
    assert furthest in after
    assert not set(old_partitions(tc)) & set(after)
    assert (tmp_path / "archive" / tc.table).is_dir()
