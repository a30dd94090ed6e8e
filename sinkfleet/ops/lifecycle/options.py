"""Options and formats the lifecycle commands (retention, archive) share."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from sinkfleet.errors import ConfigError

Sinks = Annotated[list[str] | None, typer.Option(
    "--sink", help="only this sink (repeatable); default: every sink with a policy")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout")]


def parse_when(option: str, text: str) -> datetime:
    """``text`` as an aware datetime; a ConfigError naming ``option`` otherwise."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not an ISO-8601 time, e.g."
                          " 2026-11-25T09:30:00+00:00") from None
    if when.tzinfo is None:
        raise ConfigError(f"{option} {text!r} has no timezone: add one, e.g. {text}+00:00")
    return when


def size_text(n: int) -> str:
    """1,234 B / 12.3 KiB / … GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def range_text(start: datetime, end: datetime) -> str:
    return f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}"
