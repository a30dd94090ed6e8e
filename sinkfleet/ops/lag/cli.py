"""`sinkfleet lag` and `sinkfleet lag-exporter`: lag per group/topic/partition."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Annotated

import typer

from sinkfleet.cli.base import console, err, friendly, run, say
from sinkfleet.config import load_settings
from sinkfleet.errors import SinkfleetError

Groups = Annotated[list[str] | None, typer.Option("--group", help="only these groups")]


@friendly
def lag(
    group: Groups = None,
    as_json: Annotated[bool, typer.Option("--json", help="one snapshot as JSON")] = False,
    watch: Annotated[bool, typer.Option(help="live table until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(min=0.5)] = 2.0,
    max_lag_seconds: Annotated[float | None, typer.Option(
        help="exit 1 if any group's oldest unconsumed record is older")] = None,
    partitions: Annotated[bool, typer.Option(help="show every partition")] = True,
) -> None:
    """Lag per group/topic/partition, in records and in seconds (exact, from timestamps)."""
    from rich.live import Live

    from sinkfleet.ops.lag.collect import LagCollector, Snapshot
    from sinkfleet.ops.lag.render import lag_table

    async def main() -> Snapshot:
        async with LagCollector(load_settings(), groups=group) as collector:
            snap = await collector.collect()
            if watch and not as_json:
                with Live(lag_table(snap, partitions=partitions), console=console) as live:
                    while True:
                        await asyncio.sleep(interval)
                        snap = await collector.collect()
                        live.update(lag_table(snap, partitions=partitions))
            return snap

    snap = run(main())
    if as_json:
        print(json.dumps(snap.as_dict()))
    else:
        console.print(lag_table(snap, partitions=partitions))
    if group:
        missing = set(group) - {g.group for g in snap.groups}
        if missing:
            raise SinkfleetError(f"no consumer group {sorted(missing)} in Kafka"
                                 " (see `sinkfleet lag` for all groups)")
    if max_lag_seconds is not None:
        late = [g.group for g in snap.groups if (g.lag_seconds or 0) > max_lag_seconds]
        if late:
            err.print(f"lag over {max_lag_seconds}s: {', '.join(late)}")
            raise typer.Exit(1)


@friendly
def lag_exporter(
    port: Annotated[int, typer.Option(min=0, max=65535)] = 9400,
    host: Annotated[str | None, typer.Option(
        help="listen address [default: SINKFLEET_EXPORTER_HOST or 127.0.0.1]")] = None,
    interval: Annotated[float, typer.Option(min=0.5, help="seconds between polls")] = 5.0,
    group: Groups = None,
    stall_seconds: Annotated[float, typer.Option(min=1)] = 60.0,
) -> None:
    """Serve lag of every group as /metrics, a JSON API (/api/lag) and a dashboard (/)."""
    from sinkfleet.ops.lag.exporter import LagExporter

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    async def main() -> None:
        # aiokafka clients must be built inside the running loop
        settings = load_settings()
        exporter = LagExporter(settings, interval=interval, groups=group,
                               stall_seconds=stall_seconds)
        bind = host or settings.exporter_host
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, exporter.stop)
        await exporter.run(bind, port, lambda p: say(
            f"lag exporter on http://{bind}:{p}/ (metrics /metrics, JSON /api/lag)"))

    run(main())
