"""`sinkfleet stats`: parse, call, print (logic in report.py). ``sinkfleet.cli.app`` registers
``stats_cmd``; the heavier imports happen inside it, so other commands start fast."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sinkfleet.cli.base import console, err, friendly, run, say, settings_and_catalogue

if TYPE_CHECKING:
    from sinkfleet.ops.stats.report import StatsReport


def stats_cmd(
    exact: Annotated[bool, typer.Option(
        "--exact", help="count rows (a full scan); default: PostgreSQL's estimates")] = False,
    sink: Annotated[str | None, typer.Option("--sink", help="only this sink")] = None,
    redis_max_keys: Annotated[int, typer.Option(
        min=1, help="stop scanning Redis after this many sinkfleet:* keys")] = 1_000_000,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON on stdout")
                       ] = False,
    by_part: Annotated[bool, typer.Option(
        "--bytes", help="also break each sink's bytes down: heap, maps, TOAST, each index"
                        " (bytes per row of each)")] = False,
) -> None:
    """Per sink: rows, bytes (indexes and TOAST included), bytes per row, partitions,
    oldest/newest record, Redis keys and memory; per group: lag; per reference between
    sinks: orphans (count, oldest); the cache hit rate."""
    friendly(_stats)(exact, sink, redis_max_keys, as_json, by_part)


def _stats(exact: bool, sink: str | None, redis_max_keys: int, as_json: bool,
           by_part: bool = False) -> None:
    from sinkfleet.ops.stats.report import collect_stats

    settings, cat = settings_and_catalogue()
    if not as_json and exact:
        err.print("counting rows (--exact scans every table) …", highlight=False)
    report = run(collect_stats(settings, cat, exact=exact, sink=sink,
                               redis_max_keys=redis_max_keys))
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        render(report)
        if by_part:
            render_parts(report)


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rows(value: int | None, exact: bool) -> str:
    if value is None:
        return "?"
    return f"{value:,}" if exact else f"~{value:,}"


def _when(value: Any) -> str:
    if value is None:
        return "-"
    text: str = value.isoformat(sep=" ", timespec="seconds") if hasattr(value, "hour") \
        else value.isoformat()
    return text.replace("+00:00", "Z")


def render(report: StatsReport) -> None:
    from rich.table import Table

    redis = report.redis
    table = Table("sink", "mode", "rows", "size", "bytes/row", "parts", "oldest", "newest",
                  "history rows", "cache keys", "cache memory",
                  title=f"sinkfleet stats — database {report.database}")
    for s in report.sinks:
        if not s.main.exists:
            table.add_row(s.sink, s.mode, "[dim]no table (db migrate?)[/]", *["-"] * 8)
            continue
        usage = redis.sinks.get(s.sink)
        keys = f"{usage.keys:,}" if usage and redis.available else "-"
        memory = "-"
        if usage and redis.available and usage.keys:
            memory = ("~" if usage.memory_estimated else "") + size(usage.memory_bytes)
        bpr = s.main.bytes_per_row
        history = _rows(s.history.rows, s.history.exact) if s.history else ""
        table.add_row(s.sink, s.mode, _rows(s.main.rows, s.main.exact), size(s.main.bytes),
                      "-" if bpr is None else f"{bpr:,.0f}", str(s.main.partitions or "-"),
                      _when(s.oldest), _when(s.newest), history, keys, memory)
    console.print(table)
    if not report.exact:
        say("[dim]~ rows are PostgreSQL's estimates (statistics); --exact counts them;"
            " ? no statistics yet. Sizes include indexes and TOAST, summed over partitions.[/]")
    for s in report.sinks:
        if s.oldest is not None and s.time_column and "." in s.time_column:
            say(f"[dim]{s.sink}: oldest/newest by {s.time_column} (when stored)[/]")
        if s.note:
            say(f"[yellow]{s.sink}:[/] {s.note}")
    _render_groups(report)
    _render_references(report)
    _render_redis(report)


def _render_groups(report: StatsReport) -> None:
    from rich.table import Table

    if report.kafka_error:
        say(f"[yellow]Kafka:[/] {report.kafka_error}")
    if not report.groups or report.kafka_error:
        return
    table = Table("group", "topics", "partitions", "stored offsets", "log end", "lag",
                  "no offset", title="groups: offsets stored in PostgreSQL vs Kafka's log end")
    for g in report.groups:
        lag = "-" if g.lag is None else (f"[yellow]{g.lag:,}[/]" if g.lag else "0")
        topics = g.topics[0] + (f" +{len(g.topics) - 1}" if len(g.topics) > 1 else "")
        parts = str(len(g.partitions)) if g.partitions else "[dim]0 (topics not created)[/]"
        table.add_row(g.group, topics, parts, f"{g.stored:,}",
                      "-" if g.log_end is None else f"{g.log_end:,}", lag, str(g.unstored))
    console.print(table)


def _render_references(report: StatsReport) -> None:
    from rich.table import Table

    if not report.references:
        return
    table = Table("sink", "columns", "refers to", "orphans", "oldest orphan",
                  title="references: rows whose target is not stored (yet)"
                        " — docs/references.md")
    for r in report.references:
        count = ("-" if r.orphans is None else
                 f"[yellow]{r.orphans:,}[/]" if r.orphans else "0")
        oldest = _when(r.oldest) + (f" ({r.arrived_by})" if r.oldest else "")
        table.add_row(r.sink, ", ".join(r.columns), r.target, count,
                      r.note or oldest)
    console.print(table)


def _render_redis(report: StatsReport) -> None:
    r = report.redis
    if not r.available:
        say(f"[yellow]Redis:[/] {r.error}")
        return
    line = (f"Redis {r.version}: {r.keys_total:,} keys, {size(r.used_memory)} used;"
            f" {r.scanned:,} sinkfleet:* keys scanned")
    if r.truncated:
        line += " [yellow](stopped at --redis-max-keys: key counts are lower bounds)[/]"
    say(line)
    hr = r.hit_rate
    if hr is not None and hr.rate is not None:
        say(f"cache hit rate {hr.rate:.1%} ({hr.hits:,} hits, {hr.misses:,} misses): the whole"
            " Redis instance since its start, not per family — readers count their hits"
            " in-process only, and the cache writer's version checks count too")


def render_parts(report: StatsReport) -> None:
    """Bytes per component and per row (docs/storage.md), sinks with rows only."""
    from rich.table import Table

    table = Table("sink", "table", "component", "size", "bytes/row", "share",
                  title="bytes by component (summed over partitions)")
    if not any(t and t.rows and t.parts for s in report.sinks for t in (s.main, s.history)):
        say("[dim]bytes by component: no sink has rows (yet)[/]")
        return
    for s in report.sinks:
        for t in (s.main, s.history):
            if t is None or not t.exists or not t.rows or not t.parts or not t.bytes:
                continue
            for part in t.parts:
                table.add_row(s.sink, t.table, part.name, size(part.bytes),
                              f"{part.bytes / t.rows:,.1f}", f"{part.bytes / t.bytes:.1%}")
            table.add_row(s.sink, t.table, "[b]total[/]", size(t.bytes),
                          f"[b]{t.bytes / t.rows:,.1f}[/]", "100%", end_section=True)
    console.print(table)
