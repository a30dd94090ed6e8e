"""`sinkfleet rollups`: per-minute and per-hour roll-ups (logic in sinkfleet/rollups/)."""

from __future__ import annotations

from typing import Annotated

import typer

from sinkfleet.cli.base import friendly, settings_and_catalogue


@friendly
def rollups(
    family: Annotated[list[str] | None, typer.Option(
        help="learning_metric or worker_event (repeatable); default: both, where the"
             " catalogue has a topic for them")] = None,
    app_id: Annotated[str, typer.Option(
        help="faust app id: consumer group and changelog topic prefix")] = "sinkfleet-rollups",
    grace_seconds: Annotated[float, typer.Option(
        min=0, help="close a window when its partition's event time is this far past its"
                    " end")] = 120.0,
    flush_interval: Annotated[float, typer.Option(
        min=0.1, help="seconds between writes of open windows")] = 5.0,
    commit_interval: Annotated[float, typer.Option(
        min=0.1, help="seconds between Kafka offset commits")] = 2.8,
    web_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="serve faust's web views on this port (default: off)")] = None,
    instance_id: Annotated[str | None, typer.Option(
        help="static group membership (unique per process): a restarted process gets its"
             " partitions back at once instead of after the session timeout")] = None,
    log_level: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Per-minute and per-hour roll-ups (faust) into PostgreSQL summary tables; exactly once
    in effect across restarts (docs/rollups.md). Runs until SIGTERM/SIGINT."""
    from sinkfleet.kafka.client import check_instance_id
    from sinkfleet.rollups.app import RollupOptions
    from sinkfleet.rollups.run import run_rollups

    settings, cat = settings_and_catalogue()
    options = RollupOptions(app_id=app_id, families=tuple(family or RollupOptions.families),
                            grace_seconds=grace_seconds, flush_interval=flush_interval,
                            commit_interval=commit_interval, web_port=web_port,
                            instance_id=check_instance_id(instance_id))
    run_rollups(settings, cat, options, explicit=bool(family), log_level=log_level)
