"""`sinkfleet query rows|summary|windows|events|recent|state|history|audit`: the typer
sub-app over Reader.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sinkfleet.cli.base import console, err, friendly, run, settings_and_catalogue
from sinkfleet.errors import ConfigError
from sinkfleet.plainjson import json_default, plain

if TYPE_CHECKING:
    from rich.text import Text

    from sinkfleet.read.reader import Reader

query_app = typer.Typer(help="Read sinks: rows by filters, summaries, events, recent rows,"
                        " state, history, audit trails.", no_args_is_help=True)

SinkOpt = Annotated[str, typer.Option("--sink", help="a sink from sinks/")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout (one array of rows)")]
Start = Annotated[str | None, typer.Option(help="from this time (ISO-8601, inclusive)")]
End = Annotated[str | None, typer.Option(help="until this time (ISO-8601, exclusive)")]
Limit = Annotated[int, typer.Option(min=1, max=1_000_000, help="at most this many rows")]
Where = Annotated[list[str] | None, typer.Option(
    "--where", help="COLUMN=VALUE (repeat for several)")]
Columns = Annotated[str | None, typer.Option(
    "--columns", help="comma-separated columns to show in the table")]
Ids = Annotated[list[str], typer.Argument(help="the id's parts, in the sink's id order")]
Tenant = Annotated[str | None, typer.Option(
    "--tenant", help="read as this tenant: a tenant sink shows only its rows")]


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{what} {item!r}: write COLUMN=VALUE")
        out[name.strip()] = value
    return out


def _cell(value: Any) -> Text:
    """A stored value as plain text: rows are untrusted, so never parsed as markup."""
    from rich.text import Text

    if value is None:
        return Text("-", style="dim")
    if isinstance(value, (dict, list)):
        return Text(json.dumps(value, default=json_default, ensure_ascii=False))
    return Text(str(plain(value)))


def _show(rows: list[dict[str, Any]], as_json: bool, columns: str | None, title: str,
          stats: dict[str, Any] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    if as_json:
        print(json.dumps(rows, default=json_default, ensure_ascii=False))
        return
    if not rows:
        err.print(f"{escape(title)}: no rows")
        return
    names = list(rows[0])
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise ConfigError(f"--columns: no column {', '.join(unknown)}; columns:"
                              f" {', '.join(names)}")
        names = wanted
    if len(rows) == 1 and not columns:  # one row: a column per line reads better
        table = Table("column", "value", title=Text(title))
        for name in names:
            table.add_row(Text(name), _cell(rows[0][name]))
    else:
        table = Table(*map(escape, names), title=Text(f"{title} ({len(rows):,} rows)"))
        for row in rows:
            table.add_row(*(_cell(row.get(n)) for n in names))
    console.print(table)
    if stats is not None:
        source = "Redis" if stats["hits"] else "PostgreSQL"
        err.print(f"[dim]served by {source}[/]")


def _with_reader(body: Callable[[Reader], Awaitable[Any]], tenant: str | None = None
                 ) -> tuple[Any, dict[str, Any]]:
    from sinkfleet.read.reader import Reader

    settings, cat = settings_and_catalogue()

    async def main() -> tuple[Any, dict[str, Any]]:
        async with Reader(settings, cat, tenant=tenant) as reader:
            rows = await body(reader)
            return rows, reader.cache_stats.as_dict()

    return run(main())


@query_app.command("rows")
@friendly
def rows(sink: SinkOpt,
         where: Annotated[list[str] | None, typer.Option(
             "--where", help="a filter, repeatable: status=failed, avg_reward>0.5,"
             " 'status in queued,running', 'tags contains important', 'error is null'")
         ] = None,
         order_by: Annotated[str | None, typer.Option(
             "--order-by", help="an indexed column (default: the time column, else the"
             " id)")] = None,
         desc: Annotated[bool, typer.Option(
             "--desc", help="newest (largest) first")] = False,
         limit: Annotated[int, typer.Option(min=1, help="rows a page (at most 10,000)")
                          ] = 100,
         cursor: Annotated[str | None, typer.Option(
             "--cursor", help="the next page: the cursor the previous page printed")] = None,
         tenant: Tenant = None, as_json: Annotated[bool, typer.Option(
             "--json", help='JSON on stdout: {"rows": [...], "next_cursor": ...}')] = False,
         columns: Columns = None) -> None:
    """One page of a sink's rows by filters, in an indexed order; prints the next cursor.

    E.g. sinkfleet query rows --sink policies --order-by avg_reward --desc --limit 10"""
    from sinkfleet.read.query import Page

    async def one(r: Reader) -> Page:
        return await r.query(sink, list(where or []), order_by=order_by, newest_first=desc,
                             limit=limit, cursor=cursor)

    page, _ = _with_reader(one, tenant)
    if as_json:
        print(json.dumps({"rows": page.rows, "next_cursor": page.next_cursor},
                         default=json_default, ensure_ascii=False))
        return
    _show(page.rows, False, columns, f"{sink} rows")
    if page.next_cursor is not None:
        err.print(f"next page: --cursor {page.next_cursor}", highlight=False, markup=False)


@query_app.command("summary")
@friendly
def summary(sink: SinkOpt,
            where: Annotated[list[str] | None, typer.Option(
                "--where", help="a filter, repeatable, as for `query rows`")] = None,
            of: Annotated[list[str] | None, typer.Option(
                "--of", help="a numeric column to sum (and min, max, avg); repeatable")
                          ] = None,
            tenant: Tenant = None, as_json: AsJson = False) -> None:
    """How many rows match the filters, and sum/min/max/avg of numeric columns.

    E.g. a node's out-degree and weight sum: sinkfleet query summary --sink
    graph_connections --where source_id=<uuid> --of weight"""
    row, _ = _with_reader(lambda r: r.summary(sink, list(where or []), of=list(of or [])),
                          tenant)
    if as_json:
        print(json.dumps(row, default=json_default, ensure_ascii=False))
        return
    _show([row], False, None, f"{sink} summary")


@query_app.command("windows")
@friendly
def windows(sink: SinkOpt,
            start: Annotated[str, typer.Option(
                "--start", help="from this time (ISO-8601; widened to its window's start)")],
            end: End = None,
            where: Annotated[list[str] | None, typer.Option(
                "--where", help="a filter on the summary's by columns, repeatable")] = None,
            tenant: Tenant = None, as_json: AsJson = False, columns: Columns = None) -> None:
    """Per summary window (the sink's grain) and by-group: rows and count/sum/min/max/avg
    of each summed column, the detail still kept and the summary of the detail already
    dropped as one answer (sinks with a retention summary tier).

    E.g. a year of daily judgement scores: sinkfleet query windows --sink
    judgement_snapshots --start 2026-01-01 --where verdict=pass"""
    rows, _ = _with_reader(lambda r: r.windows(sink, list(where or []), start=start,
                                               end=end), tenant)
    _show(rows, as_json, columns, f"{sink} windows")


@query_app.command("events")
@friendly
def events(sink: SinkOpt, start: Start = None, end: End = None, where: Where = None,
           limit: Limit = 100, as_json: AsJson = False, columns: Columns = None) -> None:
    """Rows in a time range, oldest first (filter: --where agent_id=a …).

    E.g. one agent's episode: --where agent_id=agent-7 --where episode_id=3."""
    filters = _pairs(where, "--where")
    rows, _ = _with_reader(lambda r: r.events(sink, start=start, end=end, where=filters,
                                              limit=limit))
    _show(rows, as_json, columns, f"{sink} events")


@query_app.command("recent")
@friendly
def recent(sink: SinkOpt, by: Annotated[list[str], typer.Argument(
        help="COLUMN=VALUE for each of the cache's `by` columns")],
           as_json: AsJson = False, columns: Columns = None) -> None:
    """The newest rows of one key, newest first: Redis, else PostgreSQL.

    E.g. sinkfleet query recent --sink experience_events agent_id=agent-7 episode_id=3"""
    values = _pairs(by, "argument")
    rows, stats = _with_reader(lambda r: r.recent(sink, **values))
    _show(rows, as_json, columns, f"{sink} recent", stats)


@query_app.command("state")
@friendly
def state(sink: SinkOpt, ids: Ids, as_json: AsJson = False, tenant: Tenant = None) -> None:
    """The current (active) version of one id: Redis, else PostgreSQL."""

    async def one(r: Reader) -> list[dict[str, Any]]:
        row = await r.state(sink, *ids)
        return [] if row is None else [row]

    found, stats = _with_reader(one, tenant)
    _show(found, as_json, None, f"{sink} {':'.join(ids)}", stats)


@query_app.command("history")
@friendly
def history(sink: SinkOpt, ids: Ids, as_json: AsJson = False, columns: Columns = None,
            tenant: Tenant = None) -> None:
    """Every version of one id, with its parent version and op (upsert/delete)."""
    found, _ = _with_reader(lambda r: r.state_history(sink, *ids), tenant)
    _show(found, as_json, columns, f"{sink} {':'.join(ids)} history")


@query_app.command("audit")
@friendly
def audit(sink: SinkOpt, tenant: Annotated[str, typer.Option(help="whose chain")],
          actor: Annotated[str | None, typer.Option(help="only this actor")] = None,
          start: Start = None, end: End = None, where: Where = None, limit: Limit = 100,
          as_json: AsJson = False, columns: Columns = None) -> None:
    """A tenant's audit trail in chain order (optionally by actor and time)."""
    filters = _pairs(where, "--where")
    # read as that tenant: a reader login sees audit sinks only through the tenant view
    trail, _ = _with_reader(lambda r: r.audit_trail(sink, tenant=tenant, actor=actor,
                                                    start=start, end=end, where=filters,
                                                    limit=limit), tenant)
    _show(trail, as_json, columns, f"{sink} audit trail of {tenant}")
