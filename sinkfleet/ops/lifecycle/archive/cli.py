"""`sinkfleet archive list|restore`: the cold archive that retention writes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from sinkfleet.cli.base import console, err, friendly, run, say, settings_and_catalogue
from sinkfleet.ops.lifecycle.options import AsJson, Sinks, parse_when, range_text, size_text

if TYPE_CHECKING:
    from rich.table import Table

    from sinkfleet.ops.lifecycle.archive.store import ArchiveFile

archive_app = typer.Typer(help="The cold archive that retention writes (Avro files).",
                          no_args_is_help=True)


def archive_table(archives: list[ArchiveFile]) -> Table:
    from rich.table import Table

    table = Table("id", "sink", "partition", "range (UTC)", "rows", "size", "B/row", "codec",
                  "sha256", "dropped", "restored", title="cold archive (paths: --json)")
    for a in archives:
        table.add_row(str(a.id), a.sink, a.partition, range_text(a.range_start, a.range_end),
                      f"{a.rows:,}", size_text(a.bytes),
                      f"{a.bytes_per_row:.1f}" if a.bytes_per_row else "-", a.codec,
                      a.sha256[:12], f"{a.dropped_at:%Y-%m-%d %H:%M}" if a.dropped_at else "-",
                      f"{a.restored_at:%Y-%m-%d %H:%M}" if a.restored_at else "-")
    return table


@archive_app.command("list")
def archive_list(sink: Sinks = None, as_json: AsJson = False) -> None:
    """Every archived partition: range, rows, size, checksum, when dropped/restored."""
    from sinkfleet.ops.lifecycle.archive.store import list_archives
    from sinkfleet.sink.postgres.connect import pg

    @friendly
    def go() -> None:
        settings, _ = settings_and_catalogue()

        async def fetch() -> list[ArchiveFile]:
            async with pg(settings) as conn:
                return await list_archives(conn, sink)

        archives = run(fetch())
        if as_json:
            print(json.dumps([a.as_dict() | {"file": str(settings.archive / a.path)}
                              for a in archives], indent=2))
            return
        console.print(archive_table(archives))
        total = sum(a.bytes for a in archives)
        rows = sum(a.rows for a in archives)
        say(f"{len(archives)} archive file(s), {rows:,} rows, {size_text(total)}"
            f"{f', {total / rows:.1f} B/row' if rows else ''} under {settings.archive}")

    go()


@archive_app.command("restore")
def archive_restore(
    sink: Annotated[str, typer.Option("--sink", help="the sink whose rows to bring back")],
    from_: Annotated[str, typer.Option("--from", help="ISO-8601 with a timezone (inclusive)")],
    to: Annotated[str, typer.Option("--to", help="ISO-8601 with a timezone (exclusive)")],
    as_json: AsJson = False,
) -> None:
    """Bring archived rows of [--from, --to) back into PostgreSQL (partitions re-created
    as needed; idempotent: rows already there are skipped)."""
    from sinkfleet.ops.lifecycle.archive.restore import restore_range

    @friendly
    def go() -> None:
        start, end = parse_when("--from", from_), parse_when("--to", to)
        settings, catalogue = settings_and_catalogue()
        done = run(restore_range(settings, catalogue, sink, start, end,
                                 say=(lambda m: err.print(m, highlight=False))
                                 if as_json else say))
        if as_json:
            print(json.dumps([d.as_dict() for d in done], indent=2))
            return
        say(f"restored {sum(d.inserted for d in done):,} row(s) of {sink} from"
            f" {len(done)} archive file(s); {sum(d.in_range - d.inserted for d in done):,}"
            " were there already")

    go()
