"""A tiny HTTP endpoint per worker: /metrics, /healthz, /readyz (asyncio, no framework).

* /healthz — 200 while the process runs its loop; the body says "ok" or "degraded: …"
  (degraded = storage unavailable, backing off). 503 only once stopping.
* /readyz — 200 when partitions are assigned and the last store succeeded, else 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass
class Health:
    state: str = "starting"  # starting | ok | degraded: <why> | stopping
    ready: bool = False


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8"
              ) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def route(path: str, registry: CollectorRegistry, health: Health) -> bytes:
    if path == "/metrics":
        return _response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        ok = health.state != "stopping"
        return _response("200 OK" if ok else "503 Service Unavailable", health.state.encode())
    if path == "/readyz":
        body = b"ready" if health.ready else health.state.encode()
        return _response("200 OK" if health.ready else "503 Service Unavailable", body)
    return _response("404 Not Found", b"try /metrics, /healthz or /readyz")


async def serve(host: str, port: int, registry: CollectorRegistry, health: Health,
                on_bound: Callable[[int], None] | None = None) -> asyncio.Server:
    """Start the endpoint; ``port=0`` picks a free port (reported through ``on_bound``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
            writer.write(route(path, registry, health))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    if on_bound is not None:
        on_bound(server.sockets[0].getsockname()[1])
    return server
