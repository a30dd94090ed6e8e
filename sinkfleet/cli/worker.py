"""`sinkfleet worker`: run one worker of a spec (a fleet of them: ops/fleet/cli.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated

import typer

from sinkfleet.cli.base import friendly, run, settings_and_catalogue
from sinkfleet.errors import SinkfleetError


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

    from sinkfleet.kafka.client import check_instance_id, explain_kafka_error
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
