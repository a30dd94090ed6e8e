"""`sinkfleet retention run`: plan every sink with a policy, show the plan, then act.

One run at a time: a run holds ``RETENTION_LOCK_KEY`` (pg_try_advisory_lock) for as
long as it acts; a second run finds it taken and does nothing. It is a key of its
own rather than `db migrate`'s ``MIGRATION_LOCK_KEY`` because archiving a large
partition takes minutes, and a deploy's migration should not wait behind it (nor a
retention run be refused while a migration runs). Each DDL step on a parent table
(detach, and the partition maintenance of scheduled runs) takes the migration key
as well, briefly, so those never interleave with a migration's own.

Per partition: archive it (if asked; verified), record it as pending, DETACH it,
count its rows again (a detached table takes no more rows: a late row that slipped
in after the archive makes the run archive the detached table again), then DROP it
and record the archive in one transaction. Never a DELETE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, SinkfleetError
from sinkfleet.ops.lifecycle.archive.store import (
    ArchiveFile,
    archive_partition,
    discard,
    record,
    require_archive_table,
)
from sinkfleet.ops.lifecycle.partitions import (
    RetentionError,
    count_rows,
    default_partition,
    detach,
    list_partitions,
    qualified,
    relation_state,
    stranded,
    table_exists,
)
from sinkfleet.ops.lifecycle.retention.plan import SinkPlan, Step, plan_sink
from sinkfleet.ops.lifecycle.retention.tiers import (
    copy_partition,
    count_tier_expiry,
    expire_archives,
    expire_summary,
    last_archived_rows,
    require_summary_table,
    summarise,
)
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.summary_sql import has_summary

RETENTION_LOCK_KEY = 0x53_4E_4B_52  # "SNKR"; MIGRATION_LOCK_KEY is "SNKF"
APPLICATION_NAME = "sinkfleet retention"


@dataclass
class StepResult:
    step: Step
    status: Literal["done", "failed", "stopped"]
    rows: int = 0  # rows dropped
    detached: str = ""  # plain, concurrently, finalized, detached (earlier), gone
    archive: ArchiveFile | None = None
    rearchived: bool = False  # rows arrived after the first archive: archived again
    summary_rows: int = 0  # summary part rows written in the drop's transaction
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step.as_dict(), "status": self.status, "rows": self.rows,
                "detached": self.detached, "rearchived": self.rearchived,
                "summary_rows": self.summary_rows,
                "seconds": round(self.seconds, 3), "error": self.error,
                "archive": self.archive.as_dict() if self.archive else None}


@dataclass
class RunReport:
    now: datetime
    dry_run: bool
    plans: list[SinkPlan] = field(default_factory=list)
    results: list[StepResult] = field(default_factory=list)
    acquired: bool = True  # False: another run held the lock; nothing was done
    holder: str | None = None
    stopped: bool = False
    # sink -> (summary part rows deleted, archive files deleted) past their tier's keep
    expired: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def failed(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "dry_run": self.dry_run,
                "acquired": self.acquired, "holder": self.holder, "stopped": self.stopped,
                "plans": [p.as_dict() for p in self.plans],
                "results": [r.as_dict() for r in self.results],
                "expired": {k: {"summary_rows": v[0], "archive_files": v[1]}
                            for k, v in self.expired.items()}}


def retention_sinks(catalogue: Catalogue, names: Sequence[str] | None = None) -> list[Sink]:
    """The sinks to run: ``names`` (each must have a policy), else all with one."""
    if not names:
        return [s for _, s in sorted(catalogue.sinks.items()) if s.spec.retention]
    out = []
    for name in names:
        if name not in catalogue.sinks:
            known = ", ".join(sorted(catalogue.sinks)) or "none"
            raise ConfigError(f"--sink {name}: no such sink in sinks/ (known: {known})")
        sink = catalogue.sinks[name]
        if sink.spec.retention is None:
            raise ConfigError(f"--sink {name}: the sink has no 'retention:' section in"
                              " sinks/ (e.g. retention: {keep: 7d, archive: true})")
        out.append(sink)
    return out


async def make_plans(conn: asyncpg.Connection, sinks: Sequence[Sink], now: datetime
                     ) -> list[SinkPlan]:
    plans = []
    for sink in sinks:
        if not await table_exists(conn, sink):
            raise RetentionError(f"table {sink.spec.qualified_table} of sink {sink.spec.name}"
                                 " does not exist: run `sinkfleet db migrate`")
        await require_summary_table(conn, sink)
        restored = {r["partition"]: r["at"] for r in await conn.fetch(
            "SELECT partition, max(restored_at) AS at FROM sinkfleet.archives"
            " WHERE sink = $1 AND restored_at IS NOT NULL GROUP BY partition",
            sink.spec.name)}
        pending = {r["partition"]: (r["range_start"], r["range_end"]) for r in await conn.fetch(
            "SELECT partition, range_start, range_end FROM sinkfleet.retention_pending"
            " WHERE table_schema = $1 AND sink = $2", sink.spec.db_schema, sink.spec.name)}
        plan = plan_sink(sink, await list_partitions(conn, sink), now, restored, pending)
        archived = await last_archived_rows(conn, sink) if any(
            s.action == "archive" for s in plan.steps) else {}
        steps = []
        for step in plan.steps:
            if step.action == "skip":
                steps.append(step)
                continue
            gone = await relation_state(conn, sink, step.partition) == "gone"
            rows = 0 if gone else await count_rows(conn, sink.spec.db_schema, step.partition)
            if step.action == "archive":  # a copy: only if it has rows not yet archived
                if not rows or archived.get(step.partition) == rows:
                    plan.kept += 1
                    continue
            elif "archive" in step.action and not rows:
                step = replace(step, action="drop", note=step.note or "empty: nothing to archive")
            steps.append(replace(step, rows=rows))
        plan.steps = steps
        if sink.spec.retention is not None and sink.spec.retention.detail_delta is not None:
            plan.stranded_rows, plan.stranded_oldest = await stranded(conn, sink, plan.horizon)
        await count_tier_expiry(conn, sink, plan)
        plans.append(plan)
    return plans


async def lock_holder(conn: asyncpg.Connection) -> str | None:
    row = await conn.fetchrow(
        "SELECT a.pid, a.application_name, a.client_addr::text AS addr, a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND (l.classid::bigint << 32 | l.objid::bigint) = $1", RETENTION_LOCK_KEY)
    if row is None:
        return None
    return (f"pid {row['pid']} ({row['application_name'] or 'unnamed'}"
            f"{' from ' + row['addr'] if row['addr'] else ''}, connected"
            f" {row['backend_start']:%Y-%m-%d %H:%M:%S}Z)")


async def run_retention(settings: Settings, catalogue: Catalogue, *,
                        sinks: Sequence[str] | None = None, now: datetime | None = None,
                        dry_run: bool = False, say: Callable[[str], None] = print,
                        on_plan: Callable[[RunReport], None] | None = None,
                        should_stop: Callable[[], bool] = lambda: False) -> RunReport:
    """Plan (and unless ``dry_run``, act on) every sink with a retention policy."""
    chosen = retention_sinks(catalogue, sinks)
    report = RunReport(now or datetime.now(UTC), dry_run)
    async with pg(settings) as conn:
        await conn.execute(f"SET application_name = '{APPLICATION_NAME}'")
        await require_archive_table(conn)
        if not dry_run and not await conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                                   RETENTION_LOCK_KEY):
            report.acquired, report.holder = False, await lock_holder(conn)
            return report
        try:
            report.plans = await make_plans(conn, chosen, report.now)
            if on_plan is not None:
                on_plan(report)
            if not dry_run:
                await _act(conn, settings.archive, catalogue, report, say, should_stop)
        finally:
            if not dry_run:
                await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_KEY)
    return report


async def _act(conn: asyncpg.Connection, root: Path, catalogue: Catalogue, report: RunReport,
               say: Callable[[str], None], should_stop: Callable[[], bool]) -> None:
    for plan in report.plans:
        sink = catalogue.sinks[plan.sink]
        for step in plan.acting:
            if should_stop():
                report.stopped = True
                return
            t0 = time.monotonic()
            try:
                if step.action == "archive":
                    result = await _copy(conn, root, sink, step, say)
                else:
                    result = await retire(conn, root, sink, step, say, should_stop)
            except (SinkfleetError, OSError, asyncpg.PostgresError) as exc:
                result = StepResult(step, "failed", error=f"{type(exc).__name__}: {exc}")
                say(f"{step.sink} {step.partition}: FAILED: {result.error}")
            result.seconds = time.monotonic() - t0
            report.results.append(result)
            if result.status == "stopped":
                report.stopped = True
                return
        await _expire(conn, root, sink, plan, report, say)


async def _expire(conn: asyncpg.Connection, root: Path, sink: Sink, plan: SinkPlan,
                  report: RunReport, say: Callable[[str], None]) -> None:
    """Summary windows and archive files past their tier's keep (after the drops, so a
    summary written this run for old detail goes too when it is already too old)."""
    rows = files = 0
    if plan.summary_horizon is not None and has_summary(sink):
        rows = await expire_summary(conn, sink, plan.summary_horizon)
    if plan.archives_expiring:
        files = await expire_archives(conn, root, plan.archives_expiring)
    if rows or files:
        report.expired[plan.sink] = (rows, files)
        say(f"{plan.sink}: {rows:,} summary row(s) and {files} archive file(s) past their"
            " tier's keep deleted")


async def _copy(conn: asyncpg.Connection, root: Path, sink: Sink, step: Step,
                say: Callable[[str], None]) -> StepResult:
    archive = await copy_partition(conn, root, sink, step)
    if archive is not None:
        say(f"{sink.spec.name} {step.partition}: copied {archive.rows:,} rows →"
            f" {archive.path} (detail is kept forever)")
    return StepResult(step, "done", 0, "kept", archive)


def _mib(n: int) -> str:
    return f"{n / 1048576:,.1f} MiB"


async def retire(conn: asyncpg.Connection, root: Path, sink: Sink, step: Step,
                 say: Callable[[str], None], should_stop: Callable[[], bool]) -> StepResult:
    """Archive (if the policy asks), detach and drop one partition."""
    spec = sink.spec
    assert spec.retention is not None
    schema, name = spec.db_schema, step.partition
    state = await relation_state(conn, sink, name)
    if state == "gone":  # recorded as pending by a run that dropped it, or by hand
        await _unmark(conn, schema, name)
        return StepResult(step, "done", detached="gone")
    if has_summary(sink) and state == "attached":
        # Summarise while the rows are still visible: if it fails, nothing changed.
        # The drop's transaction writes it again from the detached (static) table.
        async with conn.transaction():
            await summarise(conn, sink, name)
    archive: ArchiveFile | None = None
    if spec.retention.archives and state == "attached" and step.rows:
        # Archive while the rows are still visible: if archiving fails, nothing changed.
        archive = await archive_partition(conn, root, sink, name, step.start, step.end,
                                          should_stop)
        if archive is None:
            return StepResult(step, "stopped")
        say(f"{spec.name} {name}: archived {archive.rows:,} rows → {archive.path}"
            f" ({_mib(archive.bytes)}, {archive.bytes / max(1, archive.rows):.1f} B/row,"
            f" {archive.codec}) in {archive.seconds:.1f}s")
    await conn.execute(
        "INSERT INTO sinkfleet.retention_pending (table_schema, partition, sink, range_start,"
        " range_end) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        schema, name, spec.name, step.start, step.end)
    has_default = await relation_state(conn, sink, default_partition(sink)) == "attached"
    how = await detach(conn, sink, name, concurrently=not has_default)
    rows = await count_rows(conn, schema, name)  # detached: no row can arrive any more
    rearchived = False
    if spec.retention.archives and (archive is None or archive.rows != rows):
        rearchived = archive is not None
        if archive is not None:
            say(f"{spec.name} {name}: {rows - archive.rows:+,} rows arrived while archiving;"
                " archiving the detached partition again")
            discard(root, archive)
            archive = None
        if rows:
            archive = await archive_partition(conn, root, sink, name, step.start, step.end)
            assert archive is not None
    summary_rows = 0
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '30s'")
        if has_summary(sink):  # the summary is stored by the transaction that drops
            summary_rows = await summarise(conn, sink, name)
        await conn.execute(f"DROP TABLE {qualified(schema, name)}")
        if archive is not None:
            archive = await record(conn, archive, dropped=True)
        await _unmark(conn, schema, name)
    say(f"{spec.name} {name}: detached ({how}) and dropped, {rows:,} rows"
        f" [{step.start:%Y-%m-%d %H:%M}, {step.end:%Y-%m-%d %H:%M})")
    return StepResult(step, "done", rows, how, archive, rearchived, summary_rows)


async def _unmark(conn: asyncpg.Connection, schema: str, name: str) -> None:
    await conn.execute("DELETE FROM sinkfleet.retention_pending WHERE table_schema = $1"
                       " AND partition = $2", schema, name)
