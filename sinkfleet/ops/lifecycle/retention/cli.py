"""`sinkfleet retention run` (a typer sub-app; the archive it writes: archive/cli.py)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated

import typer

from sinkfleet.cli.base import console, err, friendly, run, say, settings_and_catalogue
from sinkfleet.errors import ConfigError
from sinkfleet.ops.lifecycle.options import AsJson, Sinks, parse_when, range_text, size_text

if TYPE_CHECKING:
    from rich.table import Table

    from sinkfleet.ops.lifecycle.retention.run import RunReport

retention_app = typer.Typer(help="Retention: archive, detach and drop old time partitions.",
                            no_args_is_help=True)
def plan_table(report: RunReport) -> Table:
    from rich.table import Table

    title = f"retention plan at {report.now:%Y-%m-%d %H:%M:%S}Z"
    table = Table("sink", "partition", "range (UTC)", "rows", "bytes", "action", "note",
                  title=title + (" (dry run: nothing changes)" if report.dry_run else ""))
    for plan in report.plans:
        for s in plan.steps:
            table.add_row(s.sink, s.partition, range_text(s.start, s.end), f"{s.rows or 0:,}",
                          size_text(s.bytes), s.action, s.note,
                          style="dim" if s.action in ("hold", "skip") else None)
    return table


def print_plan(report: RunReport) -> None:
    console.print(plan_table(report))
    for p in report.plans:
        say(f"{p.sink}: {p.keep}, horizon {p.horizon:%Y-%m-%d %H:%M}Z:"
            f" {len(p.acting)} partition(s) to go, {p.kept} kept"
            + (f"; {p.summary_expiring:,} summary row(s) and {len(p.archives_expiring)}"
               " archive file(s) past their keep" if p.summary_expiring
               or p.archives_expiring else ""))
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
    from sinkfleet.ops.lifecycle.retention.run import run_retention
    from sinkfleet.ops.lifecycle.retention.schedule import summary

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

    from sinkfleet.ops.lifecycle.retention.run import retention_sinks
    from sinkfleet.ops.lifecycle.retention.schedule import parse_every, run_every

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
