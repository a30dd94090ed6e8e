"""`sinkfleet retention run` and `sinkfleet archive list|restore` (typer sub-apps).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from sinkfleet.cli.base import console, err, friendly, run, say, settings_and_catalogue
from sinkfleet.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

    from sinkfleet.ops.archive.store import ArchiveFile
    from sinkfleet.ops.retention.run import RunReport

retention_app = typer.Typer(help="Retention: archive, detach and drop old time partitions.",
                            no_args_is_help=True)
archive_app = typer.Typer(help="The cold archive that retention writes (Avro files).",
                          no_args_is_help=True)
Sinks = Annotated[list[str] | None, typer.Option(
    "--sink", help="only this sink (repeatable); default: every sink with a policy")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout")]


def parse_when(option: str, text: str) -> datetime:

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not an ISO-8601 time, e.g."
                          " 2026-11-25T09:30:00+00:00") from None
    if when.tzinfo is None:
        raise ConfigError(f"{option} {text!r} has no timezone: add one, e.g. {text}+00:00")
    return when


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _range(start: datetime, end: datetime) -> str:
    return f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}"


def plan_table(report: RunReport) -> Table:
    from rich.table import Table

    title = f"retention plan at {report.now:%Y-%m-%d %H:%M:%S}Z"
    table = Table("sink", "partition", "range (UTC)", "rows", "bytes", "action", "note",
                  title=title + (" (dry run: nothing changes)" if report.dry_run else ""))
    for plan in report.plans:
        for s in plan.steps:
            table.add_row(s.sink, s.partition, _range(s.start, s.end), f"{s.rows or 0:,}",
                          _size(s.bytes), s.action, s.note,
                          style="dim" if s.action in ("hold", "skip") else None)
    return table


def print_plan(report: RunReport) -> None:
    console.print(plan_table(report))
    for p in report.plans:
        say(f"{p.sink}: keep {p.keep}{' then archive' if p.archive else ''}, horizon"
            f" {p.horizon:%Y-%m-%d %H:%M}Z: {len(p.acting)} partition(s) to go,"
            f" {p.kept} kept")
        if p.stranded_rows:
            assert p.stranded_oldest is not None
            console.print(
                f"[yellow]warning:[/] {p.sink}: {p.stranded_rows:,} row(s) older than the"
                f" horizon (oldest {p.stranded_oldest:%Y-%m-%d %H:%M}Z) sit in the DEFAULT"
                " partition: retention never deletes rows, inspect and move or delete them"
                " by hand", highlight=False)


@retention_app.command("run")
def retention_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, change nothing")
                       ] = False,
    sink: Sinks = None,
    now: Annotated[str | None, typer.Option(
        help="plan as if it were this time (ISO-8601 with a timezone)")] = None,
    every: Annotated[str | None, typer.Option(
        "--every", "--schedule", help="run every 30m, 1h, 1d … until SIGTERM, creating"
                                      " partitions ahead first in each cycle")] = None,
    as_json: AsJson = False,
    log_level: Annotated[str, typer.Option(help="with --every")] = "INFO",
    nice: Annotated[int, typer.Option(
        min=0, max=19, help="lower this process's CPU priority by this much, so archiving"
                            " yields the CPU to workers on the same host")] = 10,
) -> None:
    """Archive (if the sink asks), detach and drop partitions older than the sink's
    `retention.keep`; the plan is printed first. One run at a time (advisory lock)."""
    from sinkfleet.ops.retention.run import run_retention
    from sinkfleet.ops.retention.schedule import summary

    @friendly
    def go() -> None:
        if nice and not dry_run:
            os.nice(nice)
        if every is not None:
            if now is not None or dry_run or as_json:
                raise ConfigError("--every runs on the clock: it takes neither --now,"
                                  " --dry-run nor --json")
            _scheduled(every, sink, log_level)
            return
        when = parse_when("--now", now) if now else None
        settings, catalogue = settings_and_catalogue()
        report = run(run_retention(
            settings, catalogue, sinks=sink, now=when, dry_run=dry_run,
            say=(lambda m: err.print(m, highlight=False)) if as_json else say,
            on_plan=None if as_json else print_plan))
        if as_json:
            print(json.dumps(report.as_dict(), indent=2))
        elif not report.acquired:
            err.print(f"[yellow]another retention run holds the lock[/] ({report.holder});"
                      " nothing was done", highlight=False)
        elif not dry_run:
            say(summary(report))
        if not report.acquired or report.failed:
            raise typer.Exit(1)

    go()


def _scheduled(every: str, sinks: list[str] | None, log_level: str) -> None:
    import asyncio
    import logging
    import signal
    import sys

    from sinkfleet.ops.retention.run import retention_sinks
    from sinkfleet.ops.retention.schedule import parse_every, run_every

    interval = parse_every(every)
    settings, catalogue = settings_and_catalogue()
    retention_sinks(catalogue, sinks)  # unknown sinks fail now, not in an hour
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_every(settings, catalogue, interval, sinks, stop)

    run(main())


def archive_table(archives: list[ArchiveFile]) -> Table:
    from rich.table import Table

    table = Table("id", "sink", "partition", "range (UTC)", "rows", "size", "B/row", "codec",
                  "sha256", "dropped", "restored", title="cold archive (paths: --json)")
    for a in archives:
        table.add_row(str(a.id), a.sink, a.partition, _range(a.range_start, a.range_end),
                      f"{a.rows:,}", _size(a.bytes),
                      f"{a.bytes_per_row:.1f}" if a.bytes_per_row else "-", a.codec,
                      a.sha256[:12], f"{a.dropped_at:%Y-%m-%d %H:%M}" if a.dropped_at else "-",
                      f"{a.restored_at:%Y-%m-%d %H:%M}" if a.restored_at else "-")
    return table


@archive_app.command("list")
def archive_list(sink: Sinks = None, as_json: AsJson = False) -> None:
    """Every archived partition: range, rows, size, checksum, when dropped/restored."""
    from sinkfleet.ops.archive.store import list_archives
    from sinkfleet.sink.postgres.connect import connect

    @friendly
    def go() -> None:
        settings, _ = settings_and_catalogue()

        async def fetch() -> list[ArchiveFile]:
            conn = await connect(settings)
            try:
                return await list_archives(conn, sink)
            finally:
                await conn.close()

        archives = run(fetch())
        if as_json:
            print(json.dumps([a.as_dict() | {"file": str(settings.archive / a.path)}
                              for a in archives], indent=2))
            return
        console.print(archive_table(archives))
        total = sum(a.bytes for a in archives)
        rows = sum(a.rows for a in archives)
        say(f"{len(archives)} archive file(s), {rows:,} rows, {_size(total)}"
            f"{f', {total / rows:.1f} B/row' if rows else ''} under {settings.archive}")

    go()


@archive_app.command("restore")
def archive_restore(
    sink: Annotated[str, typer.Option("--sink", help="the sink whose rows to bring back")],
    from_: Annotated[str, typer.Option("--from", help="ISO-8601 with a timezone (inclusive)")],
    to: Annotated[str, typer.Option("--to", help="ISO-8601 with a timezone (exclusive)")],
    as_json: AsJson = False,
) -> None:
    """Bring archived rows of [--from, --to) back into PostgreSQL (partitions re-created
    as needed; idempotent: rows already there are skipped)."""
    from sinkfleet.ops.archive.restore import restore_range

    @friendly
    def go() -> None:
        start, end = parse_when("--from", from_), parse_when("--to", to)
        settings, catalogue = settings_and_catalogue()
        done = run(restore_range(settings, catalogue, sink, start, end,
                                 say=(lambda m: err.print(m, highlight=False))
                                 if as_json else say))
        if as_json:
            print(json.dumps([d.as_dict() for d in done], indent=2))
            return
        say(f"restored {sum(d.inserted for d in done):,} row(s) of {sink} from"
            f" {len(done)} archive file(s); {sum(d.in_range - d.inserted for d in done):,}"
            " were there already")

    go()
