"""The query model: one sink's rows by filters, in an indexed order, a page at a time.

Shared by ``Reader.query``, ``sinkfleet query rows`` and (later) the HTTP service: every
field of ``Query`` maps 1:1 onto a command-line option and a query-string parameter, and
filters have one text form for both (``parse_filter``)::

    Query("policies", order_by="avg_reward", newest_first=True, limit=100)
    Query("workflow_states", [Filter("status", "=", "failed")])
    Query("memory_entries", [Filter("tags", "contains", ["important"])])
    Query("experience_events", [parse_filter(
        "reward_homeostasis+reward_curiosity+reward_efficiency+reward_goal>0.5")],
        newest_first=True)

Pure: it builds SQL text and bound values, and encodes cursors; the Reader runs them.
Identifiers come from the catalogue only (a name is looked up, never interpolated);
every value is a bound parameter coerced to its column's type. Pages follow a keyset
(the last row's order value and id), never OFFSET; a cursor is bound to the query's
shape (sink, order, filters, tenant) and refused for any other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sinkfleet.catalogue import Sink
from sinkfleet.errors import ConfigError
from sinkfleet.plainjson import plain
from sinkfleet.read.sql import coerce as _coerce
from sinkfleet.sink.postgres.ddl import quote_ident as q
from sinkfleet.sink.postgres.tenancy import tenant_view

MAX_LIMIT = 10_000  # rows per page; more is paged with the cursor
COMPARE = ("=", "!=", "<", "<=", ">", ">=")
OPERATORS = (*COMPARE, "in", "between", "contains", "overlaps", "includes", "is null",
             "is not null")
_SQL_OP = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_NUMERIC = {"smallint", "integer", "bigint", "real", "double precision", "numeric"}
_NAME = r"[a-z_][a-z0-9_]*(?:\s*\+\s*[a-z_][a-z0-9_]*)*"
_WORD_RE = re.compile(rf"\A\s*({_NAME})\s+(in|between|contains|overlaps|includes|is\s+null"
                      rf"|is\s+not\s+null)\b\s*(.*)\Z", re.IGNORECASE | re.DOTALL)
_SYMBOL_RE = re.compile(rf"\A\s*({_NAME})\s*(!=|<=|>=|=|<|>)(.*)\Z", re.DOTALL)
CURSOR_VERSION = 1


class QueryError(ConfigError):
    """A query the model refuses (unknown column, unindexed order, bad cursor …)."""


@dataclass(frozen=True)
class Filter:
    """``column op value``. ``column`` is a sink column, or a sum of numeric columns
    written ``a+b+c``; ``value`` is a list for ``in``/``contains``/``overlaps``, a pair
    for ``between``, nothing for ``is null``/``is not null``. ``includes`` is a
    case-insensitive substring of a text column (seed 004's skills by pattern): a scan
    of the rows the other filters leave, so keep it for small sinks or narrow filters."""

    column: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Query:
    sink: str
    filters: Sequence[Filter] = ()
    order_by: str | None = None  # default: the time column, else the first id column
    newest_first: bool = False  # descending order (newest first for a time column)
    limit: int = 100
    cursor: str | None = None  # from the previous Page
    columns: Sequence[str] | None = None  # projection; default every column


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None  # None: this was the last page


def parse_filter(text: str) -> Filter:
    """The text form of a filter, for the CLI and query strings: ``status=failed``,
    ``avg_reward>0.5``, ``a+b>0.5``, ``status in queued,running``, ``ts between
    2025-01-01,2025-02-01``, ``tags contains important``, ``error is null``. List values
    are comma-separated."""
    m = _WORD_RE.match(text)
    if m is not None:
        column, op, rest = m.group(1), " ".join(m.group(2).lower().split()), m.group(3)
        if op in ("is null", "is not null"):
            if rest.strip():
                raise QueryError(f"filter {text!r}: nothing may follow {op!r}")
            return Filter(_squash(column), op)
        if op == "includes":  # one text, commas and all
            return Filter(_squash(column), op, rest.strip())
        values = [v.strip() for v in rest.split(",")]
        if op == "between" and len(values) != 2:
            raise QueryError(f"filter {text!r}: write COLUMN between LOW,HIGH")
        return Filter(_squash(column), op, values)
    m = _SYMBOL_RE.match(text)
    if m is None:
        raise QueryError(
            f"filter {text!r} is not COLUMN OP VALUE: OP is one of = != < <= > >=, or"
            " in / between / contains / overlaps (comma-separated values), includes (a"
            " substring), or is null / is not null; e.g. status=failed, avg_reward>0.5,"
            " tags contains important, trigger_pattern includes code")
    return Filter(_squash(m.group(1)), m.group(2), m.group(3))


def _squash(column: str) -> str:
    return "+".join(part.strip() for part in column.split("+"))


@dataclass
class _Built:
    clauses: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    fixed: set[str] = field(default_factory=set)  # columns pinned by "=" (index prefixes)
    shape: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


class SinkQuery:
    """Plans ``Query``s over one sink; ``tenant`` set reads its tenant view."""

    def __init__(self, sink: Sink, tenant: Any = None) -> None:
        self.sink = sink
        self.spec = sink.spec
        self.types = {c.name: c.pg_type for c in sink.columns}
        self.nullable = {c.name for c in sink.columns if c.nullable}
        self.names = [c.name for c in sink.columns]
        tcol = self.spec.tenant_column
        self.tenant = None if tenant is None or tcol is None else coerce(
            self.types[tcol], tenant, "tenant")
        self.relation = (tenant_view(sink) if self.tenant is not None
                         else self.spec.qualified_table)

    # --- names ---------------------------------------------------------------------
    def column(self, name: Any, purpose: str) -> str:
        """``name`` if the sink has that column, else an error listing those it has."""
        if not isinstance(name, str) or name not in self.types:
            raise QueryError(f"sink {self.spec.name!r} has no column {name!r} ({purpose});"
                             f" columns: {', '.join(self.names)}")
        return name

    def orderable(self, fixed: set[str]) -> list[str]:
        """Columns an index returns in order, given the columns pinned by ``=``: the
        time column, and the first column of a B-tree index (or the primary key) whose
        earlier columns are all pinned."""
        out = [self.spec.time_column] if self.spec.time_column else []
        keys = [self.spec.key_columns]  # the primary key, in its index order
        keys += [list(i.columns) for i in self.spec.indexes if i.using == "btree"]
        for cols in keys:
            for col in cols:
                if col not in out:
                    out.append(col)
                if col not in fixed:
                    break
        return out

    # --- the plan ------------------------------------------------------------------
    def plan(self, query: Query) -> tuple[str, list[Any], _Keyset]:
        """SELECT text, bound values, and how to make the next cursor from a page."""
        limit = query.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise QueryError(f"limit must be a positive integer, got {limit!r}")
        if limit > MAX_LIMIT:
            raise QueryError(f"limit {limit} is above the cap of {MAX_LIMIT:,} rows a page;"
                             " ask for fewer and follow the cursor for more")
        built = _Built()
        if self.tenant is not None:
            built.fixed.add(self.spec.tenant_column or "")
        for f in query.filters:
            self._filter(f, built)
        order = self._order(query, built.fixed)
        ties = [c for c in self.spec.id if c != order]
        keys = [order, *ties]
        shape = [CURSOR_VERSION, self.spec.name, order, bool(query.newest_first),
                 built.shape, plain(self.tenant)]
        digest = hashlib.blake2b(json.dumps(shape, default=plain).encode(),
                                 digest_size=12).hexdigest()
        keyset = _Keyset(keys, digest, query.newest_first)
        if query.cursor is not None:
            values = keyset.decode(query.cursor)
            built.clauses.append(self._after(order, ties, values, query.newest_first, built))
        wanted = self._projection(query.columns)
        select = [*wanted, *(k for k in keys if k not in wanted)]
        direction = " DESC" if query.newest_first else ""
        where = f" WHERE {' AND '.join(built.clauses)}" if built.clauses else ""
        order_sql = ", ".join(f"{q(k)}{direction}" for k in keys)
        sql = (f"SELECT {', '.join(map(q, select))} FROM {self.relation}{where}"
               f" ORDER BY {order_sql} LIMIT {built.bind(limit + 1)}")
        keyset.limit, keyset.wanted = limit, wanted
        return sql, built.args, keyset

    def _projection(self, columns: Sequence[str] | None) -> list[str]:
        if columns is None:
            return list(self.names)
        if isinstance(columns, str) or not columns:
            raise QueryError("columns must be a non-empty list of column names")
        return [self.column(c, "columns") for c in dict.fromkeys(columns)]

    def _order(self, query: Query, fixed: set[str]) -> str:
        order = (query.order_by if query.order_by is not None
                 else self.spec.time_column or self.spec.id[0])
        self.column(order, "order_by")
        allowed = self.orderable(fixed)
        if order not in allowed:
            raise QueryError(
                f"cannot order {self.spec.name!r} by {order!r}: no index returns it in"
                f" order, so it would sort the whole table; order by one of"
                f" {', '.join(allowed)} (an index's later column becomes orderable when"
                " its earlier columns are fixed with = filters)")
        return order

    def _filter(self, f: Filter, built: _Built) -> None:
        if not isinstance(f, Filter):
            raise QueryError(f"filters must be Filter(column, op, value), got {f!r}")
        if f.op not in OPERATORS:
            raise QueryError(f"filter on {f.column!r}: unknown operator {f.op!r}; one of"
                             f" {', '.join(OPERATORS)}")
        parts = f.column.split("+") if isinstance(f.column, str) else [f.column]
        if len(parts) > 1:
            self._sum_filter(f, parts, built)
            return
        name = self.column(f.column, "filter")
        kind = self.types[name]
        col = q(name)
        where = f"filter {name} {f.op}"
        if f.op in ("is null", "is not null"):
            built.clauses.append(f"{col} {f.op.upper()}")
            built.shape.append([name, f.op])
            return
        is_array = kind.endswith("[]")
        if kind == "jsonb" or (is_array and f.op not in ("contains", "overlaps")):
            raise QueryError(f"column {name!r} is {kind}: {f.op} needs a scalar column"
                             + ("; use contains or overlaps" if is_array else ""))
        if f.op == "includes":
            if kind != "text" or not isinstance(f.value, str) or not f.value:
                raise QueryError(f"{where}: includes needs a text column and a non-empty"
                                 f" text (column {name!r} is {kind})")
            if "\x00" in f.value:
                raise QueryError(f"{where}: NUL is not allowed in a text")
            escaped = re.sub(r"([\\%_])", r"\\\1", f.value)
            built.clauses.append(f"{col} ILIKE {built.bind('%' + escaped + '%')} ESCAPE '\\'")
            built.shape.append([name, "includes", f.value])
            return
        if f.op in ("contains", "overlaps"):
            if not is_array:
                raise QueryError(f"column {name!r} is {kind}, not an array: {f.op} needs an"
                                 " array column")
            values = [coerce(kind[:-2], v, where) for v in _listed(f, where)]
            op = "@>" if f.op == "contains" else "&&"
            built.clauses.append(f"{col} {op} {built.bind(values)}::{kind}")
            built.shape.append([name, f.op, values])
            return
        self._scalar(name, col, kind, f, built)

    def _scalar(self, name: str, col: str, kind: str, f: Filter, built: _Built) -> None:
        where = f"filter {name} {f.op}"
        if f.op == "in":
            values = [coerce(kind, v, where) for v in _listed(f, where)]
            if any(v is None for v in values):
                raise QueryError(f"{where}: null is not a value; use is null")
            built.clauses.append(f"{col} = ANY({built.bind(values)}::{kind}[])")
            built.shape.append([name, "in", values])
            return
        if f.op == "between":
            values = _listed(f, where)
            if len(values) != 2:
                raise QueryError(f"{where}: give two values, low and high")
            low, high = (coerce(kind, v, where) for v in values)
            if low is None or high is None:
                raise QueryError(f"{where}: null is not a bound")
            built.clauses.append(f"{col} BETWEEN {built.bind(low)} AND {built.bind(high)}")
            built.shape.append([name, "between", [low, high]])
            return
        value = coerce(kind, f.value, where)
        if value is None:  # "= None" reads as "is null", as the equality filters always did
            if f.op not in ("=", "!="):
                raise QueryError(f"{where}: null compares with = or != only")
            op = "is null" if f.op == "=" else "is not null"
            built.clauses.append(f"{col} {op.upper()}")
            built.shape.append([name, op])
            return
        built.clauses.append(f"{col} {_SQL_OP[f.op]} {built.bind(value)}")
        built.shape.append([name, f.op, value])
        if f.op == "=":
            built.fixed.add(name)

    def _sum_filter(self, f: Filter, parts: list[str], built: _Built) -> None:
        names = [self.column(p, "filter sum") for p in parts]
        kinds = {self.types[n] for n in names}
        if not kinds <= _NUMERIC:
            raise QueryError(f"filter {f.column!r}: a sum needs numeric columns; "
                             + ", ".join(f"{n} is {self.types[n]}" for n in names
                                         if self.types[n] not in _NUMERIC))
        if f.op not in COMPARE and f.op != "between":
            raise QueryError(f"filter {f.column!r}: a sum compares with = != < <= > >= or"
                             " between")
        kind = ("double precision" if kinds & {"real", "double precision"}
                else "numeric" if "numeric" in kinds else "bigint")
        expr = "(" + " + ".join(f"{q(n)}::{kind}" for n in names) + ")"
        where = f"filter {f.column} {f.op}"
        if f.op == "between":
            values = _listed(f, where)
            if len(values) != 2:
                raise QueryError(f"{where}: give two values, low and high")
            low, high = (coerce(kind, v, where) for v in values)
            built.clauses.append(f"{expr} BETWEEN {built.bind(low)} AND {built.bind(high)}")
            built.shape.append([names, "between", [low, high]])
            return
        value = coerce(kind, f.value, where)
        if value is None:
            raise QueryError(f"{where}: give a number")
        built.clauses.append(f"{expr} {_SQL_OP[f.op]} {built.bind(value)}")
        built.shape.append([names, f.op, value])

    def _after(self, order: str, ties: list[str], values: list[Any], desc: bool,
               built: _Built) -> str:
        """Rows after the cursor's (order value, id) in ``ORDER BY order, id`` — ASC puts
        nulls last and DESC first, as PostgreSQL's B-tree does, so an index serves both."""
        value = coerce(self.types[order], values[0], "cursor")
        ids = [coerce(self.types[c], v, "cursor") for c, v in zip(ties, values[1:],
                                                                  strict=True)]
        col = q(order)
        more = "<" if desc else ">"
        if ties:
            left = ", ".join(map(q, ties))
            right = ", ".join(built.bind(v) for v in ids)
            tie = f"({left}) {more} ({right})" if len(ties) > 1 else f"{left} {more} {right}"
        else:
            tie = "false"  # the order column is the whole id: unique, never null
        if value is None:  # among the nulls: last ascending, first descending
            nulls = f"({col} IS NULL AND {tie})"
            return f"({nulls} OR {col} IS NOT NULL)" if desc else nulls
        v = built.bind(value)
        # "c >= v AND (…)" rather than a row comparison: an index on c alone serves it
        step = f"({col} {more}= {v} AND ({col} {more} {v} OR {tie}))"
        if order in self.nullable and not desc:
            return f"({step} OR {col} IS NULL)"
        return step


@dataclass
class _Keyset:
    """Cursor encoding for one planned query: its key columns and shape digest."""

    keys: list[str]
    shape: str
    desc: bool
    limit: int = 0
    wanted: list[str] = field(default_factory=list)

    def page(self, records: Sequence[Any]) -> Page:
        """The page of the planned SELECT's records (asyncpg ``Record``s: values in
        SELECT order, and by name). The SELECT lists the wanted columns first and then
        any key column only the cursor needs, so zipping with the wanted names drops
        those — one C-level pass per row (``dict(record)`` costs a third more)."""
        more = len(records) > self.limit
        records = records[:self.limit]
        cursor = self.encode([records[-1][k] for k in self.keys]) if more else None
        names = self.wanted
        return Page([dict(zip(names, r, strict=False)) for r in records], cursor)

    def encode(self, values: list[Any]) -> str:
        body = json.dumps([self.shape, [plain(v) for v in values]],
                          separators=(",", ":")).encode()
        mac = hashlib.blake2b(body, key=b"sinkfleet cursor", digest_size=8).digest()
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def decode(self, cursor: Any) -> list[Any]:
        bad = QueryError("the cursor is damaged or was altered: pass the next_cursor of"
                         " the previous page unchanged, or start again without a cursor")
        if not isinstance(cursor, str) or len(cursor) > 4096:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            mac, body = raw[:8], raw[8:]
            if hashlib.blake2b(body, key=b"sinkfleet cursor", digest_size=8).digest() != mac:
                raise bad
            shape, values = json.loads(body)
        except (ValueError, TypeError):
            raise bad from None
        if shape != self.shape:
            raise QueryError("the cursor belongs to another query (its sink, order,"
                             " direction, filters or tenant differ): page a query with"
                             " the cursor it returned, or start again without a cursor")
        if not isinstance(values, list) or len(values) != len(self.keys):
            raise bad
        return values


def coerce(kind: str, value: Any, where: str) -> Any:
    """``value`` in column type ``kind`` (sql.coerce), refusing what PostgreSQL text
    cannot hold (NUL), so a hostile value is a clear error rather than a driver's."""
    try:
        out = _coerce(kind, value, where)
    except QueryError:
        raise
    except ConfigError as exc:
        raise QueryError(str(exc)) from None
    if isinstance(out, str) and "\x00" in out:
        raise QueryError(f"{where}: a text value cannot contain a NUL character")
    return out


def _listed(f: Filter, where: str) -> list[Any]:
    value = f.value
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value:
        raise QueryError(f"{where}: give a non-empty list of values")
    return list(value)
