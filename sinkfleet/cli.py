"""One entry point: `sinkfleet SUBCOMMAND`. Subcommands parse, call, print."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sinkfleet.cache.cli import cache_app
from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.ops.audit_cli import audit_app
from sinkfleet.ops.backup.cli import backup_cmd, restore_cmd
from sinkfleet.ops.dlq_cli import dlq_app
from sinkfleet.ops.replay_cli import replay_app
from sinkfleet.ops.retention.cli import archive_app, retention_app
from sinkfleet.ops.schemas_cli import schemas_app
from sinkfleet.ops.stats.cli import stats_cmd
from sinkfleet.read.cli import query_app

T = TypeVar("T")
app = typer.Typer(help="sinkfleet: Avro over Kafka into PostgreSQL and Redis.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The local stack: Kafka (KRaft), PostgreSQL, Redis.",
                        no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics from topics/.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL schema.", no_args_is_help=True)
catalogue_app = typer.Typer(help="The catalogue: schemas/, topics/, sinks/, workers/.",
                            no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(dlq_app, name="dlq")
app.add_typer(schemas_app, name="schemas")
app.add_typer(audit_app, name="audit")
app.add_typer(replay_app, name="replay")
app.add_typer(cache_app, name="cache")
app.add_typer(query_app, name="query")
app.add_typer(retention_app, name="retention")
app.add_typer(archive_app, name="archive")
app.command("backup")(backup_cmd)
app.command("restore")(restore_cmd)
app.command("stats")(stats_cmd)

console = Console()
err = Console(stderr=True)


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn sinkfleet's own errors into one red line and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except SinkfleetError as exc:
            # escaped: messages quote servers and records, whose text may look like markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings_and_catalogue() -> tuple[Settings, Catalogue]:
    settings = load_settings()
    return settings, load_catalogue(settings.home)


def say(message: str) -> None:
    console.print(message, highlight=False)


# --- stack ------------------------------------------------------------------------------
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


# --- catalogue, topics, db --------------------------------------------------------------
@catalogue_app.command("check")
@friendly
def catalogue_check() -> None:
    """Validate the catalogue strictly; errors name the file and the key."""
    _, cat = settings_and_catalogue()
    say(f"catalogue ok: {len(cat.schemas)} schemas, {len(cat.topics)} topics,"
        f" {len(cat.sinks)} sinks, {len(cat.workers)} workers")


@topics_app.command("apply")
@friendly
def topics_apply(dry_run: Annotated[bool, typer.Option("--dry-run")] = False) -> None:
    """Create or update Kafka topics (and dead-letter topics) from topics/."""
    from sinkfleet.ops.topics import apply_topics

    settings, cat = settings_and_catalogue()
    run(apply_topics(settings, cat, dry_run=dry_run, say=say))


@db_app.command("migrate")
@friendly
def db_migrate() -> None:
    """Apply pending migrations and create time partitions ahead (advisory-locked)."""
    from sinkfleet.sink.postgres.migrate import migrate

    settings, cat = settings_and_catalogue()
    run(migrate(settings, cat, say))


# --- produce, worker, demo --------------------------------------------------------------
@app.command()
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


def _defer_stop_signals() -> list[int]:
    """Remember SIGTERM/SIGINT instead of dying by them (exit -15) until the worker's
    event loop handles them; returns the signals received meanwhile."""
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    return received


@app.command()
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


@app.command()
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


# --- lag --------------------------------------------------------------------------------
Groups = Annotated[list[str] | None, typer.Option("--group", help="only these groups")]


@app.command()
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


@app.command("lag-exporter")
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


# --- fleet ------------------------------------------------------------------------------
@app.command()
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
@app.command("scale-advice")
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
    from sinkfleet.errors import CatalogueError
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


# --- rollups ----------------------------------------------------------------------------
@app.command()
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
    from sinkfleet.kafka import check_instance_id
    from sinkfleet.rollups.app import RollupOptions
    from sinkfleet.rollups.run import run_rollups

    settings, cat = settings_and_catalogue()
    options = RollupOptions(app_id=app_id, families=tuple(family or RollupOptions.families),
                            grace_seconds=grace_seconds, flush_interval=flush_interval,
                            commit_interval=commit_interval, web_port=web_port,
                            instance_id=check_instance_id(instance_id))
    run_rollups(settings, cat, options, explicit=bool(family), log_level=log_level)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
