"""`sinkfleet fleet` (run N workers of a spec, supervised) and `scale-advice` (how many
a group needs)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.cli.base import console, err, friendly, run, settings_and_catalogue
from sinkfleet.config import load_settings
from sinkfleet.errors import CatalogueError


@friendly
def fleet(
    spec: Annotated[str, typer.Option(help="worker spec name from workers/")],
    workers: Annotated[int, typer.Option(min=1, max=1024, help="worker processes")],
    metrics_base_port: Annotated[int, typer.Option(
        min=0, max=65535, help="worker i serves /metrics on this port + i (0: each picks a"
                               " free port)")] = 9301,
    max_restarts: Annotated[int, typer.Option(
        min=0, help="give a slot up after more restarts than this within --restart-window")] = 5,
    restart_window: Annotated[float, typer.Option(min=1, help="seconds")] = 60.0,
    stop_timeout: Annotated[float, typer.Option(
        min=0, help="seconds to wait for each worker after SIGTERM, then SIGKILL")] = 60.0,
    static_membership: Annotated[bool, typer.Option(
        "--static-membership/--dynamic-membership",
        help="give each slot a static group member id, so a restarted worker gets its"
             " partitions back at once (no rebalance); with --dynamic-membership every"
             " start rebalances the group")] = True,
) -> None:
    """Run N workers of a spec: restart crashed ones (back-off, crash-loop guard); on
    SIGTERM/SIGINT stop them all (exit 0 iff all exited 0)."""
    from sinkfleet.ops.fleet.run import run_fleet

    settings, cat = settings_and_catalogue()
    group = cat.worker(spec).group
    code = run_fleet(settings, spec, workers, metrics_base_port=metrics_base_port,
                     max_restarts=max_restarts, restart_window=restart_window,
                     stop_timeout=stop_timeout, console=console, err=err,
                     group=group if static_membership else None)
    if code:
        raise typer.Exit(code)


@friendly
def scale_advice(
    group: Annotated[str, typer.Option(help="consumer group")],
    window: Annotated[float, typer.Option(min=0.5, help="seconds between the two samples")
                      ] = 10.0,
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", help="a worker's /metrics URL (repeat, or comma-separate, one per"
                          " worker): per-worker throughput from its counters")] = None,
    per_worker_rate: Annotated[float | None, typer.Option(
        min=0.001, help="records/s one worker handles (skips measuring it)")] = None,
    drain_seconds: Annotated[float, typer.Option(min=1, help="clear the lag within")] = 300.0,
    headroom: Annotated[float, typer.Option(min=0.05, max=1.0,
                                            help="plan each worker at this fraction")] = 0.8,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """How many workers a group needs: ingress + lag/drain over per-worker throughput."""
    from sinkfleet.ops.fleet.advice import advice_table, advise

    settings = load_settings()
    try:
        cat: Catalogue | None = load_catalogue(settings.home)
    except CatalogueError:
        cat = None  # groups are found in Kafka and PostgreSQL too
    urls = [u.strip() for m in metrics or [] for u in m.split(",") if u.strip()]
    if not as_json:
        err.print(f"sampling group {group} for {window:g}s …", highlight=False)
    report = run(advise(settings, cat, group, window=window, metrics=urls,
                        per_worker_rate=per_worker_rate, drain_seconds=drain_seconds,
                        headroom=headroom))
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        console.print(advice_table(report))
