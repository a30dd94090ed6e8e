"""Per-record checks of the catalogue's column limits (pure, hot path): a vector's
``dimension`` and a bytea or text column's ``max_bytes``.

A vector of the wrong length, or with NaN or ±infinity, would be stored as sent but
would poison every distance and region query over it (cube takes NaN as a coordinate).
So such a record becomes a dead letter that says which element is wrong, and its
partition goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sinkfleet.catalogue import Column, Sink
from sinkfleet.errors import ValidationError


def _vector(dimension: int) -> Callable[[Any, str], None]:
    def check(value: Any, column: str) -> None:
        if len(value) != dimension:
            raise ValidationError(f"column {column}: a vector of {len(value)} elements; the"
                                  f" sink stores exactly {dimension}")
        for i, x in enumerate(value):
            if x is None or not math.isfinite(x):
                raise ValidationError(f"column {column}: element [{i}] is {x}; a vector"
                                      " holds finite numbers only")
    return check


def _sized(limit: int) -> Callable[[Any, str], None]:
    def check(value: Any, column: str) -> None:
        size = len(value.encode()) if isinstance(value, str) else len(value)
        if size > limit:
            raise ValidationError(f"column {column}: {size} bytes; the sink stores at most"
                                  f" {limit} (max_bytes)")
    return check


def _check_of(col: Column) -> Callable[[Any, str], None] | None:
    if col.dimension is not None:
        return _vector(col.dimension)
    if col.max_bytes is not None:
        return _sized(col.max_bytes)
    return None


def column_checks(sink: Sink, names: list[str]) -> Callable[[tuple[Any, ...]], None] | None:
    """The limit checks of a row tuple (``names`` its columns); None if no column has one."""
    by_name = {c.name: c for c in sink.columns}
    return row_check([(i, fn, name) for i, name in enumerate(names)
                      if (fn := _check_of(by_name[name])) is not None])


def row_check(checks: list[tuple[int, Callable[[Any, str], None], str]]
              ) -> Callable[[tuple[Any, ...]], None] | None:
    """One function running each ``(index, check, column name)`` on a row tuple's
    non-null values; None when there is nothing to check."""
    if not checks:
        return None

    def check(row: tuple[Any, ...]) -> None:
        for i, fn, name in checks:
            if row[i] is not None:
                fn(row[i], name)
    return check
