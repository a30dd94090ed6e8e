"""One entry point: `sinkfleet SUBCOMMAND`. Subcommands parse, call, print.

The root app only registers command groups; each group lives in its own module and
imports the shared helpers from ``sinkfleet.cli.base``.
"""

from __future__ import annotations

import typer

from sinkfleet.cli import dev, lag, rollups, setup, stack, worker
from sinkfleet.cli.cache import cache_app
from sinkfleet.cli.query import query_app
from sinkfleet.ops.audit_cli import audit_app
from sinkfleet.ops.backup.cli import backup_cmd, restore_cmd
from sinkfleet.ops.dlq_cli import dlq_app
from sinkfleet.ops.replay_cli import replay_app
from sinkfleet.ops.retention.cli import archive_app, retention_app
from sinkfleet.ops.schemas_cli import schemas_app
from sinkfleet.ops.stats.cli import stats_cmd

app = typer.Typer(help="sinkfleet: Avro over Kafka into PostgreSQL and Redis.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(stack.stack_app, name="stack")
app.add_typer(setup.topics_app, name="topics")
app.add_typer(setup.db_app, name="db")
app.add_typer(setup.catalogue_app, name="catalogue")
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
app.command("produce")(dev.produce)
app.command("worker")(worker.worker)
app.command("demo")(dev.demo)
app.command("lag")(lag.lag)
app.command("lag-exporter")(lag.lag_exporter)
app.command("fleet")(worker.fleet)
app.command("scale-advice")(worker.scale_advice)
app.command("rollups")(rollups.rollups)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
