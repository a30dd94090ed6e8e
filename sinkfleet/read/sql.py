"""The read API's queries and value conversions (pure: strings and values, no I/O).

Identifiers come from the catalogue only (checked, quoted); every value is bound.
Rows come back as plain dicts of Python values whatever their source: jsonb parsed,
timestamps as aware datetimes, bytea as bytes — a cached row decodes to the same dict
as the stored one.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.catalogue.models import CUBE_MAX_DIMENSION
from sinkfleet.errors import CatalogueError, ConfigError
from sinkfleet.sink.postgres.ddl import AUDIT_CHAIN_COLUMNS, HISTORY_COLUMNS
from sinkfleet.sink.postgres.ddl import quote_ident as q
from sinkfleet.sink.postgres.tenancy import tenant_history_view, tenant_view

ACTOR_COLUMNS = ("actor", "actor_id")  # audit_trail(actor=…) filters the first present
_INTS = {"smallint", "integer", "bigint"}
_FLOATS = {"real", "double precision"}
_TRUE, _FALSE = {"true", "t", "yes", "y", "1", "on"}, {"false", "f", "no", "n", "0", "off"}


def find_sink(catalogue: Catalogue, name: str, mode: str | None = None) -> Sink:
    """The sink called ``name`` (of ``mode``), or an error naming those that exist."""
    fitting = {n: s for n, s in catalogue.sinks.items() if mode is None or s.spec.mode == mode}
    if name in fitting:
        return fitting[name]
    what = f"{mode} sinks" if mode else "sinks"
    known = ", ".join(sorted(fitting)) or "none"
    if name in catalogue.sinks:
        raise CatalogueError(f"sink {name!r} is a {catalogue.sinks[name].spec.mode} sink;"
                             f" this needs a {mode} sink ({what}: {known})")
    raise CatalogueError(f"no sink {name!r} in sinks/ ({what}: {known})")


def parse_time(value: Any, where: str) -> dt.datetime:
    """A datetime, or an ISO-8601 string (naive means UTC)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an ISO-8601 time such as"
                              " 2025-01-31T12:00:00+00:00") from None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    raise ConfigError(f"{where}: expected a datetime or ISO-8601 string, got"
                      f" {type(value).__name__}")


def coerce(pg_type: str, value: Any, where: str) -> Any:
    """A value to bind against a column of ``pg_type``; strings (from the CLI, say) are
    parsed into the column's type."""
    if value is None:
        return None
    if pg_type == "timestamptz":
        return parse_time(value, where)
    if not isinstance(value, str):
        return value
    try:
        if pg_type in _INTS:
            return int(value)
        if pg_type in _FLOATS:
            return float(value)
        if pg_type == "numeric":
            return Decimal(value)
        if pg_type == "uuid":
            return uuid.UUID(value)
        if pg_type == "date":
            return dt.date.fromisoformat(value)
        if pg_type == "timestamp":
            return dt.datetime.fromisoformat(value)
        if pg_type == "time":
            return dt.time.fromisoformat(value)
        if pg_type == "bytea":
            return bytes.fromhex(value)
        if pg_type == "boolean":
            if value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError(value)
    except (ValueError, InvalidOperation):
        raise ConfigError(f"{where}: {value!r} is not a valid {pg_type}") from None
    return value


def decode_cached(types: Mapping[str, str], data: dict[str, Any]) -> dict[str, Any]:
    """A cached row (row JSON) back into the values PostgreSQL would give."""
    out = {}
    for name, value in data.items():
        kind = types.get(name)
        if value is not None and isinstance(value, str):
            if kind in ("timestamptz", "timestamp"):
                value = dt.datetime.fromisoformat(value)
            elif kind == "date":
                value = dt.date.fromisoformat(value)
            elif kind == "time":
                value = dt.time.fromisoformat(value)
            elif kind == "bytea":
                value = bytes.fromhex(value)
            elif kind == "uuid":
                value = uuid.UUID(value)
            elif kind == "numeric":
                value = Decimal(value)
        out[name] = value
    return out


class SinkSql:
    """The read queries of one sink; ``tenant_scoped`` reads its tenant views (the
    rows of the tenant set in the transaction, docs/reads.md)."""

    def __init__(self, sink: Sink, tenant_scoped: bool = False) -> None:
        self.sink = sink
        self.spec = sink.spec
        scoped = tenant_scoped and sink.spec.tenant_column is not None
        self.table = tenant_view(sink) if scoped else sink.spec.qualified_table
        if sink.spec.state is not None:
            self.history_table = (tenant_history_view(sink) if scoped else
                                  f"{q(sink.spec.db_schema)}.{q(sink.spec.history_table)}")
        self.types = {c.name: c.pg_type for c in sink.columns}
        self.nullable = {c.name for c in sink.columns if c.nullable}
        self.jsonb = frozenset(n for n, t in self.types.items() if t == "jsonb")
        self.columns = [c.name for c in sink.columns]
        self.dimensions = {c.name: c.dimension for c in sink.columns if c.dimension}

    def column(self, name: str, purpose: str) -> str:
        if name not in self.types:
            raise ConfigError(f"sink {self.spec.name!r} has no column {name!r} ({purpose});"
                              f" columns: {', '.join(self.columns)}")
        return name

    def value(self, name: str, value: Any, purpose: str) -> Any:
        """``value`` coerced to column ``name``'s type (for keys and bound parameters)."""
        self.column(name, purpose)
        return coerce(self.types[name], value, f"{purpose} {name}")

    def _select(self, extra: Sequence[str] = ()) -> str:
        return ", ".join(q(c) for c in (*self.columns, *extra))

    def _equal(self, filters: Mapping[str, Any], args: list[Any], purpose: str
               ) -> list[str]:
        """``col = $n`` per filter (``IS NULL`` for None); values coerced and bound."""
        clauses = []
        for name, value in filters.items():
            self.column(name, purpose)
            kind = self.types[name]
            if kind == "jsonb" or kind.endswith("[]"):
                raise ConfigError(f"column {name!r} is {kind}: filter on scalar columns")
            if value is None:
                clauses.append(f"{q(name)} IS NULL")
                continue
            args.append(coerce(kind, value, f"{purpose} {name}"))
            clauses.append(f"{q(name)} = ${len(args)}")
        return clauses

    def _ids(self, ids: Sequence[Any], args: list[Any]) -> list[str]:
        spec = self.spec
        if len(ids) != len(spec.id):
            raise ConfigError(f"sink {spec.name!r} is keyed by ({', '.join(spec.id)}):"
                              f" give {len(spec.id)} value(s), got {len(ids)}")
        return self._equal(dict(zip(spec.id, ids, strict=True)), args, "id")

    def id_values(self, ids: Sequence[Any]) -> list[Any]:
        """The id parts coerced to their columns' types (for keys and queries)."""
        args: list[Any] = []
        self._ids(ids, args)
        return args

    def _time_range(self, start: Any, end: Any, args: list[Any], what: str) -> list[str]:
        if start is None and end is None:
            return []
        column = self.spec.time_column
        if column is None:
            raise ConfigError(f"sink {self.spec.name!r} has no time_column, so {what} cannot"
                              " be limited to a time range")
        clauses = []
        if start is not None:
            args.append(coerce(self.types[column], start, "start"))
            clauses.append(f"{q(column)} >= ${len(args)}")
        if end is not None:
            args.append(coerce(self.types[column], end, "end"))
            clauses.append(f"{q(column)} < ${len(args)}")
        return clauses

    @staticmethod
    def _where(clauses: list[str]) -> str:
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""

    def _vector(self, name: str, values: Any, purpose: str) -> list[float]:
        """A query vector for ``name``, a vector column (``dimension`` ≤ 100, cube's)."""
        self.column(name, purpose)
        dimension = self.dimensions.get(name)
        if dimension is None or dimension > CUBE_MAX_DIMENSION:
            raise ConfigError(f"column {name!r} is not a vector of at most"
                              f" {CUBE_MAX_DIMENSION} dimensions ('dimension' in its sink)")
        try:
            vector = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"{purpose}: {values!r} is not a list of numbers") from None
        if len(vector) != dimension or not all(map(math.isfinite, vector)):
            raise ConfigError(f"{purpose}: give {dimension} finite numbers for {name!r},"
                              f" got {len(vector)}")
        return vector

    def nearest(self, column: str, vector: Any, k: int, where: Mapping[str, Any] | None
                ) -> tuple[str, list[Any]]:
        """The ``k`` rows whose ``column`` is nearest ``vector`` (Euclidean), nearest
        first, each with its ``distance``: a GiST k-NN scan with a cube index."""
        args: list[Any] = [self._vector(column, vector, "nearest")]
        clauses = self._equal(where or {}, args, "where")
        args.append(_limit(k))
        distance = f"cube({q(column)}::float8[]) <-> cube($1::float8[])"
        return (f"SELECT {self._select()}, {distance} AS distance"
                f" FROM {self.spec.qualified_table}{self._where(clauses)}"
                f" ORDER BY {distance} LIMIT ${len(args)}", args)

    def region(self, column: str, low: Any, high: Any, where: Mapping[str, Any] | None,
               limit: int) -> tuple[str, list[Any]]:
        """Rows whose ``column`` lies in the box [low, high] (bounds included), by id."""
        args: list[Any] = [self._vector(column, low, "low"), self._vector(column, high, "high")]
        clauses = [f"cube({q(column)}::float8[]) <@ cube($1::float8[], $2::float8[])",
                   *self._equal(where or {}, args, "where")]
        args.append(_limit(limit))
        order = ", ".join(q(c) for c in self.spec.id)
        return (f"SELECT {self._select()} FROM {self.spec.qualified_table}"
                f"{self._where(clauses)} ORDER BY {order} LIMIT ${len(args)}", args)

    def latest(self, ids: Sequence[Any], columns: Sequence[str]) -> tuple[str, list[Any]]:
        args: list[Any] = []
        clauses = self._ids(ids, args)
        return (f"SELECT {', '.join(q(c) for c in columns)} FROM {self.table}"
                f"{self._where(clauses)}", args)

    def history(self, ids: Sequence[Any]) -> tuple[str, list[Any]]:
        spec = self.spec
        assert spec.state is not None
        args: list[Any] = []
        clauses = self._ids(ids, args)
        return (f"SELECT {self._select(HISTORY_COLUMNS)} FROM {self.history_table}"
                f"{self._where(clauses)}"
                f" ORDER BY {q(spec.state.version)}, kafka_partition, kafka_offset", args)

    def audit_trail(self, *, tenant: Any, actor: Any, start: Any, end: Any,
                    where: Mapping[str, Any] | None, limit: int) -> tuple[str, list[Any]]:
        spec = self.spec
        assert spec.audit is not None
        filters: dict[str, Any] = {spec.audit.tenant: tenant}
        if actor is not None:
            column = next((c for c in ACTOR_COLUMNS if c in self.types), None)
            if column is None:
                raise ConfigError(f"sink {spec.name!r} has no actor column (one of"
                                  f" {', '.join(ACTOR_COLUMNS)}); columns:"
                                  f" {', '.join(self.columns)}")
            filters[column] = actor
        args: list[Any] = []
        # ``where`` only narrows: its own clauses are ANDed to the tenant's (and actor's),
        # so a where on the tenant column can never read another tenant's trail.
        clauses = self._equal(filters, args, "audit_trail")
        clauses += self._equal(where or {}, args, "where")
        clauses += self._time_range(start, end, args, "audit_trail")
        args.append(_limit(limit))
        return (f"SELECT {self._select(AUDIT_CHAIN_COLUMNS)} FROM {self.table}"
                f"{self._where(clauses)} ORDER BY chain_seq LIMIT ${len(args)}", args)


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    return limit
