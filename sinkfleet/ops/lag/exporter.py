"""`sinkfleet lag-exporter`: polls every group's lag and serves it as Prometheus metrics,
a JSON API and the web dashboard.

Routes: /metrics · /api/lag (latest snapshot) · /api/history?group=G (series per
partition) · /api/events (status changes such as REWIND, for chart markers) ·
/api/workers (heartbeats from sinkfleet.workers) · /healthz · / (dashboard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sinkfleet.config import Settings
from sinkfleet.http import response, serve
from sinkfleet.ops.lag.collect import LagCollector, Snapshot
from sinkfleet.ops.lag.model import STATUSES, Sample
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect
from sinkfleet.worker.heartbeat import list_workers

log = logging.getLogger("sinkfleet.lag")
PARTITION_LABELS = ["group", "topic", "partition"]


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _age_now(sample: Sample, now: float) -> float:
    """Lag in seconds at scrape time, not at the last poll: the oldest unconsumed record
    keeps ageing between polls (exact while the group is stalled, which is when it
    matters)."""
    if sample.first_unconsumed_ts is None or not sample.lag_records:
        return sample.lag_seconds or 0.0
    return max(0.0, now - sample.first_unconsumed_ts)


class _SnapshotMetrics(Collector):
    """Prometheus view of the latest snapshot; unknown values are left out, not faked."""

    def __init__(self, exporter: LagExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.exporter.snapshot
        if snap is None:
            return
        now = time.time()
        committed = _gauge("sinkfleet_group_committed_offset", "Committed offset (next to"
                           " consume)", PARTITION_LABELS)
        end = _gauge("sinkfleet_group_log_end_offset", "Log-end offset", PARTITION_LABELS)
        lag = _gauge("sinkfleet_group_lag_records", "Records not yet consumed",
                     PARTITION_LABELS)
        lag_s = _gauge("sinkfleet_group_lag_seconds", "Age of the oldest unconsumed record",
                       PARTITION_LABELS)
        status = _gauge("sinkfleet_group_status", "1 for the group's current status"
                        " (OK, WARN, REWIND, STALL, ERROR)", ["group", "status"])
        members = _gauge("sinkfleet_group_members", "Live members of the group", ["group"])
        for g in snap.groups:
            members.add_metric([g.group], g.members)
            for s in STATUSES:
                status.add_metric([g.group, s], 1.0 if g.status == s else 0.0)
            for p in g.partitions:
                labels = [g.group, p.topic, str(p.partition)]
                sample = p.sample
                end.add_metric(labels, sample.log_end)
                if sample.committed is not None:
                    committed.add_metric(labels, sample.committed)
                if sample.lag_records is not None:
                    lag.add_metric(labels, sample.lag_records)
                if sample.lag_seconds is not None:
                    lag_s.add_metric(labels, _age_now(sample, now))
        dlq = _gauge("sinkfleet_dlq_records", "Records in a dead-letter topic", ["topic"])
        for topic, count in sorted(snap.dlq_records.items()):
            dlq.add_metric([topic], count)
        took = GaugeMetricFamily("sinkfleet_exporter_scrape_seconds",
                                 "Time the last collection from Kafka took",
                                 value=snap.seconds)
        at = GaugeMetricFamily("sinkfleet_exporter_last_collect_timestamp_seconds",
                               "When the last collection finished", value=snap.at)
        yield from (committed, end, lag, lag_s, status, members, dlq, took, at)


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
        self.registry = CollectorRegistry()
        self.registry.register(_SnapshotMetrics(self))
        self._stop = asyncio.Event()
        self._last_error: str | None = None
        self._pg: asyncpg.Connection | None = None

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
        server = await serve(host, port, self.handle, on_bound)
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
            server.close()
            if self._pg is not None and not self._pg.is_closed():
                await self._pg.close()

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

    def handle(self, path: str, query: str) -> bytes | Awaitable[bytes]:
        if path == "/api/workers":
            return self._json_later(self.workers())
        if path == "/metrics":
            return response("200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path == "/api/lag":
            snap: dict[str, Any] = (self.snapshot.as_dict() if self.snapshot
                                    else {"groups": [], "pending": True})
            return _json(snap)
        if path == "/api/history":
            group = parse_qs(query).get("group", [""])[0]
            return _json(self.history(group))
        if path == "/api/events":
            return _json({"events": list(self.events)})
        if path == "/healthz":
            fresh = self.snapshot is not None and time.time() - self.snapshot.at < 3 * max(
                self.interval, 5)
            return response("200 OK" if fresh and not self._last_error
                            else "503 Service Unavailable", (self._last_error or "ok").encode())
        if path in ("/", "/index.html"):
            page = resources.files("sinkfleet.ops.lag").joinpath("dashboard.html")
            if page.is_file():
                return response("200 OK", page.read_bytes(), "text/html; charset=utf-8")
            return response("404 Not Found", b"dashboard not installed")
        return response("404 Not Found", b"try /, /metrics, /api/lag, /api/history?group=G")

    async def _json_later(self, body: Awaitable[dict[str, Any]]) -> bytes:
        return _json(await body)

    def history(self, group: str) -> dict[str, Any]:
        series = []
        for (g, tp), hist in sorted(self.collector.history.items(),
                                    key=lambda kv: (kv[0][0], kv[0][1].topic, kv[0][1].partition)):
            if g != group:
                continue
            series.append({"topic": tp.topic, "partition": tp.partition, "points": [
                [round(s.at, 3), s.lag_records, s.lag_seconds, s.committed]
                for s in hist.samples]})
        return {"group": group, "series": series,
                "events": [e for e in self.events if e["group"] == group]}


def _json(body: Any) -> bytes:
    return response("200 OK", json.dumps(body).encode(), "application/json")
