"""`sinkfleet dlq inspect|replay`: the typer sub-app (logic in inspect.py, replay.py and
cursor.py beside it).
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sinkfleet.cli.base import console, err, friendly, run, say, settings_and_catalogue

if TYPE_CHECKING:
    from rich.table import Table

    from sinkfleet.ops.deadletters.inspect import Inspection
    from sinkfleet.ops.deadletters.replay import ReplayResult

T = TypeVar("T")
dlq_app = typer.Typer(help="Dead letters: inspect them; replay them after a fix.",
                      no_args_is_help=True)

Topic = Annotated[str | None, typer.Option(
    "--topic", help="a source topic from topics/ (or its .dlq); default: every topic")]
Stages = Annotated[list[str] | None, typer.Option(
    "--stage", help="decompress, decode, validate or write (repeat for several)")]
ErrorClasses = Annotated[list[str] | None, typer.Option(
    "--error-class", help="error class name, e.g. DecodeError (repeat for several)")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout")]
SHOWN = 50  # replayed records listed in the table


def _friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """``friendly``, with aiokafka's logs silenced: failures surface as exceptions we turn
    into one line, which its logs would only repeat."""
    command = friendly(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        return command(*args, **kwargs)

    return wrapper


def _plain(text: str) -> str:
    """``text`` with every non-printable character (ESC, bidi overrides …) as an escape
    such as ``\\x1b``: a forged header must not drive the terminal. Used with rich's
    ``Text``, which prints ``[markup]`` as it is."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                   for c in text)


def _short(text: str, width: int) -> str:
    text = _plain(" ".join(text.split()))
    return text if len(text) <= width else text[:width - 1] + "…"


def _summary(counts: Counter[tuple[str, str]], total: int) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table("stage", "error class", "dead letters", title="by stage and error")
    for (stage, cls), n in sorted(counts.items()):
        table.add_row(Text(_short(stage, 40)), Text(_short(cls, 40)), f"{n:,}")
    table.add_row("[bold]all[/]", "", f"[bold]{total:,}[/]")
    return table


def _records(ins: Inspection) -> Table:
    from rich.table import Table
    from rich.text import Text

    several = len({r.dlq_topic for r in ins.records}) > 1
    table = Table("dlq", "original", "stage", "error", "message", "worker", "dead at (UTC)",
                  "bytes", title=f"dead letters (first {len(ins.records):,} of"
                                 f" {ins.matched:,})")
    for r in ins.records:
        info = r.info
        size = f"{len(r.value or b''):,}"
        if info.value_cut is not None:  # the value is an excerpt: the original's size
            size = f"{'?' if info.value_cut.size is None else f'{info.value_cut.size:,}'} (cut)"
        table.add_row(
            Text(f"{r.dlq_topic if several else ''}[{r.dlq_partition}]@{r.dlq_offset}"),
            Text(_short(r.where, 80)), Text(_short(r.stage, 20)),
            Text(_short(r.error_class, 40)), Text(_short(info.error_message, 60)),
            Text(_short(info.worker or "?", 40)),
            "?" if r.dead_at is None else r.dead_at.strftime("%Y-%m-%d %H:%M:%S"), size)
    return table


@dlq_app.command("inspect")
@_friendly
def inspect(
    topic: Topic = None,
    all_: Annotated[bool, typer.Option("--all", help="every topic of the catalogue")] = False,
    limit: Annotated[int, typer.Option(
        min=0, help="records listed (0: all); the summary counts every match")] = 100,
    as_json: AsJson = False,
    stage: Stages = None,
    error_class: ErrorClasses = None,
    since: Annotated[str | None, typer.Option(
        help="dead since this ISO date-time (UTC unless it names a zone)")] = None,
) -> None:
    """List dead letters from the beginning of the dead-letter topic(s); read-only."""
    from sinkfleet.ops.deadletters.inspect import Filter, dlq_topics
    from sinkfleet.ops.deadletters.inspect import inspect as do_inspect

    settings, cat = settings_and_catalogue()
    topics = dlq_topics(cat, topic, all_)
    flt = Filter.make(stage, error_class, since)
    ins = run(do_inspect(settings, topics, flt, limit))
    if as_json:
        print(json.dumps({"topics": topics, **ins.as_dict()}))
        return
    say(f"{ins.matched:,} matching dead letter(s) of {ins.scanned:,} in {', '.join(topics)}")
    if ins.records:
        console.print(_records(ins))
    if ins.matched:
        console.print(_summary(ins.summary, ins.matched))


@dlq_app.command("replay")
@_friendly
def replay(
    topic: Topic = None,
    stage: Stages = None,
    error_class: ErrorClasses = None,
    apply: Annotated[bool, typer.Option(
        "--apply/--dry-run", help="re-publish (default: a dry run that changes nothing)")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Re-publish dead letters (original key and value) to their original topics.

    Progress is kept in the consumer group sinkfleet.dlq-replay.<dlq topic>: running it
    again sends nothing twice. A record that fails again is dead-lettered again. Dead
    letters that cannot be replayed (forged, or cut and their original gone) are refused,
    each with a reason, and stay; then the exit code is 1."""
    from rich.text import Text

    from sinkfleet.ops.deadletters.inspect import Filter, dlq_sources, dlq_topics
    from sinkfleet.ops.deadletters.replay import replay as do_replay

    settings, cat = settings_and_catalogue()
    topics = dlq_topics(cat, topic)
    flt = Filter.make(stage, error_class)
    result: ReplayResult = run(do_replay(
        settings, topics, flt, sources=dlq_sources(cat), apply=apply,
        say=lambda m: err.print(Text(_plain(m), style="yellow"))))
    if as_json:
        print(json.dumps({"topics": topics, **result.as_dict()}))
    else:
        _replayed(result, apply)
    if result.refused:
        raise typer.Exit(1)


def _replayed(result: ReplayResult, apply: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    if result.records:
        table = Table("dlq", "→ topic", "stage", "error",
                      title="replayed" if apply else "would replay")
        for r in result.records[:SHOWN]:
            table.add_row(Text(r.coordinates), Text(_short(r.topic or "?", 80)),
                          Text(_short(r.stage, 20)), Text(_short(r.error_class, 40)))
        console.print(table)
        if result.replayed > SHOWN:
            say(f"… and {result.replayed - SHOWN:,} more")
    for refusal in result.refusals[:SHOWN]:
        line = f"refused {refusal.rec.coordinates}: {refusal.reason}"
        console.print(Text(_plain(line), style="yellow"), soft_wrap=True)
    if result.refused > SHOWN:
        say(f"… and {result.refused - SHOWN:,} more refused (--json lists"
            f" {len(result.refusals):,})")
    rest = (f"{result.already:,} replayed before, {result.left:,} left in the dead-letter"
            " topic")
    if result.refused:
        rest += f" ({result.refused:,} refused: see above)"
    if apply and not result.replayed:
        say(f"nothing to replay; {rest}")
    elif apply:
        say(f"replayed {result.replayed:,} dead letter(s), all acknowledged by Kafka; {rest}")
    else:
        say(f"dry run: would replay {result.replayed:,} dead letter(s); {rest}."
            " Nothing was sent: add --apply to replay")
