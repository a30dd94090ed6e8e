"""`sinkfleet cache rebuild`: the typer sub-app (logic in cache/rebuild.py).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sinkfleet.cli.base import console, err, friendly, run, settings_and_catalogue

cache_app = typer.Typer(help="The Redis caches (derived from PostgreSQL).",
                        no_args_is_help=True)


@cache_app.command("rebuild")
def rebuild(
    sink: Annotated[str | None, typer.Option(
        "--sink", help="a sink with a cache (default: every one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False,
) -> None:
    """Restore a sink's Redis caches from PostgreSQL.

    Deletes the sink's keys (SCAN by prefix, never FLUSHALL), then writes every latest
    state and the newest rows of every recent key still within its TTL."""
    friendly(_rebuild)(sink, as_json)


def _rebuild(sink: str | None, as_json: bool) -> None:
    from rich.table import Table

    from sinkfleet.cache.layout import cached_sinks
    from sinkfleet.cache.rebuild import rebuild_caches
    settings, cat = settings_and_catalogue()
    sinks = cached_sinks(cat, sink)
    if not sinks:
        err.print("no sink in sinks/ has a cache: nothing to rebuild")
        return
    say = (lambda m: None) if as_json else (lambda m: err.print(m, highlight=False))
    results = run(rebuild_caches(settings, sinks, say))
    if as_json:
        print(json.dumps([r.__dict__ for r in results]))
        return
    table = Table("sink", "keys deleted", "latest keys", "recent keys", "recent rows",
                  title="cache rebuilt from PostgreSQL")
    for r in results:
        table.add_row(r.sink, f"{r.deleted_keys:,}", f"{r.latest_keys:,}",
                      f"{r.recent_keys:,}", f"{r.recent_rows:,}")
    console.print(table)
