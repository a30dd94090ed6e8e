"""Helpers every command module shares: the consoles, error handling, settings.

A leaf: it imports nothing from the commands, so a command module anywhere (here, or
beside its capability in sinkfleet/ops/) imports it at the top, one way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.errors import SinkfleetError

T = TypeVar("T")

console = Console()
err = Console(stderr=True)


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn sinkfleet's own errors into one red line and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except SinkfleetError as exc:
            # escaped: messages quote servers and records, whose text may look like markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings_and_catalogue() -> tuple[Settings, Catalogue]:
    settings = load_settings()
    return settings, load_catalogue(settings.home)


def say(message: str) -> None:
    console.print(message, highlight=False)

