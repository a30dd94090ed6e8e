"""`sinkfleet stack up|down|status|env`: the local stack (logic in sinkfleet/stack/)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from sinkfleet.cli.base import console, friendly, run, say
from sinkfleet.config import load_settings

stack_app = typer.Typer(help="The local stack: Kafka (KRaft), PostgreSQL, Redis.",
                        no_args_is_help=True)


Only = Annotated[list[str] | None, typer.Option("--only", help="kafka, postgres or redis")]


@stack_app.command("up")
@friendly
def stack_up(only: Only = None) -> None:
    """Start Kafka, PostgreSQL and Redis (idempotent; waits until each answers)."""
    from sinkfleet.stack import manager

    run(manager.up(load_settings(), only, say))


@stack_app.command("down")
@friendly
def stack_down(only: Only = None) -> None:
    """Stop the services this stack started."""
    from sinkfleet.stack import manager

    manager.down(load_settings(), only, say)


@stack_app.command("status")
@friendly
def stack_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Health-check each service; exit 1 if any is down."""
    from sinkfleet.stack import manager

    statuses = run(manager.status(load_settings()))
    if as_json:
        print(json.dumps([s.__dict__ for s in statuses]))
    else:
        table = Table("service", "pid", "port", "healthy", "detail")
        for s in statuses:
            table.add_row(s.name, str(s.pid or "-"), str(s.port),
                          "[green]yes[/]" if s.healthy else "[red]no[/]", s.detail)
        console.print(table)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@stack_app.command("env")
@friendly
def stack_env() -> None:
    """Print shell exports for this stack (never passwords)."""
    from sinkfleet.stack import manager

    print("\n".join(manager.env_lines(load_settings())))
