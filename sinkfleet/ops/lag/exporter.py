"""`sinkfleet lag-exporter`: polls every group's lag and serves it as Prometheus metrics,
a JSON API and the web dashboard.

Routes: /metrics · /api/lag (latest snapshot) · /api/history?group=G (series per
partition) · /api/events (status changes such as REWIND, for chart markers) ·
/api/workers (heartbeats from sinkfleet.workers) · /api/references (orphans per
reference between sinks, docs/references.md) · /healthz · / (dashboard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import asyncpg

from sinkfleet.config import Settings
from sinkfleet.http_server import Guard, HttpLimits, Reply, serve
from sinkfleet.ops.lag.collect import LagCollector, Snapshot
from sinkfleet.ops.lag.metrics import CONTENT_TYPE, MetricsPage
from sinkfleet.ops.lag.references import ReferencePoller
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect
from sinkfleet.sink.postgres.workers import list_workers

log = logging.getLogger("sinkfleet.lag")


class LagExporter:
    def __init__(self, settings: Settings, *, interval: float = 5.0,
                 groups: list[str] | None = None, stall_seconds: float = 60.0,
                 window_seconds: float = 120.0) -> None:
        self.settings = settings
        self.interval = interval
        self.collector = LagCollector(settings, groups=groups, stall_seconds=stall_seconds,
                                      window_seconds=window_seconds)
        self.snapshot: Snapshot | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=500)
        # Rendered at the first request after each poll, then served from here.
        self._page: MetricsPage | None = None
        self._lag_json: tuple[Snapshot | None, Reply] = (None, Reply(200, b""))
        self._stop = asyncio.Event()
        self._last_error: str | None = None
        self._pg: asyncpg.Connection | None = None
        self.references = ReferencePoller(settings)  # orphan gauges (docs/references.md)

    def stop(self) -> None:
        self._stop.set()

    def _note_changes(self, new: Snapshot) -> None:
        old = {g.group: g.status for g in self.snapshot.groups} if self.snapshot else {}
        for g in new.groups:
            if g.group in old and old[g.group] != g.status:
                self.events.append({"at": new.at, "group": g.group, "from": old[g.group],
                                    "to": g.status})
                log.info("group=%s status %s -> %s", g.group, old[g.group], g.status)

    async def run(self, host: str, port: int,
                  on_bound: Callable[[int], None] | None = None) -> None:
        token = self.settings.exporter_token
        guard = Guard.of(self.settings.http_allowed_hosts, host,
                         token.get_secret_value() if token else None)
        server = await serve(host, port, self.handle, on_bound, guard=guard,
                             limits=HttpLimits.from_settings(self.settings))
        references = asyncio.create_task(self._poll_references())
        try:
            async with self.collector:
                while not self._stop.is_set():
                    try:
                        snap = await self.collector.collect()
                        self._note_changes(snap)
                        self.snapshot, self._last_error = snap, None
                    except Exception as exc:  # keep serving the last snapshot
                        self._last_error = f"{type(exc).__name__}: {exc}"
                        log.warning("collecting lag failed: %s", self._last_error)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.interval)
        finally:
            references.cancel()
            server.close()
            if self._pg is not None and not self._pg.is_closed():
                await self._pg.close()

    async def _poll_references(self) -> None:
        # Apart from the lag loop: an orphan count scans tables, lag must not wait for it.
        while not self._stop.is_set():
            try:
                await self.references.poll(force=True)
            except Exception as exc:  # keep serving the last counts
                log.warning("counting orphans failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.references.interval)

    async def workers(self) -> dict[str, Any]:
        """Workers from sinkfleet.workers (their heartbeats), or why they are unknown."""
        try:
            if self._pg is None or self._pg.is_closed():
                self._pg = await connect(self.settings, timeout=5)
            only = sorted(self.collector.only) if self.collector.only else None
            return {"workers": await list_workers(self._pg, only)}
        except RETRIABLE_STORAGE as exc:
            self._pg = None
            return {"workers": [], "error": f"PostgreSQL unavailable: {type(exc).__name__}"}
        except asyncpg.UndefinedTableError:
            return {"workers": [], "error": "no sinkfleet.workers table: run sinkfleet db migrate"}

    def handle(self, path: str, query: str) -> Reply | Awaitable[Reply]:
        if path == "/api/workers":
            return self._json_later(self.workers())
        if path == "/metrics":
            return Reply(200, self.metrics(), CONTENT_TYPE)
        if path == "/api/lag":
            return self.lag_json()
        if path == "/api/references":
            return _json(self.references.as_dict())
        if path == "/api/history":
            group = parse_qs(query).get("group", [""])[0]
            return _json(self.history(group))
        if path == "/api/events":
            return _json({"events": list(self.events)})
        if path == "/healthz":
            fresh = self.snapshot is not None and time.time() - self.snapshot.at < 3 * max(
                self.interval, 5)
            return Reply(200 if fresh and not self._last_error else 503,
                         (self._last_error or "ok").encode())
        if path in ("/", "/index.html"):
            page = resources.files("sinkfleet.ops.lag").joinpath("dashboard.html")
            if page.is_file():
                return Reply(200, page.read_bytes(), "text/html; charset=utf-8")
            return Reply(404, b"dashboard not installed")
        return Reply(404, b"try /, /metrics, /api/lag, /api/history?group=G")

    def metrics(self) -> bytes:
        """/metrics: the snapshot rendered once, lag_seconds aged to now."""
        snap = self.snapshot
        if snap is None:
            return b""
        if self._page is None or self._page.snapshot is not snap:
            self._page = MetricsPage(snap, self._page.labels if self._page else None)
        now = time.time()
        return self._page.render(now) + self.references.metrics(now)

    def lag_json(self) -> Reply:
        snap = self.snapshot
        if snap is None:
            return _json({"groups": [], "pending": True})
        if self._lag_json[0] is not snap:
            self._lag_json = (snap, _json(snap.as_dict()))
        return self._lag_json[1]

    async def _json_later(self, body: Awaitable[dict[str, Any]]) -> Reply:
        return _json(await body)

    def history(self, group: str) -> dict[str, Any]:
        mine = sorted((tp, hist) for (g, tp), hist in self.collector.history.items()
                      if g == group)
        series = [{"topic": tp.topic, "partition": tp.partition, "points": hist.points()}
                  for tp, hist in mine]
        return {"group": group, "series": series,
                "events": [e for e in self.events if e["group"] == group]}


def _json(body: Any) -> Reply:
    return Reply(200, json.dumps(body).encode(), "application/json")
