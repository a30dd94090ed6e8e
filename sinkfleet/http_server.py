"""Every sinkfleet HTTP endpoint (a worker's /metrics, /healthz, /readyz; the lag
exporter's API and dashboard) is served here, by aiohttp's low-level web server.

Why aiohttp: it is already a dependency (the schema-registry client, faust-streaming),
it runs in the worker's own event loop (no thread, no second server process), it is
kept up to date against HTTP parsing attacks, and it has the knobs we need; what it lacks
(a connection cap, a write deadline, a Host check, a token) is a few lines around it.

Limits (docs/observability.md, "Endpoint hardening"):
* a client has ``request_timeout`` seconds from connecting (or from its previous
  response) to send a complete request head — a slow-loris is cut then;
* each response must be taken within ``write_timeout`` seconds, else the connection is
  aborted and its buffers freed — a client that never reads pins nothing for long;
* at most ``max_connections`` at once: beyond that a connection gets a short 503 and is
  closed; each connection's kernel send buffer is capped too;
* request line and header sizes are bounded; only GET and HEAD are served.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

if TYPE_CHECKING:
    from sinkfleet.config import Settings

log = logging.getLogger("sinkfleet.http")

SEND_BUFFER = 256 * 1024  # per connection in the kernel; enough for LAN scrapes
CHUNK = 64 * 1024  # written, then drained, at a time: little is buffered in the process
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 25\r\nConnection: close\r\n\r\ntoo many connections; retry")


@dataclass(frozen=True)
class Reply:
    """What a route answers: the server adds the HTTP framing."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[str, str], Awaitable[Reply] | Reply]  # (path, query) -> reply


@dataclass(frozen=True)
class HttpLimits:
    request_timeout: float = 10.0
    write_timeout: float = 10.0
    max_connections: int = 32
    max_line_size: int = 4096
    max_field_size: int = 4096
    max_headers: int = 32

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(request_timeout=settings.http_request_timeout,
                   write_timeout=settings.http_write_timeout,
                   max_connections=settings.http_max_connections)


@dataclass(frozen=True)
class Guard:
    """Who may ask: Host names (DNS rebinding) and, optionally, a token.

    ``allowed_hosts``: names accepted in the Host header besides ``localhost`` and IP
    literals (a browser sends an IP as Host only when the page itself came from that IP,
    so an IP is never a rebinding); ``"*"`` accepts any. ``token``: when set, every path
    but ``open_paths`` needs ``Authorization: Bearer <token>`` (or Basic with the token
    as password, which a browser prompts for).
    """

    allowed_hosts: frozenset[str] = frozenset()
    token: str | None = None
    open_paths: frozenset[str] = field(default_factory=lambda: frozenset({"/healthz"}))

    @classmethod
    def of(cls, names: str | Collection[str], bound_host: str = "", token: str | None = None,
           open_paths: Collection[str] = ("/healthz",)) -> Guard:
        if isinstance(names, str):
            names = names.split(",")
        hosts = {_host_name(n) for n in (*names, bound_host) if n.strip()}
        return cls(frozenset(hosts - {""}), token or None, frozenset(open_paths))

    def host_allowed(self, host: str | None) -> bool:
        if host is None:
            return True  # HTTP/1.0 without Host: not a browser, so not a rebinding
        name = _host_name(host)
        if name == "localhost" or "*" in self.allowed_hosts or name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def authorized(self, path: str, authorization: str | None) -> bool:
        if self.token is None or path in self.open_paths:
            return True
        scheme, _, value = (authorization or "").strip().partition(" ")
        given = value.strip()
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(given, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())


def _host_name(host: str) -> str:
    """``Example.org:9400`` → ``example.org``; ``[::1]:9400`` → ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _text(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


async def _send(request: web.BaseRequest, reply: Reply, write_timeout: float
                ) -> web.StreamResponse:
    """Write ``reply`` in chunks under one deadline; a client too slow to take it is
    aborted, which frees what was buffered for it."""
    resp = web.StreamResponse(status=reply.status, headers={
        "Content-Type": reply.content_type, "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store"})
    resp.content_length = len(reply.body)
    try:
        async with asyncio.timeout(write_timeout):
            await resp.prepare(request)
            if request.method != "HEAD":
                body = memoryview(reply.body)
                for start in range(0, len(body), CHUNK):
                    await resp.write(body[start:start + CHUNK])
            await resp.write_eof()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        pass  # the client went away; aiohttp closes the connection
    return resp


def _responder(handler: Handler, guard: Guard, limits: HttpLimits,
               started: set[RequestHandler]
               ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    async def respond(request: web.BaseRequest) -> web.StreamResponse:
        started.add(request.protocol)
        if request.method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD", Allow="GET, HEAD")
        if not guard.host_allowed(request.headers.get("Host")):
            return _text(421, "this Host is not served here: add its name to"
                         " SINKFLEET_HTTP_ALLOWED_HOSTS")
        if not guard.authorized(request.path, request.headers.get("Authorization")):
            resp = _text(401, "send the exporter's token (SINKFLEET_EXPORTER_TOKEN) as"
                         " 'Authorization: Bearer <token>'")
            resp.headers.add("WWW-Authenticate", 'Bearer realm="sinkfleet"')
            resp.headers.add("WWW-Authenticate", 'Basic realm="sinkfleet"')
            return resp
        try:
            result = handler(request.path, request.query_string)
            reply = result if isinstance(result, Reply) else await result
        except Exception as exc:  # a bug in a route must not kill the server
            log.exception("%s failed", request.path)
            reply = Reply(500, type(exc).__name__.encode())
        return await _send(request, reply, limits.write_timeout)

    return respond


class HttpServer:
    """The listening socket and its connections; ``close()`` stops both."""

    def __init__(self, listener: asyncio.Server, web_server: web.Server) -> None:
        self.listener, self.web_server = listener, web_server

    @property
    def port(self) -> int:
        return int(self.listener.sockets[0].getsockname()[1])

    def close(self) -> None:
        self.listener.close()
        for conn in self.web_server.connections:
            conn.force_close()


class _CountingServer(web.Server):
    """Counts connections from accept on (several can be accepted in one loop turn,
    before any of them is announced to ``web.Server.connections``), and cuts one whose
    first request head is not complete within the request timeout: aiohttp's keep-alive
    timer covers only the time between requests in the releases before 2026-09."""

    open = 0
    first_request_timeout = 10.0
    started: set[RequestHandler]

    def __call__(self) -> RequestHandler:
        self.open += 1
        return super().__call__()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport
                        ) -> None:
        super().connection_made(handler, transport)

        def cut() -> None:
            if handler not in self.started:
                handler.force_close()

        asyncio.get_running_loop().call_later(self.first_request_timeout, cut)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None
                        ) -> None:
        self.open -= 1
        self.started.discard(handler)
        super().connection_lost(handler, exc)


class _Busy(asyncio.Protocol):
    """A connection beyond the cap: told so in one write, then closed unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY)
        transport.close()


async def serve(host: str, port: int, handler: Handler,
                on_bound: Callable[[int], None] | None = None, *,
                limits: HttpLimits | None = None, guard: Guard | None = None) -> HttpServer:
    """Serve GET requests with ``handler``; ``port=0`` picks a free port (reported
    through ``on_bound``). Without ``guard``, Host names are those of ``Guard.of``."""
    limits = limits or HttpLimits()
    guard = guard or Guard.of((), host)
    started: set[RequestHandler] = set()
    web_server = _CountingServer(
        _responder(handler, guard, limits, started), access_log=None,
        # the keep-alive timer also runs from connect until a request head is complete
        keepalive_timeout=limits.request_timeout, lingering_time=0,
        max_line_size=limits.max_line_size, max_field_size=limits.max_field_size,
        max_headers=limits.max_headers)
    web_server.first_request_timeout = limits.request_timeout
    web_server.started = started

    def protocol() -> asyncio.Protocol:
        if web_server.open >= limits.max_connections:
            return _Busy()
        return web_server()

    listener = await asyncio.get_running_loop().create_server(protocol, host, port)
    for sock in listener.sockets:  # accepted connections inherit it (Linux, BSDs)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    server = HttpServer(listener, web_server)
    if on_bound is not None:
        on_bound(server.port)
    return server

