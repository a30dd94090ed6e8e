"""One entry point: `sinkfleet SUBCOMMAND`. Subcommands parse, call, print.

The root app only registers command groups. Each group lives in its own module — the
operations' commands beside them as ``ops/<capability>/cli.py``, the developer commands in
``dev/cli.py``, the rest here — and imports the shared helpers from ``sinkfleet.cli.base``.
"""

from __future__ import annotations

import typer

from sinkfleet.cli import rollups, worker
from sinkfleet.cli.cache import cache_app
from sinkfleet.cli.query import query_app
from sinkfleet.cli.serve import serve_app
from sinkfleet.dev import cli as dev
from sinkfleet.ops.audit.cli import audit_app
from sinkfleet.ops.config.cli import config_app, policy_app
from sinkfleet.ops.deadletters.cli import dlq_app
from sinkfleet.ops.fleet import cli as fleet
from sinkfleet.ops.lag import cli as lag
from sinkfleet.ops.lifecycle.archive.cli import archive_app
from sinkfleet.ops.lifecycle.backup.cli import backup_cmd, restore_cmd
from sinkfleet.ops.lifecycle.retention.cli import retention_app
from sinkfleet.ops.replay.cli import replay_app
from sinkfleet.ops.schemas.cli import schemas_app
from sinkfleet.ops.setup import cli as setup
from sinkfleet.ops.stats.cli import stats_cmd

app = typer.Typer(help="sinkfleet: Avro over Kafka into PostgreSQL and Redis.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(dev.stack_app, name="stack")
app.add_typer(setup.topics_app, name="topics")
app.add_typer(setup.db_app, name="db")
app.add_typer(setup.catalogue_app, name="catalogue")
app.add_typer(dlq_app, name="dlq")
app.add_typer(schemas_app, name="schemas")
app.add_typer(audit_app, name="audit")
app.add_typer(replay_app, name="replay")
app.add_typer(cache_app, name="cache")
app.add_typer(query_app, name="query")
app.add_typer(serve_app, name="serve")
app.add_typer(retention_app, name="retention")
app.add_typer(archive_app, name="archive")
app.add_typer(config_app, name="config")
app.add_typer(policy_app, name="policy")
app.command("backup")(backup_cmd)
app.command("restore")(restore_cmd)
app.command("stats")(stats_cmd)
app.command("produce")(dev.produce)
app.command("worker")(worker.worker)
app.command("demo")(dev.demo)
app.command("lag")(lag.lag)
app.command("lag-exporter")(lag.lag_exporter)
app.command("fleet")(fleet.fleet)
app.command("scale-advice")(fleet.scale_advice)
app.command("rollups")(rollups.rollups)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
