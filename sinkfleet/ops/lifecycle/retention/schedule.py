"""`sinkfleet retention run --every 1h`: partition maintenance and retention on a
schedule, until SIGTERM.

Each cycle first creates the partitions every time-partitioned sink needs ahead of
now (``ensure_partitions``, what `db migrate` does, under the same lock), so a
long-running deployment keeps having partitions ahead without re-running migrations,
then runs retention. A failed cycle (PostgreSQL down, a lock not granted) is logged
and the next one runs on time: a scheduled job never dies of a bad hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, SinkfleetError
from sinkfleet.ops.lifecycle.compact import compact_closed
from sinkfleet.ops.lifecycle.partitions import migration_lock, table_exists
from sinkfleet.ops.lifecycle.retention.run import RunReport, run_retention
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, pg
from sinkfleet.sink.postgres.migrate import ensure_partitions

log = logging.getLogger("sinkfleet.retention")
_EVERY = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> timedelta:
    m = _EVERY.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"--every {text!r}: use e.g. 30s, 15m, 1h or 1d")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


async def maintain_partitions(settings: Settings, catalogue: Catalogue,
                              now: datetime | None = None) -> dict[str, list[str]]:
    """Create missing partitions (history … premake) of every partitioned sink whose
    table exists; return the names created per sink."""
    created: dict[str, list[str]] = {}
    async with pg(settings) as conn:
        for name in sorted(catalogue.sinks):
            sink = catalogue.sinks[name]
            if sink.spec.partitioning is None or not await table_exists(conn, sink):
                continue
            async with migration_lock(conn):
                made = await ensure_partitions(conn, sink, now)
            if made:
                created[name] = made
    return created


async def compact_partitions(settings: Settings, catalogue: Catalogue,
                             now: datetime | None = None) -> dict[str, list[str]]:
    """Pack the indexes of closed partitions of sinks with ``storage.compact``."""
    packed: dict[str, list[str]] = {}
    async with pg(settings) as conn:
        for name in sorted(catalogue.sinks):
            done = await compact_closed(conn, catalogue.sinks[name], now)
            if done:
                packed[name] = done
    return packed


def summary(report: RunReport) -> str:
    if not report.acquired:
        return f"skipped: another retention run holds the lock ({report.holder})"
    done = [r for r in report.results if r.status == "done"]
    copied = [r for r in done if r.step.action == "archive"]
    done = [r for r in done if r.step.action != "archive"]
    rows = sum(r.rows for r in done)
    archived = sum(r.archive.bytes for r in done if r.archive)
    stranded = sum(p.stranded_rows for p in report.plans)
    text = (f"{len(done)} partition(s) dropped ({rows:,} rows, {archived / 1048576:,.1f} MiB"
            f" archived), {len(report.failed)} failed")
    if copied:
        text += f"; {len(copied)} partition(s) of forever-kept sinks copied to the archive"
    summarised = sum(r.summary_rows for r in done)
    if summarised:
        text += f"; {summarised:,} summary row(s) written"
    if report.expired:
        text += (f"; past their keep: {sum(v[0] for v in report.expired.values()):,} summary"
                 f" row(s), {sum(v[1] for v in report.expired.values())} archive file(s)")
    if stranded:
        text += f"; {stranded:,} row(s) older than the horizon sit in DEFAULT partitions"
    if report.stopped:
        text += "; stopped early"
    return text


async def run_every(settings: Settings, catalogue: Catalogue, every: timedelta,
                    sinks: Sequence[str] | None, stop: asyncio.Event) -> int:
    """Cycle until ``stop`` is set; return the number of cycles that failed."""
    failures = cycle = 0
    log.info("retention every %s for %s; partitions ahead for every partitioned sink",
             every, ", ".join(sinks or ["every sink with a policy"]))
    while not stop.is_set():
        cycle += 1
        started = datetime.now(UTC)
        try:
            for name, made in (await maintain_partitions(settings, catalogue)).items():
                log.info("%s: created partitions %s … %s (%d)", name, made[0], made[-1],
                         len(made))
            for name, packed in (await compact_partitions(settings, catalogue)).items():
                log.info("%s: packed %d index(es) of closed partitions", name, len(packed))
            report = await run_retention(settings, catalogue, sinks=sinks, say=log.info,
                                         should_stop=stop.is_set)
            log.info("cycle %d: %s", cycle, summary(report))
            failures += bool(report.failed)
        except (*RETRIABLE_STORAGE, SinkfleetError, asyncpg.PostgresError) as exc:
            failures += 1
            log.error("cycle %d failed: %s: %s", cycle, type(exc).__name__, exc)
        if stop.is_set():
            break
        wake = started + every
        log.info("next cycle at %s", f"{wake:%Y-%m-%d %H:%M:%S}Z")
        with contextlib.suppress(TimeoutError):
            delay = max(0.0, (wake - datetime.now(UTC)).total_seconds())
            await asyncio.wait_for(stop.wait(), timeout=delay)
    log.info("stopped after %d cycle(s), %d failed", cycle, failures)
    return failures
