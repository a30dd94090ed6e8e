"""`sinkfleet worker`, `fleet`, `scale-advice`: run workers, one or a fleet, and size them."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Annotated

import typer

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.cli.base import console, err, friendly, run, settings_and_catalogue
from sinkfleet.config import load_settings
from sinkfleet.errors import CatalogueError, SinkfleetError


def _defer_stop_signals() -> list[int]:
    """Remember SIGTERM/SIGINT instead of dying by them (exit -15) until the worker's
    event loop handles them; returns the signals received meanwhile."""
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    return received


@friendly
def worker(
    spec: Annotated[str, typer.Option(help="worker spec name from workers/")],
    metrics_port: Annotated[int | None, typer.Option(
        help="port of /metrics, /healthz, /readyz (default SINKFLEET_METRICS_PORT, else a"
             " free port)", min=0, max=65535)] = None,
    log_level: Annotated[str, typer.Option()] = "INFO",
    instance_id: Annotated[str | None, typer.Option(
        envvar="SINKFLEET_WORKER_INSTANCE_ID",
        help="static group membership: a restart with the same id gets its partitions back"
             " at once (unique per worker of a group; a clean stop then keeps them for the"
             " session timeout)")] = None,
) -> None:
    """Run one worker process of a group until SIGTERM/SIGINT (then drain and exit 0)."""
    stops = _defer_stop_signals()  # first: a stop during start-up is a clean stop too
    from aiokafka.errors import KafkaConnectionError

    from sinkfleet.kafka import check_instance_id, explain_kafka_error
    from sinkfleet.worker.loop import Worker
    from sinkfleet.worker.progress import report_progress

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings, cat = settings_and_catalogue()
    port = metrics_port if metrics_port is not None else settings.metrics_port
    w = Worker(settings, cat, cat.worker(spec), metrics_port=port if port is not None else 0,
               instance_id=check_instance_id(instance_id))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, w.stop)
        if stops:
            logging.getLogger("sinkfleet.worker").info(
                "%s during start-up: stopping before consuming anything",
                signal.Signals(stops[0]).name)
            return
        reporter = asyncio.create_task(report_progress(w))
        try:
            await w.run()
        except KafkaConnectionError as exc:  # could not join: say why (auth, TLS, refused)
            raise SinkfleetError(await explain_kafka_error(settings, exc)) from None
        finally:
            reporter.cancel()

    run(main())
    _defer_stop_signals()  # the loop is closed (default handlers back): finish the report
    st = w.stats
    if w.undrained:
        logging.getLogger("sinkfleet.worker").warning(
            "stopped with records consumed but not stored (storage unavailable); they will"
            " be consumed again: consumed=%d stored=%d", st.consumed, st.stored)
        raise typer.Exit(3)
    logging.getLogger("sinkfleet.worker").info(
        "stopped cleanly: consumed=%d stored=%d duplicates_skipped=%d dead_lettered=%d",
        st.consumed, st.stored, st.duplicates_skipped, st.dead_lettered)



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
    from sinkfleet.ops.fleet_run import run_fleet

    settings, cat = settings_and_catalogue()
    group = cat.worker(spec).group
    code = run_fleet(settings, spec, workers, metrics_base_port=metrics_base_port,
                     max_restarts=max_restarts, restart_window=restart_window,
                     stop_timeout=stop_timeout, console=console, err=err,
                     group=group if static_membership else None)
    if code:
        raise typer.Exit(code)


# --- scale-advice -----------------------------------------------------------------------
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
    from sinkfleet.ops.scale_advice import advice_table, advise

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
