"""The worker's routes: /metrics, /healthz, /readyz (served by sinkfleet.http_server).

* /healthz — 200 while the process runs its loop; the body says "ok", "joining",
  "held: …" or "degraded: <component>: <why>; …" (a part of the worker is failing and
  being retried: storage, dead-letters, schema-registry, cache, heartbeat). 503 once
  stopping or failed.
* /readyz — 200 once the worker has joined its group and got its partitions, while
  nothing on the data path (storage, dead letters) is failing; else 503 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sinkfleet.http_server import HttpLimits, Reply, serve

__all__ = ["DATA_PATH", "Health", "HttpLimits", "Phase", "Reply", "route", "serve"]

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


def route(path: str, registry: CollectorRegistry, health: Health) -> Reply:
    if path == "/metrics":
        return Reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        return Reply(200 if health.alive else 503, health.state.encode())
    if path == "/readyz":
        body = b"ready" if health.ready else health.state.encode()
        return Reply(200 if health.ready else 503, body)
    return Reply(404, b"try /metrics, /healthz or /readyz")

