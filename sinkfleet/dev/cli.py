"""The developer commands: `sinkfleet stack up|down|status|env` (the local stack, in
sinkfleet/dev/stack/), `produce` (synthetic agent loads) and `demo`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sinkfleet.cli.base import console, friendly, run, say, settings_and_catalogue
from sinkfleet.config import load_settings

stack_app = typer.Typer(help="The local stack: Kafka (KRaft), PostgreSQL, Redis.",
                        no_args_is_help=True)


Only = Annotated[list[str] | None, typer.Option(
    "--only", help="kafka (every node), kafka-N (one node of a cluster), postgres or redis")]


@stack_app.command("up")
@friendly
def stack_up(
    only: Only = None,
    brokers: Annotated[int | None, typer.Option(
        min=1, max=9, help="Kafka nodes (combined broker/controller); 3 makes a replicated"
        " cluster. Decided once per state directory; default: as recorded, else 1")] = None,
) -> None:
    """Start Kafka, PostgreSQL and Redis (idempotent; waits until each answers; a cluster
    node that died is started again)."""
    from sinkfleet.dev.stack import manager

    run(manager.up(load_settings(), only, say, brokers=brokers))


@stack_app.command("down")
@friendly
def stack_down(only: Only = None) -> None:
    """Stop the services this stack started."""
    from sinkfleet.dev.stack import manager

    manager.down(load_settings(), only, say)


@stack_app.command("status")
@friendly
def stack_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Health-check each service and Kafka node, the controller quorum and
    under-replicated partitions; exit 1 if anything is down or under-replicated."""
    from sinkfleet.dev.stack import manager
    from sinkfleet.dev.stack.render import health_tables, status_table

    settings = load_settings()
    statuses = run(manager.status(settings))
    health = run(manager.kafka_health(settings))
    if as_json:
        print(json.dumps({"services": [s.__dict__ for s in statuses],
                          "kafka": health.as_dict()}))
    else:
        console.print(status_table(statuses))
        for renderable in health_tables(health):
            console.print(renderable)
    if not all(s.healthy for s in statuses) or health.under_replicated != []:
        raise typer.Exit(1)


@stack_app.command("env")
@friendly
def stack_env() -> None:
    """Print shell exports for this stack (never passwords)."""
    from sinkfleet.dev.stack import manager

    print("\n".join(manager.env_lines(load_settings())))


@friendly
def produce(
    family: Annotated[list[str], typer.Option(
        help="record family, e.g. experience_event (repeatable); `all`: every family,"
             " --count each; `mixed`: all of them interleaved as an agent platform"
             " produces them, --count in all")],
    count: Annotated[int, typer.Option(min=1, help="records to publish")] = 10_000,
    rate: Annotated[float | None, typer.Option(min=1, help="records per second")] = None,
    seed: Annotated[int, typer.Option(help="seed of the synthetic load")] = 0,
    agents: Annotated[int, typer.Option(min=1)] = 32,
) -> None:
    """Publish a realistic synthetic agent load."""
    from sinkfleet.dev.produce import produce_mixed, summary, synthetic_load

    settings, cat = settings_and_catalogue()
    load = synthetic_load(cat, family, count, seed=seed, agents=agents)
    with Progress(TextColumn("producing {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(load.label, total=load.total)
        result = run(produce_mixed(settings, cat, load.items, load.total, rate=rate,
                                   progress=lambda n: bar.advance(task, n)))
    say(summary(result))


@friendly
def demo(
    count: Annotated[int, typer.Option(
        min=1, help="records of a mixed agent load to publish (events, audit, state)")
    ] = 100_000,
    workers: Annotated[int, typer.Option(min=1, max=32, help="events workers")] = 2,
) -> None:
    """Stack up → topics → migrate → workers → mixed load → verify every family; exit 0
    iff every record is stored as its sink mode promises."""
    from sinkfleet.dev.demo import run_demo

    ok = run(run_demo(load_settings(), count=count, workers=workers, console=console))
    if not ok:
        raise typer.Exit(1)
