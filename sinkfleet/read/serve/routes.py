"""The read service's routes: each maps its path and query string onto the Reader
(``request[READER]`` reads as the token's tenant) and answers JSON."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aiohttp import web

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.errors import ConfigError
from sinkfleet.read.query import COMPARE, Filter, Query, QueryError, SinkQuery, parse_filter
from sinkfleet.read.reader import Reader
from sinkfleet.read.serve.replies import dumps, error, etag, matches, reply
from sinkfleet.read.sql import find_sink

ROWS_PARAMS = ("where", "order_by", "desc", "limit", "cursor", "columns")
STREAM_PARAMS = ("where", "order_by", "columns")
AUDIT_PARAMS = ("actor", "start", "end", "limit")
WINDOWS_PARAMS = ("where", "start", "end")
_TRUE, _FALSE = {"", "1", "true", "yes"}, {"0", "false", "no"}
TENANT = web.RequestKey("tenant", str)  # the bearer token's tenant
READER = web.RequestKey("reader", Reader)  # reads as that tenant


def reader_of(request: web.Request) -> Reader:
    return request[READER]


def sink_of(request: web.Request, mode: str | None = None) -> Sink:
    """The path's sink (404 if the catalogue has none of that name)."""
    return find_sink(reader_of(request).catalogue, request.match_info["sink"], mode)


def params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """The query string's parameters, refusing unknown ones and repeated single ones."""
    out: dict[str, list[str]] = {}
    for key in request.query:
        if key not in allowed:
            raise QueryError(f"unknown parameter {key!r}; this route takes"
                             f" {', '.join(allowed)}")
        out[key] = request.query.getall(key)
        if key != "where" and len(out[key]) > 1:
            raise QueryError(f"parameter {key!r} given {len(out[key])} times; give it once")
    return out


def one(given: dict[str, list[str]], key: str) -> str | None:
    return given[key][0] if key in given else None


def _int(given: dict[str, list[str]], key: str, default: int) -> int:
    text = one(given, key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise QueryError(f"{key} must be an integer, got {text[:40]!r}") from None


def _bool(given: dict[str, list[str]], key: str) -> bool:
    text = (one(given, key) or "0").lower()
    if text not in _TRUE | _FALSE:
        raise QueryError(f"{key} must be true or false, got {text[:40]!r}")
    return text in _TRUE


def columns_of(given: dict[str, list[str]]) -> list[str] | None:
    text = one(given, "columns")
    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise QueryError("columns must name at least one column")
    return names


def filters_of(given: dict[str, list[str]]) -> list[Filter]:
    return [parse_filter(text) for text in given.get("where", [])]


def rows_query(request: web.Request) -> Query:
    """``GET /v1/sinks/{sink}/rows``'s parameters as a ``Query``, 1:1."""
    given = params(request, ROWS_PARAMS)
    return Query(sink_of(request).spec.name, filters_of(given),
                 order_by=one(given, "order_by"), newest_first=_bool(given, "desc"),
                 limit=_int(given, "limit", 100), cursor=one(given, "cursor"),
                 columns=columns_of(given))


async def rows(request: web.Request) -> web.Response:
    page = await reader_of(request).query(rows_query(request))
    return reply({"rows": page.rows, "next_cursor": page.next_cursor})


def _ids(request: web.Request, sink: Sink) -> tuple[list[str], bool]:
    """The id parts after ``/state/`` (each percent-decoded, so a part may hold a /) and
    whether ``/history`` follows them."""
    # "", "v1", "sinks", sink, "state", id parts…
    parts = [unquote(p) for p in request.raw_path.partition("?")[0].split("/")[5:]]
    n = len(sink.spec.id)
    if len(parts) == n + 1 and parts[-1] == "history":
        return parts[:-1], True
    if len(parts) != n:
        keys = "/".join(f"<{c}>" for c in sink.spec.id)
        raise ConfigError(f"sink {sink.spec.name!r} is keyed by ({', '.join(sink.spec.id)}):"
                          f" ask /v1/sinks/{sink.spec.name}/state/{keys}, or …/history;"
                          f" got {len(parts)} part(s)")
    return parts, False


async def state(request: web.Request) -> web.StreamResponse:
    sink = sink_of(request, "state")
    ids, history = _ids(request, sink)
    reader = reader_of(request)
    if history:
        return reply({"rows": await reader.state_history(sink.spec.name, *ids)})
    row = await reader.state(sink.spec.name, *ids)
    if row is None:
        return error(404, f"sink {sink.spec.name!r} has no state for id"
                     f" ({', '.join(ids)})")
    body = dumps(row)
    tag = etag(body)
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if matches(request.headers.get("If-None-Match"), tag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def audit(request: web.Request) -> web.Response:
    sink = sink_of(request, "audit")
    given = params(request, AUDIT_PARAMS)
    reader = reader_of(request)
    trail = await reader.audit_trail(
        sink.spec.name, tenant=request[TENANT], actor=one(given, "actor"),
        start=one(given, "start"), end=one(given, "end"),
        limit=_checked_limit(_int(given, "limit", 1000)))
    return reply({"rows": trail})


async def windows(request: web.Request) -> web.Response:
    """A summary tier's windows, the detail still kept and the summary as one answer."""
    sink = sink_of(request)
    given = params(request, WINDOWS_PARAMS)
    start = one(given, "start")
    if start is None:
        raise QueryError("give start (ISO-8601): the first window is the one holding it")
    rows = await reader_of(request).windows(sink.spec.name, filters_of(given), start=start,
                                            end=one(given, "end"))
    return reply({"windows": rows})


def _checked_limit(limit: int) -> int:
    from sinkfleet.read.query import MAX_LIMIT

    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be 1 … {MAX_LIMIT:,}, got {limit}")
    return limit


def _filters(kind: str) -> list[str]:
    nulls = ["is null", "is not null"]
    if kind == "jsonb":
        return nulls
    if kind.endswith("[]"):
        return ["contains", "overlaps", *nulls]
    return [*COMPARE, "in", "between", *nulls]


def describe(sink: Sink, tenant: str | None) -> dict[str, Any]:
    """What a client may ask of ``sink``: columns, the orders an index serves (with no
    filter; ``=`` filters on an index's first columns open its later ones), filters."""
    spec = sink.spec
    planner = SinkQuery(sink, tenant)
    fixed = {spec.tenant_column} if spec.tenant_column and tenant is not None else set()
    return {"name": spec.name, "mode": spec.mode, "tenant": spec.tenant_column is not None,
            "id": list(spec.id), "time_column": spec.time_column,
            "columns": [{"name": c.name, "type": c.pg_type, "nullable": c.nullable}
                        for c in sink.columns],
            "orderable": planner.orderable(fixed),
            "filters": {c.name: _filters(c.pg_type) for c in sink.columns}}


def sinks(catalogue: Catalogue, tenant: str | None) -> dict[str, Any]:
    return {"sinks": [describe(catalogue.sinks[n], tenant) for n in sorted(catalogue.sinks)]}
