"""`sinkfleet serve`: the HTTP read service (docs/http-read-service.md).

aiohttp's web application over the Reader: each request reads as its bearer token's
tenant (``Reader.as_tenant``, one pool for all). Around the routes, middlewares give
what the project's other endpoints have (``sinkfleet.http_server``): a Host allow-list,
bounded request heads, a deadline per request, a cap on requests and streams at once,
a cap on connections, errors as ``{"error": "..."}``, and per-route latency histograms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.http_server import Guard, HttpLimits
from sinkfleet.read.reader import Reader
from sinkfleet.read.serve import routes
from sinkfleet.read.serve.openapi import openapi
from sinkfleet.read.serve.replies import error, reply, status_of
from sinkfleet.read.serve.stream import RowStream, StreamOptions, serve_stream
from sinkfleet.read.serve.tokens import TokenCache

log = logging.getLogger("sinkfleet.serve")

OPEN_PATHS = frozenset({"/healthz"})
STREAM_ROUTE = "/v1/sinks/{sink}/stream"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0)
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: 46\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        b'{"error": "too many connections; retry later"}')


@dataclass(frozen=True)
class ServeOptions:
    """The service's limits. ``limits``: the project's HTTP limits (request head
    timeout, write timeout, connections, head sizes — a cursor fits in a request line)."""

    limits: HttpLimits = field(default_factory=lambda: HttpLimits(
        max_connections=256, max_line_size=16_384, max_field_size=8_192))
    max_requests: int = 64  # answered at once; more get 503 at once (Retry-After: 1)
    max_streams: int = 100  # open event streams; they do not count as requests
    deadline: float = 10.0  # seconds to answer a request (streams excepted), else 503
    pool_size: int = 8  # PostgreSQL connections, shared by every tenant
    token_ttl: float = 5.0  # a revoked token works at most this much longer
    allowed_hosts: str = ""  # Host names besides localhost and IP literals ("*": any)
    stream: StreamOptions = field(default_factory=StreamOptions)

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int = 256, **kwargs: Any
                      ) -> ServeOptions:
        """SINKFLEET_HTTP_* timeouts as the other endpoints read them, with a cursor-sized
        request line and more connections than a scrape endpoint needs."""
        limits = replace(HttpLimits.from_settings(settings), max_line_size=16_384,
                         max_field_size=8_192, max_connections=max_connections)
        return cls(limits=limits, allowed_hosts=settings.http_allowed_hosts, **kwargs)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "sinkfleet_http_request_duration_seconds",
            "Read service requests by route and status, seconds to answer",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("sinkfleet_http_requests_in_flight",
                               "Requests being answered", registry=self.registry)
        self.streams = Gauge("sinkfleet_http_streams_open", "Open event streams",
                             registry=self.registry)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReadService:
    """The application and what it shares: the owner Reader's pool, one Reader a tenant,
    the token cache, the metrics.

        service = ReadService(settings, catalogue)
        port = await service.start("127.0.0.1", 0)
        ...
        await service.close()
    """

    def __init__(self, settings: Settings, catalogue: Catalogue,
                 options: ServeOptions | None = None) -> None:
        self.settings, self.catalogue = settings, catalogue
        self.options = options or ServeOptions()
        self.reader = Reader(settings, catalogue, pool_size=self.options.pool_size)
        self.tokens = TokenCache(ttl=self.options.token_ttl)
        self.metrics = _Metrics()
        self._tenants: dict[str, Reader] = {}
        self._requests = 0
        self._streams = 0
        self._guard = Guard.of(self.options.allowed_hosts)
        self._document = openapi(catalogue)
        self.app = web.Application(middlewares=[self._observe, self._admit])
        self.app.add_routes([
            web.get("/healthz", self._healthz), web.get("/metrics", self._metrics),
            web.get("/openapi.json", self._openapi), web.get("/v1/sinks", self._sinks),
            web.get("/v1/sinks/{sink}/rows", routes.rows),
            web.get("/v1/sinks/{sink}/state/{ids:.+}", routes.state),
            web.get("/v1/sinks/{sink}/audit", routes.audit),
            web.get("/v1/sinks/{sink}/windows", routes.windows),
            web.get(STREAM_ROUTE, self._stream)])
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); the bound port."""
        await self.reader.open()
        limits = self.options.limits
        self._guard = Guard.of(self.options.allowed_hosts, host)
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False,
            # from connect until a request head is complete, and between requests
            keepalive_timeout=limits.request_timeout, lingering_time=0,
            max_line_size=limits.max_line_size, max_field_size=limits.max_field_size,
            max_headers=limits.max_headers)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            if len(server.connections) >= limits.max_connections:
                return _Busy()
            return server()

        self._listener = await asyncio.get_running_loop().create_server(protocol, host, port)
        return int(self._listener.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.reader.close()

    def reader_for(self, tenant: str) -> Reader:
        reader = self._tenants.get(tenant)
        if reader is None:
            reader = self._tenants[tenant] = self.reader.as_tenant(tenant)
        return reader

    # --- middlewares -----------------------------------------------------------------
    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Errors as JSON, and each request's latency by route template and status."""
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404, 405 …
            resp = error(exc.status, exc.reason if exc.status != 404 else
                         f"no route {request.path[:200]!r}; see /openapi.json",
                         **{k: v for k, v in exc.headers.items() if k == "Allow"})
        except SinkfleetError as exc:
            resp = error(status_of(exc), str(exc))
        except TimeoutError:
            resp = error(503, f"the request took longer than {self.options.deadline:g} s;"
                         " narrow it (filters, a smaller limit) or retry", **{
                             "Retry-After": "1"})
        except Exception:  # a bug in a route must not kill the server
            log.exception("%s failed", request.path)
            resp = error(500, "internal error (logged by the server)")
        if route != STREAM_ROUTE:
            self.metrics.latency.labels(route, request.method, str(resp.status)).observe(
                time.perf_counter() - started)
        return resp

    @web.middleware
    async def _admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Host, token, then a free slot and a deadline."""
        if not self._guard.host_allowed(request.headers.get("Host")):
            return error(421, "this Host is not served here: add its name to"
                         " SINKFLEET_HTTP_ALLOWED_HOSTS")
        if request.path not in OPEN_PATHS:
            tenant = await self._tenant(request.headers.get("Authorization"))
            if tenant is None:
                return error(401, "send a token of `sinkfleet serve token create` as"
                             " 'Authorization: Bearer <token>'",
                             **{"WWW-Authenticate": 'Bearer realm="sinkfleet"'})
            request[routes.TENANT], request[routes.READER] = tenant, self.reader_for(tenant)
        streaming = request.match_info.route.resource is not None and \
            request.match_info.route.resource.canonical == STREAM_ROUTE
        if streaming:
            if self._streams >= self.options.max_streams:
                return error(503, f"{self._streams} event streams are open, the most this"
                             " service keeps; retry later", **{"Retry-After": "5"})
            self._streams += 1
            self.metrics.streams.inc()
            try:
                return await handler(request)
            finally:
                self._streams -= 1
                self.metrics.streams.dec()
        if self._requests >= self.options.max_requests:
            return error(503, f"{self._requests} requests are being answered, the most"
                         " this service takes at once; retry", **{"Retry-After": "1"})
        self._requests += 1
        self.metrics.in_flight.inc()
        try:
            async with asyncio.timeout(self.options.deadline):
                return await handler(request)
        finally:
            self._requests -= 1
            self.metrics.in_flight.dec()

    async def _tenant(self, authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return await self.tokens.tenant(self.reader.pool, token.strip())

    # --- the service's own routes ----------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2):
                await self.reader.pool.fetchval("SELECT 1")
        except (TimeoutError, OSError, SinkfleetError) as exc:
            return error(503, f"PostgreSQL does not answer: {type(exc).__name__} {exc}")
        except Exception as exc:  # asyncpg's own errors: not ready either
            return error(503, f"PostgreSQL does not answer: {type(exc).__name__} {exc}")
        return reply({"status": "ok"})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            content_type="text/plain", charset="utf-8")

    async def _openapi(self, request: web.Request) -> web.Response:
        return reply(self._document)

    async def _sinks(self, request: web.Request) -> web.Response:
        return reply(routes.sinks(self.catalogue, request[routes.TENANT]))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        given = routes.params(request, routes.STREAM_PARAMS)
        if request.method == "HEAD":  # the headers a stream would have, and no stream
            return web.Response(headers={"Content-Type": "text/event-stream"})
        reader = routes.reader_of(request)
        stream = RowStream(reader, routes.sink_of(request).spec.name,
                           routes.filters_of(given), routes.one(given, "order_by"),
                           routes.columns_of(given), self.options.stream.settle)
        cursor = request.headers.get("Last-Event-ID") or None
        if cursor is not None:
            stream.check(cursor)
        auth = request.headers.get("Authorization")
        tenant = request[routes.TENANT]

        async def still_allowed() -> bool:
            return await self._tenant(auth) == tenant

        options = replace(self.options.stream, write_timeout=self.options.limits.write_timeout)
        return await serve_stream(request, stream, cursor, options, still_allowed)


class _Busy(asyncio.Protocol):
    """A connection beyond the cap: told so in one write, then closed unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY)
        transport.close()

