"""`sinkfleet backup` and `sinkfleet restore`: parse, call, print (logic in this package).

``sinkfleet.cli.app`` registers these functions as commands; the heavier imports happen
inside them, so other commands start fast.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.cli.base import console, err, friendly, run, say
from sinkfleet.config import load_settings
from sinkfleet.errors import CatalogueError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from sinkfleet.ops.lifecycle.backup.backup import BackupResult
    from sinkfleet.ops.lifecycle.backup.restore import RestoreResult


class RichReporter:
    """Steps as lines of a rich progress display (on stderr): spinner, then a tick."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def step(self, description: str) -> None:
        self.finish()
        self.task = self.progress.add_task(description, total=1, detail="")

    def detail(self, text: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, detail=text)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=1)


def _progress() -> Progress:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(finished_text="[green]✓[/]"),
                    TextColumn("{task.description}"), TextColumn("[dim]{task.fields[detail]}"),
                    TimeElapsedColumn(), console=err, transient=False)


def backup_cmd(
    out: Annotated[Path, typer.Option(help="directory that receives the backup")] = Path(
        "backups"),
    tar: Annotated[bool, typer.Option("--tar", help="one .tar file instead of a directory")
                   ] = False,
) -> None:
    """Back up PostgreSQL (pg_dump, custom format), the catalogue and every group's offsets
    (PostgreSQL's and Kafka's), with a manifest of checksums and rows per sink."""
    friendly(_backup)(out, tar)


def _backup(out: Path, tar: bool) -> None:
    from sinkfleet.ops.lifecycle.backup.backup import run_backup

    settings = load_settings()
    try:
        cat: Catalogue | None = load_catalogue(settings.home)
    except CatalogueError as exc:  # back up anyway: the database matters most
        err.print(f"[yellow]warning:[/] {exc}; no row counts per sink", highlight=False)
        cat = None
    with _progress() as bar:
        reporter = RichReporter(bar)
        result = run(run_backup(settings, cat, out, tar=tar, reporter=reporter))
        reporter.finish()
    _print_backup(result)


def _print_backup(result: BackupResult) -> None:
    from rich.table import Table

    m = result.manifest
    files = m["files"]
    size = sum(f["bytes"] for f in files.values())
    table = Table("sink", "mode", "table", "rows", "history rows",
                  title=f"backup {m['name']}")
    for name, s in m["sinks"].items():
        table.add_row(name, s["mode"], s["table"], _n(s["rows"]), _n(s.get("history_rows")))
    if m["sinks"]:
        console.print(table)
    say(f"written: {result.path} ({len(files)} files, {size / 2**20:,.1f} MiB; dump"
        f" {files['database.dump']['bytes'] / 2**20:,.1f} MiB, PostgreSQL"
        f" {m['postgres']['server_version']}, pg_dump {m['postgres']['pg_dump']})")
    off = m["offsets"]
    say(f"offsets: {off['stored']} stored in PostgreSQL for {len(off['groups'])} group(s),"
        f" {off['kafka_partitions']} group-partitions from Kafka")
    for warning in result.warnings:
        say(f"[yellow]warning:[/] {warning}")


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def restore_cmd(
    backup: Annotated[Path, typer.Argument(help="a backup directory or .tar")],
    execute: Annotated[bool, typer.Option("--execute", help="restore (default: dry run)")
                       ] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="restore into a non-empty database: drop and recreate the"
                        " backup's objects (pg_restore --clean)")] = False,
    create_db: Annotated[bool, typer.Option(
        "--create-db", help="create SINKFLEET_PG_DATABASE if it does not exist")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the result as JSON on stdout")
                       ] = False,
    allow_unsigned: Annotated[bool, typer.Option(
        "--allow-unsigned", help="accept a manifest without a signature (backups made"
        " before they were signed); a signature that does not verify is always refused")
                              ] = False,
) -> None:
    """Restore a backup into SINKFLEET_PG_DATABASE: the manifest's signature and the
    checksums first, then pg_restore in one transaction, then rows and offsets checked;
    says what workers will re-read."""
    friendly(_restore)(backup, execute, force, create_db, as_json, allow_unsigned)


def _restore(backup: Path, execute: bool, force: bool, create_db: bool, as_json: bool,
             allow_unsigned: bool) -> None:
    from sinkfleet.ops.lifecycle.backup.backup import QuietReporter, open_backup
    from sinkfleet.ops.lifecycle.backup.restore import run_restore

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="sinkfleet-restore-") as scratch:
        root = open_backup(backup, Path(scratch))
        if as_json:
            result = run(run_restore(settings, root, execute=execute, force=force,
                                     create_db=create_db, reporter=QuietReporter(),
                                     allow_unsigned=allow_unsigned))
        else:
            with _progress() as bar:
                reporter = RichReporter(bar)
                result = run(run_restore(settings, root, execute=execute, force=force,
                                         create_db=create_db, reporter=reporter,
                                         allow_unsigned=allow_unsigned))
                reporter.finish()
    if as_json:
        print(json.dumps(result.as_dict()))
    else:
        _print_restore(result)
    if execute and not result.verified:
        raise typer.Exit(1)


def _print_restore(r: RestoreResult) -> None:
    from rich.table import Table

    m = r.manifest
    say(f"backup {r.backup.name}: taken {m['created_at']} of database"
        f" {m['postgres']['database']} (PostgreSQL {m['postgres']['server_version']},"
        f" sinkfleet {m.get('sinkfleet')}); manifest {r.signature}; {r.checked.files} files"
        " match their sha256")
    where = ("new database" if not r.target.exists else
             f"{r.target.relations} relations, replaced (--force)" if r.target.relations
             else "empty")
    say(f"target: database {r.target.database} ({where}); {r.pg_restore}")
    sinks = Table("sink", "table", "rows in backup", "restored", title="rows per sink table")
    if r.executed:
        for s in r.sinks:
            mark = "[green]✓[/]" if s.ok else "[red]✗[/]"
            sinks.add_row(s.sink, s.table, _n(s.expected), f"{_n(s.found)} {mark}")
    else:
        for name, s in m.get("sinks", {}).items():
            sinks.add_row(name, s["table"], _n(s["rows"]), "-")
            if "history_table" in s:
                sinks.add_row(name, s["history_table"], _n(s["history_rows"]), "-")
    if sinks.row_count:
        console.print(sinks)
    _print_groups(r)
    if r.executed:
        ok = "[green]equal[/]" if not r.offsets_differ else "[red]differ[/]"
        say(f"consumer offsets: {r.offsets_expected} in the backup, restored {ok}")
        for line in r.offsets_differ[:10]:
            say(f"  [red]{line}[/]")
        if r.pinned:
            say(f"pinned {r.pinned} partition(s) without a stored offset to their log start")
    for warning in r.warnings:
        say(f"[yellow]warning:[/] {warning}")
    if not r.executed:
        say("[bold]dry run[/]: nothing changed; pass --execute to restore")
        return
    say("next: `sinkfleet db migrate` (partitions ahead, the workers' login role and grants),"
        " start the workers — they seek to the restored offsets — then `sinkfleet cache"
        " rebuild` (Redis still holds what the replaced database had). See docs/backup.md.")


def _print_groups(r: RestoreResult) -> None:
    from rich.table import Table

    if not r.groups:
        return
    table = Table("group", "partitions", "re-read", "lost to retention", "no offset",
                  "ahead of Kafka", title="Kafka positions after the restore (workers seek"
                  " to the restored offsets)")
    for g in r.groups:
        table.add_row(g.group, str(len(g.partitions)), f"{g.reread:,}",
                      f"[red]{g.lost:,}[/]" if g.lost else "0", str(g.unstored),
                      f"[yellow]{g.ahead}[/]" if g.ahead else "0")
    console.print(table)
    for g in r.groups:
        for note in g.notes():
            say(f"  {g.group}: {note}")
