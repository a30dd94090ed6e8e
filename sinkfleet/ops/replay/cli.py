"""`sinkfleet replay plan|apply`: the typer sub-app (logic in ops/replay/plan.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sinkfleet.cli.base import console, friendly, run, say, settings_and_catalogue

if TYPE_CHECKING:
    from sinkfleet.ops.replay.plan import Plan

replay_app = typer.Typer(help="Replay topics safely: plan the offsets, then apply the plan.",
                         no_args_is_help=True)
Group = Annotated[str, typer.Option("--group", help="consumer group, e.g. sinkfleet.events")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout")]


def _table(plan: Plan) -> None:
    from rich.table import Table

    table = Table("topic", "partition", "current", "from", "target", "re-read", "log start",
                  "log end", title=f"replay plan for {plan.group}: {plan.target}")
    for p in plan.partitions:
        table.add_row(p.topic, str(p.partition), str(p.current), p.source, str(p.target),
                      f"{p.records:,}", str(p.log_start), str(p.log_end),
                      style="yellow" if p.warning else None)
    console.print(table)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"{plan.records:,} record(s) to re-read in {len(plan.partitions)}"
                  " partition(s)", highlight=False)


@replay_app.command("plan")
def replay_plan(
    group: Group,
    topic: Annotated[list[str] | None, typer.Option(
        help="topic (repeatable); default: every topic of the group's worker spec")] = None,
    partition: Annotated[list[int] | None, typer.Option(help="only these partitions")] = None,
    to_datetime: Annotated[str | None, typer.Option(
        help="ISO-8601 time with a timezone, e.g. 2026-11-25T09:00:00+00:00")] = None,
    to_offset: Annotated[int | None, typer.Option(min=0)] = None,
    shift_by: Annotated[int | None, typer.Option(help="e.g. -1000 to re-read 1000")] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="skip to the end")] = False,
    by_duration: Annotated[str | None, typer.Option(help="back from now: 90m, 2h, P1D")] = None,
    out: Annotated[Path | None, typer.Option(
        help="plan file (CSV topic,partition,offset, as kafka-consumer-groups"
             " --from-file reads); default replay-<group>-<time>.csv")] = None,
    as_json: AsJson = False,
) -> None:
    """Show where a group is and where the replay puts it; write the plan file."""
    from sinkfleet.ops.replay.plan import make_target, plan_replay

    @friendly
    def go() -> None:
        target = make_target(to_datetime=to_datetime, to_offset=to_offset, shift_by=shift_by,
                             to_earliest=to_earliest, to_latest=to_latest,
                             by_duration=by_duration)
        settings, catalogue = settings_and_catalogue()
        plan = run(plan_replay(settings, catalogue, group, topic, target, partition))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = out or Path(f"replay-{group}-{stamp}.csv")
        path.write_text(plan.to_csv())
        if as_json:
            print(json.dumps({**plan.as_dict(), "file": str(path)}, indent=2))
            return
        _table(plan)
        say(f"plan written to {path}; apply it with: sinkfleet replay apply {path}"
            f" --group {group} --execute")

    go()


@replay_app.command("apply")
def replay_apply(
    plan_file: Annotated[Path, typer.Argument(help="a plan written by `replay plan`")],
    group: Group,
    execute: Annotated[bool, typer.Option(
        "--execute", help="really move the offsets (default: a dry run)")] = False,
    stop_fleet: Annotated[bool, typer.Option(
        "--stop-fleet", help="hold the group: its workers store, leave, and rejoin after")
    ] = False,
    hold_lease: Annotated[float, typer.Option(
        min=3, help="seconds the hold outlives this command if it dies (renewed while it"
                    " runs)")] = 15.0,
    as_json: AsJson = False,
) -> None:
    """Move the group's offsets to the plan (PostgreSQL, then Kafka); dry run by default."""
    from sinkfleet.ops.replay.plan import apply_replay, read_plan_csv

    @friendly
    def go() -> None:
        offsets = read_plan_csv(plan_file)
        settings, _ = settings_and_catalogue()
        result = run(apply_replay(settings, group, offsets, execute=execute,
                                  stop_fleet=stop_fleet, hold_lease=hold_lease, say=say))
        if as_json:
            print(json.dumps(result.__dict__, indent=2))
        elif not execute:
            say(f"dry run: would move {result.partitions} partition(s) of {group}"
                f" ({result.records:,} record(s) to re-read); add --execute to apply")
        else:
            say(f"moved {result.partitions} partition(s) of {group}: {result.records:,}"
                f" record(s) will be re-read (replay #{result.replay_id};"
                f" Kafka commit {'ok' if result.kafka_committed else 'skipped'})")

    go()


Sinks = Annotated[list[str], typer.Option("--sink", help="sink from sinks/ (repeatable)")]
Into = Annotated[str, typer.Option("--into", help="the shadow schema (dropped and rebuilt)")]


@replay_app.command("shadow")
def replay_shadow(
    sink: Sinks,
    into: Into = "sinkfleet_shadow",
    from_datetime: Annotated[str | None, typer.Option(
        help="start at this ISO-8601 time (with a timezone); default: the earliest record")
    ] = None,
    by_duration: Annotated[str | None, typer.Option(help="start this far back: 2h, P1D")
                           ] = None,
) -> None:
    """Consume the sinks' topics up to their current end into a separate schema."""
    from sinkfleet.ops.replay.plan import make_target
    from sinkfleet.ops.replay.shadow import run_shadow

    @friendly
    def go() -> None:
        start = make_target(to_datetime=from_datetime, by_duration=by_duration,
                            to_earliest=from_datetime is None and by_duration is None)
        settings, catalogue = settings_and_catalogue()
        result = run(run_shadow(settings, catalogue, sink, start=start, schema=into, say=say))
        say(f"shadow replay done in {result.seconds:.1f}s: {result.records:,} record(s),"
            f" {result.stored:,} row(s) stored in schema {into},"
            f" {result.dead_lettered} dead letter(s) (not sent)")
        for line in result.dead_samples:
            say(f"  dead letter: {line}")
        say(f"compare with the live tables: sinkfleet replay verify --into {into}"
            + "".join(f" --sink {s}" for s in sink))

    go()


@replay_app.command("verify")
def replay_verify(sink: Sinks, into: Into = "sinkfleet_shadow", as_json: AsJson = False
                  ) -> None:
    """Compare the shadow tables with the live ones; exit 1 if they differ."""
    from rich.table import Table

    from sinkfleet.ops.replay.shadow import verify_shadow

    @friendly
    def go() -> None:
        settings, catalogue = settings_and_catalogue()
        diffs = run(verify_shadow(settings, catalogue, sink, schema=into))
        if as_json:
            print(json.dumps([{**d.__dict__, "ok": d.ok} for d in diffs], indent=2,
                             default=str))
        else:
            table = Table("sink", "shadow rows", "identical", "different", "missing in live",
                          "only in live", title=f"shadow schema {into} vs live")
            for d in diffs:
                table.add_row(d.sink, f"{d.shadow_rows:,}", f"{d.identical:,}",
                              f"{d.different:,}", f"{d.missing_live:,}", f"{d.only_live:,}",
                              style=None if d.ok else "red")
            console.print(table)
            for d in diffs:
                for sample in d.samples:
                    console.print(f"  {d.sink}: {sample}", highlight=False)
        if not all(d.ok for d in diffs):
            raise typer.Exit(1)

    go()
