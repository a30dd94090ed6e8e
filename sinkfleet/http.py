"""A tiny HTTP server (asyncio, no framework) and the worker's routes:
/metrics, /healthz, /readyz.

* /healthz — 200 while the process runs its loop; the body says "ok" or "degraded: …"
  (degraded = storage unavailable, backing off). 503 only once stopping.
* /readyz — 200 when partitions are assigned and the last store succeeded, else 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass
class Health:
    state: str = "starting"  # starting | ok | degraded: <why> | stopping
    ready: bool = False


Handler = Callable[[str, str], Awaitable[bytes] | bytes]  # (path, query) -> response


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8"
             ) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def route(path: str, registry: CollectorRegistry, health: Health) -> bytes:
    if path == "/metrics":
        return response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        ok = health.state != "stopping"
        return response("200 OK" if ok else "503 Service Unavailable", health.state.encode())
    if path == "/readyz":
        body = b"ready" if health.ready else health.state.encode()
        return response("200 OK" if health.ready else "503 Service Unavailable", body)
    return response("404 Not Found", b"try /metrics, /healthz or /readyz")


async def serve(host: str, port: int, handler: Handler,
                on_bound: Callable[[int], None] | None = None) -> asyncio.Server:
    """Serve GET requests with ``handler``; ``port=0`` picks a free port (reported
    through ``on_bound``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            target = parts[1] if len(parts) >= 2 else "/"
            path, _, query = target.partition("?")
            try:
                result = handler(path, query)
                body = result if isinstance(result, bytes) else await result
            except Exception as exc:  # a bug in a route must not kill the server
                body = response("500 Internal Server Error", f"{type(exc).__name__}".encode())
            writer.write(body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    if on_bound is not None:
        on_bound(server.sockets[0].getsockname()[1])
    return server
