"""`sinkfleet config set|get|history|rollback` and `sinkfleet policy activate|show|history`:
parse, call (``writes.py``), print. Versions are assigned by the tool, never typed."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sinkfleet.cli.base import console, err, friendly, run, say, settings_and_catalogue
from sinkfleet.ops.config.fields import visible
from sinkfleet.plainjson import json_default, plain

if TYPE_CHECKING:
    from sinkfleet.ops.config.versioned import Written
    from sinkfleet.ops.config.writes import Family

config_app = typer.Typer(help="Runtime configuration: set, get, history, rollback (versioned).",
                         no_args_is_help=True)
policy_app = typer.Typer(help="Policies per state bin: activate a new version, show, history.",
                         no_args_is_help=True)

Component = Annotated[str, typer.Argument(help="e.g. action_controller")]
Key = Annotated[str, typer.Argument(help="e.g. exploration_rate")]
Bin = Annotated[str, typer.Argument(help="the state bin (the policy's id)")]
SinkOpt = Annotated[str | None, typer.Option(
    "--sink", help="the state sink (default: the only one storing this family)")]
By = Annotated[str | None, typer.Option("--by", help="who changes it (default: your user)")]
NoWait = Annotated[bool, typer.Option(
    "--no-wait", help="publish and return: the version is not confirmed as stored")]
Timeout = Annotated[float, typer.Option(
    min=0.1, max=3600, help="seconds to wait for a worker to store the write")]
Retries = Annotated[int, typer.Option(
    min=0, max=100, help="next versions to try when another writer took one")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout")]
Limit = Annotated[int, typer.Option(min=1, max=100_000, help="at most this many versions")]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "sinkfleet-cli"


def _report(done: Written, what: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"sink": done.sink, "id": list(done.ids), "version": done.version,
                          "confirmed": done.confirmed, "partition": done.partition,
                          "offset": done.offset, "taken": list(done.taken)}))
        return
    where = f"partition {done.partition}, offset {done.offset}"
    if done.confirmed:
        say(f"{_esc(what)}: version {done.version} stored ({where})")
    else:
        say(f"{_esc(what)}: published as version {done.version} ({where}), [bold]unconfirmed[/]"
            " (--no-wait: no worker has stored it yet)")


def _esc(text: str) -> str:
    """Text for a markup line: markup escaped, control characters shown, not obeyed."""
    from rich.markup import escape

    return escape(visible(text))


def _show(rows: list[dict[str, Any]], title: str, as_json: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    if as_json:
        print(json.dumps(rows, default=json_default, ensure_ascii=False))
        return
    if not rows:
        return
    names = list(rows[0])
    if len(rows) == 1:  # one row: a column per line reads better
        table = Table("column", "value", title=Text(visible(title)))
        for name in names:
            table.add_row(Text(name), _cell(rows[0][name]))
    else:
        table = Table(*names, title=Text(visible(f"{title} ({len(rows)} versions)")))
        for row in rows:
            table.add_row(*(_cell(row.get(n)) for n in names))
    console.print(table)


def _cell(value: Any) -> Any:
    """Stored values as plain text: they are untrusted, never parsed as markup."""
    from rich.text import Text

    if value is None:
        return Text("-", style="dim")
    if isinstance(value, (dict, list)):
        return Text(visible(json.dumps(value, ensure_ascii=False)))
    return Text(visible(str(plain(value))))


def _get(family: Family, ids: list[str], sink: str | None, as_json: bool) -> None:
    from sinkfleet.ops.config.writes import current

    settings, cat = settings_and_catalogue()
    row = run(current(settings, cat, family, ids, sink))
    what = f"{family.noun} {'/'.join(ids)}"
    if row is None:
        if as_json:
            print("null")
        err.print(f"{_esc(what)}: no current version (never set, or deleted)", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(row, default=json_default, ensure_ascii=False))
    else:
        _show([row], what, False)


def _history(family: Family, ids: list[str], sink: str | None, limit: int,
             as_json: bool) -> None:
    from sinkfleet.ops.config.writes import history

    settings, cat = settings_and_catalogue()
    rows = run(history(settings, cat, family, ids, sink, limit))
    what = f"{family.noun} {'/'.join(ids)}"
    if not rows and not as_json:
        err.print(f"{_esc(what)}: no versions recorded", highlight=False)
        raise typer.Exit(1)
    _show(rows, f"{what}, newest first", as_json)


def _note(message: str) -> None:
    err.print(_esc(message), highlight=False)


@config_app.command("set")
@friendly
def config_set(component: Component, key: Key,
               value: Annotated[str, typer.Argument(
                   help="the value as JSON: 0.1, true, '\"text\"', '{\"a\": 1}';"
                   " a negative number after --: config set c k -- -1")],
               text: Annotated[bool, typer.Option(
                   "--text", help="VALUE is plain text: store it as a JSON string")] = False,
               by: By = None, sink: SinkOpt = None, no_wait: NoWait = False,
               timeout: Timeout = 30.0, retries: Retries = 3, as_json: AsJson = False
               ) -> None:
    """Set a value: published as the next version (read, +1, confirmed when stored)."""
    from sinkfleet.ops.config.writes import set_config

    settings, cat = settings_and_catalogue()
    raw = json.dumps(value, ensure_ascii=False) if text else value
    done = run(set_config(settings, cat, component, key, raw, by=by or _user(), sink=sink,
                          wait=not no_wait, timeout=timeout, retries=retries, say=_note))
    _report(done, f"configuration {component}/{key}", as_json)


@config_app.command("get")
@friendly
def config_get(component: Component, key: Key, sink: SinkOpt = None,
               as_json: AsJson = False) -> None:
    """The current value, with its version and time (from PostgreSQL)."""
    from sinkfleet.ops.config.writes import CONFIGURATION

    _get(CONFIGURATION, [component, key], sink, as_json)


@config_app.command("history")
@friendly
def config_history(component: Component, key: Key, sink: SinkOpt = None,
                   limit: Limit = 100, as_json: AsJson = False) -> None:
    """Every recorded version, newest first."""
    from sinkfleet.ops.config.writes import CONFIGURATION

    _history(CONFIGURATION, [component, key], sink, limit, as_json)


@config_app.command("rollback")
@friendly
def config_rollback(component: Component, key: Key,
                    to: Annotated[int, typer.Option("--to", min=1,
                                                    help="the version whose value returns")],
                    by: By = None, sink: SinkOpt = None, no_wait: NoWait = False,
                    timeout: Timeout = 30.0, retries: Retries = 3, as_json: AsJson = False
                    ) -> None:
    """Publish an earlier version's value as a NEW version (history is never rewritten)."""
    from sinkfleet.ops.config.writes import rollback_config

    settings, cat = settings_and_catalogue()
    done = run(rollback_config(settings, cat, component, key, to, by=by or _user(),
                               sink=sink, wait=not no_wait, timeout=timeout,
                               retries=retries, say=_note))
    _report(done, f"configuration {component}/{key} (value of version {to})", as_json)


@policy_app.command("activate")
@friendly
def policy_activate(state_bin: Bin,
                    sets: Annotated[list[str] | None, typer.Option(
                        "--set", help="FIELD=VALUE, typed by the schema (repeat);"
                        " e.g. --set rule_id=r7 --set action_weights='{\"1\": 0.7}'")] = None,
                    from_version: Annotated[int | None, typer.Option(
                        "--from-version", min=1,
                        help="start from this version (activate it again) instead of the"
                        " active one")] = None,
                    sink: SinkOpt = None, no_wait: NoWait = False, timeout: Timeout = 30.0,
                    retries: Retries = 3, as_json: AsJson = False) -> None:
    """Make a new version the active policy of a state bin: the active version (or
    --from-version's) with --set changes, parent_version linking where it came from."""
    from sinkfleet.ops.config.fields import parse_fields
    from sinkfleet.ops.config.writes import POLICY, activate_policy

    settings, cat = settings_and_catalogue()
    s = POLICY.sink(cat, sink)
    changes = parse_fields(s.schema, sets or [], owned=POLICY.owned(s))
    done = run(activate_policy(settings, cat, state_bin, changes, from_version=from_version,
                               sink=s.spec.name, wait=not no_wait, timeout=timeout,
                               retries=retries, say=_note))
    _report(done, f"policy {state_bin}", as_json)


@policy_app.command("show")
@friendly
def policy_show(state_bin: Bin, sink: SinkOpt = None, as_json: AsJson = False) -> None:
    """The active version (from PostgreSQL)."""
    from sinkfleet.ops.config.writes import POLICY

    _get(POLICY, [state_bin], sink, as_json)


@policy_app.command("history")
@friendly
def policy_history(state_bin: Bin, sink: SinkOpt = None, limit: Limit = 100,
                   as_json: AsJson = False) -> None:
    """Every recorded version with its parent link, newest first."""
    from sinkfleet.ops.config.writes import POLICY

    _history(POLICY, [state_bin], sink, limit, as_json)

