"""`sinkfleet schemas check|register|list`: the typer sub-app (logic in ops/schemas/registry.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from sinkfleet.cli.base import console, friendly, run, say, settings_and_catalogue
from sinkfleet.config import load_settings

T = TypeVar("T")
schemas_app = typer.Typer(
    help="Schema evolution: check catalogue schemas against their registered versions,"
         " register them, list them (docs/avro.md).", no_args_is_help=True)

Families = Annotated[list[str] | None, typer.Option(
    "--family", help="only this family (repeat for several); default: every schemas/*.avsc")]


@schemas_app.command("check")
@friendly
def check(
    family: Families = None,
    against: Annotated[Path | None, typer.Option(
        "--against", help="earlier versions from DIR/<family>.avsc (and DIR/<family>/<N>.avsc)"
                          " instead of PostgreSQL, e.g. the main branch's schemas/")] = None,
) -> None:
    """Refuse incompatible schema changes (default BACKWARD; `compatibility:` per topic)."""
    from sinkfleet.catalogue.evolution import check_against_dir, refuse_incompatible
    from sinkfleet.ops.schemas.registry import check_against_db

    settings, cat = settings_and_catalogue()
    if against is not None:
        statuses = check_against_dir(cat, against, family)
    else:
        statuses = run(check_against_db(settings, cat, family))
    for status in statuses:
        if not status.problems:
            say(status.summary())
    refuse_incompatible(statuses)


@schemas_app.command("register")
@friendly
def register(family: Families = None) -> None:
    """Check, then record new schema versions in PostgreSQL (all or nothing)."""
    from sinkfleet.ops.schemas.registry import register as do_register

    settings, cat = settings_and_catalogue()
    statuses = run(do_register(settings, cat, say, family))
    for status in statuses:
        if not status.is_new_version:
            say(status.summary())


@schemas_app.command("list")
@friendly
def list_(
    family: Families = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False,
) -> None:
    """Registered versions: family, version, fingerprint, when."""
    from rich.table import Table

    from sinkfleet.ops.schemas.registry import list_versions

    rows = run(list_versions(load_settings(), family))
    if as_json:
        print(json.dumps([{"family": r.family, "version": r.version,
                           "fingerprint": r.fingerprint.hex(),
                           "registered_at": r.registered_at.isoformat()} for r in rows]))
        return
    table = Table("family", "version", "fingerprint", "registered_at",
                  title="registered schema versions")
    for r in rows:
        table.add_row(r.family, str(r.version), r.fingerprint.hex(),
                      r.registered_at.isoformat(timespec="seconds"))
    console.print(table)
