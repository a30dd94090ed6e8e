"""What a sink write changed, for the Redis caches written after the commit (pure)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import orjson

from sinkfleet.plainjson import json_default

# An upsert's rank (sinkfleet.sink.state_conflicts.rank_text), beside the row's columns:
# the latest cache decides a write at the same version by it. Not a column: not cached.
RANK_FIELD = "_sinkfleet_rank"


class Tombstone(tuple[Any, ...]):
    """The id of a state row a Kafka tombstone deletes (the id columns' values)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One stored change of a sink with a cache.

    ``append``: ``row`` is a newly stored row. ``upsert``: ``row`` is the new latest
    version of a state id. ``delete``: ``row`` holds only the id columns (and the
    version column, set to the deleted version).
    """

    op: Literal["append", "upsert", "delete"]
    row: dict[str, Any]


class AppendedRows(Sequence[Change]):
    """The ``append`` changes of one write, kept as the row tuples it wrote (``columns``
    name their values). A ``Change`` (and its dict) is made only when one is asked for:
    the cache writer reads the tuples, so the hot path makes no object per row."""

    __slots__ = ("columns", "rows")

    def __init__(self, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        self.columns = tuple(columns)
        self.rows = rows

    def _change(self, row: tuple[Any, ...]) -> Change:
        return Change("append", dict(zip(self.columns, row, strict=True)))

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Change: ...
    @overload
    def __getitem__(self, index: slice) -> list[Change]: ...
    def __getitem__(self, index: int | slice) -> Change | list[Change]:
        if isinstance(index, slice):
            return [self._change(r) for r in self.rows[index]]
        return self._change(self.rows[index])

    def __iter__(self) -> Iterator[Change]:
        return map(self._change, self.rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    def __repr__(self) -> str:
        return f"AppendedRows({len(self.rows)} rows of {', '.join(self.columns)})"


@dataclass(slots=True)
class Written:
    """What one write of a sink did: rows newly stored, and the changes its caches need
    (empty for a sink without a cache). Writers return it; the worker's store step
    hands the changes to Redis only once the transaction has committed."""

    inserted: int = 0
    changes: Sequence[Change] = field(default_factory=list)
    conflicts: int = 0  # state sinks: same-version conflicts newly recorded

    def __iadd__(self, other: Written) -> Written:
        self.inserted += other.inserted
        self.changes = [*self.changes, *other.changes]
        self.conflicts += other.conflicts
        return self


_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def row_json(row: dict[str, Any], jsonb: frozenset[str] = frozenset()) -> str:
    """The row as compact JSON with sorted keys; ``jsonb`` columns (JSON text) embedded.
    Timestamps are ISO-8601 (RFC 3339), UUIDs strings, bytes hex. orjson: this runs
    once per cached row on the worker's hot path (~4x the stdlib's speed)."""
    if jsonb:
        row = dict(row)
        for key in jsonb:
            value = row.get(key)
            if isinstance(value, str):  # parsed: live and rebuilt rows spell it alike
                row[key] = orjson.loads(value)
    # orjson writes uuid.UUID but not asyncpg's subclass of it: json_default does
    return orjson.dumps(row, default=json_default, option=_OPTIONS).decode()
