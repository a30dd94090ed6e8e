"""`sinkfleet catalogue check`, `topics apply`, `db migrate`: the catalogue, and what
it creates in Kafka and PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from sinkfleet.cli.base import friendly, run, say, settings_and_catalogue

topics_app = typer.Typer(help="Kafka topics from topics/.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL schema.", no_args_is_help=True)
catalogue_app = typer.Typer(help="The catalogue: schemas/, topics/, sinks/, workers/.",
                            no_args_is_help=True)


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
    from sinkfleet.ops.setup.topics import apply_topics

    settings, cat = settings_and_catalogue()
    run(apply_topics(settings, cat, dry_run=dry_run, say=say))


@db_app.command("migrate")
@friendly
def db_migrate() -> None:
    """Apply pending migrations and create time partitions ahead (advisory-locked)."""
    from sinkfleet.sink.postgres.migrate import migrate

    settings, cat = settings_and_catalogue()
    run(migrate(settings, cat, say))
