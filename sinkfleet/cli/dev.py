"""`sinkfleet produce` and `sinkfleet demo`: synthetic loads for developers and demos."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sinkfleet.cli.base import console, friendly, run, say, settings_and_catalogue
from sinkfleet.config import load_settings


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
    from sinkfleet.ops.produce import produce_mixed, summary, synthetic_load

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
    from sinkfleet.ops.demo import run_demo

    ok = run(run_demo(load_settings(), count=count, workers=workers, console=console))
    if not ok:
        raise typer.Exit(1)
