"""What a sink's Redis caches look like: keys, values, scores (pure, no I/O).

``latest`` (state sinks): ``sinkfleet:<sink>:latest:<id1>:<id2>…`` → hash ``{v, d}``.
``recent`` (cache.recent): ``sinkfleet:<sink>:recent:<by1>:<by2>…`` → sorted set of row
JSON scored by the ``order_by`` column in microseconds since the epoch. Key parts are
percent-encoded like Kafka keys (``sinkfleet.keys``), so they always split back.

Cached rows are the columns the worker knows without reading back, so a row cached live
and the same row rebuilt from PostgreSQL are the same bytes: ``latest`` every column (the
state upsert returns the stored row), ``recent`` the columns filled from the record
(defaulted ones such as ``ingested_at`` are left out: appends are not read back).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.errors import CatalogueError
from sinkfleet.keys import join_key
from sinkfleet.sink.changes import RANK_FIELD, row_json
from sinkfleet.sink.state_conflicts import content_hash, millis, rank_text

# The history's rank columns, read beside a latest row by rebuilds and repairs.
PRODUCED_FIELD, HASH_FIELD = "_sinkfleet_produced_at", "_sinkfleet_content_hash"

PREFIX = "sinkfleet"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
_SCORE_TYPES = {"timestamptz", "date", "smallint", "integer", "bigint", "real",
                "double precision", "numeric"}
# A recent row stamped further ahead than this (a wrong clock, a hostile producer) is
# scored as if stamped now + FUTURE_SKEW: scored by its timestamp it would hold one of the
# `keep` slots of its key until that time (years, maybe), hiding the real newest rows.
# docs/sink-modes.md, "Recent cache and future timestamps".
FUTURE_SKEW = dt.timedelta(minutes=5)
TIME_TYPES = frozenset({"timestamptz", "date"})


def score(value: Any) -> float:
    """A sorted-set score: timestamps and dates in µs since the epoch, numbers as is."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # asyncpg gives aware datetimes; be safe with naive ones
            value = value.replace(tzinfo=dt.UTC)
        return float((value - _EPOCH) // _ONE_US)
    if isinstance(value, dt.date):
        return float((value - _EPOCH.date()).days * 86_400_000_000)
    if value is None:
        return 0.0
    return float(value)


@dataclass(frozen=True)
class RecentLayout:
    by: tuple[str, ...]
    keep: int
    ttl_seconds: int
    order_by: str
    order_type: str


@dataclass(frozen=True)
class CacheLayout:
    """The caches of one sink (``latest`` and/or ``recent``)."""

    sink: str
    latest_columns: tuple[str, ...]  # cached columns, in table order
    recent_columns: tuple[str, ...]
    jsonb: frozenset[str]
    ids: tuple[str, ...]
    version: str | None  # state sinks: the version column
    latest: bool
    recent: RecentLayout | None
    types: dict[str, str]

    @classmethod
    def of(cls, sink: Sink) -> CacheLayout:
        spec = sink.spec
        cache = spec.cache
        types = {c.name: c.pg_type for c in sink.columns}
        recent = None
        if cache is not None and cache.recent is not None:
            order_by = cache.recent.order_by or spec.time_column
            assert order_by is not None  # the catalogue guarantees it
            if types[order_by] not in _SCORE_TYPES:
                raise CatalogueError(
                    f"sink {spec.name!r}: cache.recent.order_by {order_by!r} is"
                    f" {types[order_by]}; a recent cache orders by a timestamp, date or"
                    " number")
            recent = RecentLayout(tuple(cache.recent.by), cache.recent.keep,
                                  cache.recent.ttl_seconds, order_by, types[order_by])
        return cls(
            sink=spec.name,
            latest_columns=tuple(c.name for c in sink.columns),
            recent_columns=tuple(c.name for c in sink.columns if c.source is not None),
            jsonb=frozenset(c.name for c in sink.columns if c.pg_type == "jsonb"),
            ids=tuple(spec.id),
            version=spec.state.version if spec.state is not None else None,
            latest=bool(cache is not None and cache.latest and spec.state is not None),
            recent=recent,
            types=types,
        )

    @property
    def cached(self) -> bool:
        return self.latest or self.recent is not None

    # --- keys ---------------------------------------------------------------------------
    def prefix(self, cache: str) -> str:
        return f"{PREFIX}:{self.sink}:{cache}:"

    def latest_key(self, ids: Sequence[Any]) -> str:
        return self.prefix("latest") + join_key(ids).decode()

    def recent_key(self, by: Sequence[Any]) -> str:
        return self.prefix("recent") + join_key(by).decode()

    def filled_key(self) -> str:
        """Set once the sink's caches hold what PostgreSQL holds; gone when Redis lost
        them (FLUSHALL, a restart without persistence, an eviction): see writer.py. Not
        under the sink's prefix ('-' is in no sink name), so deleting or rebuilding the
        sink's keys leaves it."""
        return f"{PREFIX}:-filled:{self.sink}"

    def id_of(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.ids)

    def by_of(self, row: dict[str, Any]) -> tuple[Any, ...]:
        assert self.recent is not None
        return tuple(row.get(c) for c in self.recent.by)

    # --- values -------------------------------------------------------------------------
    @functools.cached_property
    def _column_sets(self) -> dict[str, frozenset[str]]:
        return {"latest": frozenset(self.latest_columns),
                "recent": frozenset(self.recent_columns)}

    def columns(self, cache: str) -> tuple[str, ...]:
        return self.latest_columns if cache == "latest" else self.recent_columns

    def project(self, row: dict[str, Any], cache: str) -> dict[str, Any]:
        """The cached columns of ``row`` (those it has)."""
        columns = self.columns(cache)
        if len(row) == len(columns) and row.keys() == self._column_sets[cache]:
            return row  # the worker's rows: exactly the cached columns already
        return {c: row[c] for c in columns if c in row}

    def row_json(self, row: dict[str, Any], cache: str) -> str:
        return row_json(self.project(row, cache), self.jsonb)

    def rank(self, row: dict[str, Any]) -> str:
        """A latest row's same-version rank: the writer's, or from the history's rank
        columns read beside the row (rebuilds, repairs), else from its content."""
        if RANK_FIELD in row:
            return str(row[RANK_FIELD])
        digest = row.get(HASH_FIELD)
        if digest is None:
            digest = content_hash(self.project(row, "recent"), self.jsonb)
        return rank_text(millis(row.get(PRODUCED_FIELD)), bytes(digest))

    def score(self, row: dict[str, Any], now: dt.datetime | None = None) -> float:
        """A recent row's score: its ``order_by`` value, a time capped at ``now`` (default:
        the clock) + ``FUTURE_SKEW``."""
        assert self.recent is not None
        value = score(row.get(self.recent.order_by))
        if self.recent.order_type not in TIME_TYPES:
            return value
        return min(value, score((now or dt.datetime.now(dt.UTC)) + FUTURE_SKEW))


def cache_layouts(sinks: Sequence[Sink]) -> dict[str, CacheLayout]:
    """The layouts of the sinks that have a cache."""
    layouts = {s.spec.name: CacheLayout.of(s) for s in sinks}
    return {name: lay for name, lay in layouts.items() if lay.cached}


def cached_sinks(catalogue: Catalogue, only: str | None = None) -> list[Sink]:
    """The catalogue's sinks with a cache (``only``: that one, or a clear error)."""
    with_cache = {n: s for n, s in catalogue.sinks.items()
                  if CacheLayout.of(s).cached}
    if only is None:
        return [with_cache[n] for n in sorted(with_cache)]
    if only not in catalogue.sinks:
        raise CatalogueError(f"no sink {only!r} in sinks/ (known: "
                             f"{', '.join(sorted(catalogue.sinks)) or 'none'})")
    if only not in with_cache:
        raise CatalogueError(f"sink {only!r} has no Redis cache (sinks with one: "
                             f"{', '.join(sorted(with_cache)) or 'none'})")
    return [with_cache[only]]
