"""Turn decoded records into row tuples for a sink's columns (pure, hot path).

Values PostgreSQL would reject for the whole batch (NUL in text, invalid JSON,
smallint overflow) are caught here per record, so one bad record becomes a
dead letter instead of failing its batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sinkfleet.catalogue import Column, Sink
from sinkfleet.errors import ValidationError


def _expression(path: tuple[str, ...], nullable_at: tuple[bool, ...]) -> str:
    """A Python expression reading ``path`` from ``rec``; None if a nullable record on the
    way is None. Names are Avro field names ([A-Za-z_][A-Za-z0-9_]*) and are emitted with
    repr(), so the generated code cannot be steered by a schema."""
    expr = "rec"
    for depth, name in enumerate(path):
        expr = f"{expr}[{name!r}]"
        if depth < len(path) - 1 and nullable_at[depth]:
            rest = "".join(f"[{n!r}]" for n in path[depth + 1:])
            return f"(None if {expr} is None else {expr}{rest})"
    return expr


def compile_row_getter(paths: list[tuple[tuple[str, ...], tuple[bool, ...]]]
                       ) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """One generated function building the whole row tuple: ~5x faster than getters."""
    body = ", ".join(_expression(p, n) for p, n in paths)
    source = f"def row(rec):\n    return ({body},)\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "<sinkfleet-row>", "exec"), namespace)
    return namespace["row"]


def _text_ok(value: str, column: str) -> None:
    if "\x00" in value:
        raise ValidationError(f"column {column}: text contains a NUL character")


def _json_ok(value: str, column: str) -> None:
    try:
        json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"column {column}: not valid JSON: {exc}") from None
    if "\\u0000" in value or "\x00" in value:
        raise ValidationError(f"column {column}: JSON contains \\u0000, which jsonb refuses")


def _smallint_ok(value: int, column: str) -> None:
    if not -32768 <= value <= 32767:
        raise ValidationError(f"column {column}: {value} does not fit a smallint")


_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "text": _text_ok,
    "jsonb": _json_ok,
    "smallint": _smallint_ok,
}


class RowBuilder:
    """Builds the COPY tuple for one sink from a decoded record."""

    def __init__(self, sink: Sink) -> None:
        self.columns: list[Column] = [c for c in sink.columns if c.source is not None]
        self.names = [c.name for c in self.columns]
        self._row = compile_row_getter([(c.source.path, c.source.nullable_path)
                                        for c in self.columns if c.source is not None])
        self._checks = [(i, _CHECKS[c.pg_type], c.name) for i, c in enumerate(self.columns)
                        if c.pg_type in _CHECKS]

    def __call__(self, record: dict[str, Any]) -> tuple[Any, ...]:
        try:
            row = self._row(record)
        except (KeyError, TypeError) as exc:
            raise ValidationError(f"record lacks a field the sink needs: {exc}") from None
        for i, check, name in self._checks:
            value = row[i]
            if value is not None:
                check(value, name)
        return row
