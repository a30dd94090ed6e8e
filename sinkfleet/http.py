"""A tiny HTTP server (asyncio, no framework) and the worker's routes:
/metrics, /healthz, /readyz.

* /healthz — 200 while the process runs its loop; the body says "ok", "joining",
  "held: …" or "degraded: <component>: <why>; …" (a part of the worker is failing and
  being retried: storage, dead-letters, schema-registry, cache, heartbeat). 503 once
  stopping or failed.
* /readyz — 200 once the worker has joined its group and got its partitions, while
  nothing on the data path (storage, dead letters) is failing; else 503 with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("sinkfleet.worker")


class Phase(Enum):
    STARTING = "starting"
    JOINING = "joining"  # connected to storage, waiting for the group's assignment
    RUNNING = "running"
    HELD = "held"  # an operator holds the group (replay apply --stop-fleet)
    STOPPING = "stopping"
    FAILED = "failed"


# Components whose failure stops progress: the worker is not ready while one fails.
DATA_PATH = frozenset({"storage", "dead-letters", "rebalance", "schema-registry"})


class Health:
    """What /healthz, /readyz, the metrics and the heartbeat row say: one phase plus the
    problems of each component, set the moment they happen (and logged then)."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self.detail = ""  # why held / failed
        self.problems: dict[str, str] = {}  # component -> why
        self.probes: dict[str, Callable[[], str | None]] = {}  # polled: e.g. the cache

    def degrade(self, component: str, why: str) -> None:
        if self.problems.get(component) != why:
            log.warning("degraded: %s: %s", component, why)
        self.problems[component] = why

    def recover(self, component: str) -> None:
        if self.problems.pop(component, None) is not None:
            log.info("recovered: %s", component)

    def current_problems(self) -> dict[str, str]:
        found = dict(self.problems)
        for component, probe in self.probes.items():
            why = probe()
            if why:
                found[component] = why
        return found

    @property
    def state(self) -> str:
        if self.phase in (Phase.STOPPING, Phase.STARTING, Phase.JOINING):
            return self.phase.value
        if self.phase in (Phase.HELD, Phase.FAILED):
            return f"{self.phase.value}: {self.detail}"
        problems = self.current_problems()
        if problems:
            return "degraded: " + "; ".join(f"{c}: {w}" for c, w in sorted(problems.items()))
        return "ok"

    @property
    def alive(self) -> bool:
        return self.phase not in (Phase.STOPPING, Phase.FAILED)

    @property
    def ready(self) -> bool:
        return self.phase is Phase.RUNNING and not (DATA_PATH & self.current_problems().keys())


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
        ok = health.alive
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
