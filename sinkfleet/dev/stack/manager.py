"""`sinkfleet stack up|down|status|env`: the local stack, idempotent and probed.

Kafka is one node (``kafka``) or, after ``up --brokers N``, a cluster of N combined
broker/controller nodes (``kafka-1`` … ``kafka-N``); ``--only kafka`` means all of them.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sinkfleet.config import Settings
from sinkfleet.dev.stack.base import Service
from sinkfleet.dev.stack.cluster import (
    ClusterRecord,
    check_size,
    plan_nodes,
    read_record,
    write_record,
)
from sinkfleet.dev.stack.health import (
    ClusterHealth,
    UnderReplicated,
    cluster_health,
    describe_partitions,
)
from sinkfleet.dev.stack.kafka_node import Kafka, kafka_libs_if_fetched, kafka_services
from sinkfleet.dev.stack.process import port_open
from sinkfleet.dev.stack.services import services, wait_ready
from sinkfleet.errors import StackError

STOP_SIGNALS = {"postgres": signal.SIGINT}  # PostgreSQL: SIGINT is "fast shutdown"
START_TIMEOUT = {"kafka": 120.0, "postgres": 60.0, "redis": 30.0}


def _kind(svc: Service) -> str:
    return "kafka" if isinstance(svc, Kafka) else svc.name


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    port: int
    healthy: bool
    detail: str


def _select(settings: Settings, only: list[str] | None) -> list[Service]:
    all_services = services(settings)
    if not only:
        return all_services
    names = {s.name for s in all_services} | {"kafka"}
    unknown = set(only) - names
    if unknown:
        raise StackError(f"unknown service(s) {sorted(unknown)}; choose from"
                         f" {', '.join(sorted(names))}")
    return [s for s in all_services if s.name in only or _kind(s) in only]


def _new_cluster_id() -> str:
    """A Kafka cluster id as `kafka-storage random-uuid` makes one (base64url of 16
    random bytes), without starting a JVM; Kafka refuses ids that start with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def ensure_cluster(settings: Settings, brokers: int | None,
                   say: Callable[[str], None] = print) -> None:
    """Record a new ``brokers``-node cluster's layout in the state directory (once)."""
    check_size(settings, brokers)
    if brokers is None or brokers == 1 or read_record(settings.state) is not None:
        return
    nodes = plan_nodes(settings, brokers)
    write_record(settings.state, ClusterRecord(_new_cluster_id(), tuple(nodes)))
    say(f"kafka: a {brokers}-node cluster (combined broker/controller nodes): brokers"
        f" {', '.join(n.address for n in nodes)}; controllers on"
        f" {', '.join(str(n.controller_port) for n in nodes)}")


async def up(settings: Settings, only: list[str] | None = None,
             say: Callable[[str], None] = print, brokers: int | None = None) -> list[str]:
    """Start what is not running and wait until everything answers; return the names this
    call started. ``brokers`` > 1 makes (once) a Kafka cluster of that many nodes; a node
    of it that died is started again.

    Every missing service starts before any is waited for: a cluster node becomes ready
    only once a majority of its controllers runs."""
    ensure_cluster(settings, brokers, say)
    selected = _select(settings, only)
    for svc in selected:
        if svc.proc.pid() is None and port_open(svc.host, svc.port):
            raise StackError(f"{svc.name}: port {svc.port} is taken by another process; stop it"
                             f" or choose another port (see `sinkfleet stack env`)")
    started: list[Service] = []
    for svc in selected:
        pid = svc.proc.pid()
        if pid is not None:
            continue
        say(f"{svc.name}: preparing")
        await asyncio.to_thread(svc.prepare)
        pid = svc.proc.start(svc.argv(), user=svc.user())
        say(f"{svc.name}: started (pid {pid}), waiting until it answers")
        started.append(svc)
    await asyncio.gather(*(wait_ready(s, START_TIMEOUT[_kind(s)]) for s in selected))
    for svc in selected:
        if svc in started:
            await svc.after_ready()
            say(f"{svc.name}: ready on {svc.host}:{svc.port} (log {svc.proc.logfile})")
        else:
            say(f"{svc.name}: already running (pid {svc.proc.pid()}, port {svc.port})")
    return [s.name for s in started]


def down(settings: Settings, only: list[str] | None = None,
         say: Callable[[str], None] = print) -> None:
    """Stop the services this stack started (by pid file), in reverse order. A cluster's
    nodes are signalled together: stopped one by one, the last ones would wait for a
    controller majority that has already gone."""
    selected = _select(settings, only)
    nodes = [s for s in selected if isinstance(s, Kafka)]
    signalled = set()
    if len(nodes) > 1:
        signalled = {node.name for node in nodes if node.proc.send(signal.SIGTERM)}
    for svc in reversed(selected):
        sig = STOP_SIGNALS.get(svc.name, signal.SIGTERM)
        if svc.proc.stop(sig) or svc.name in signalled:
            say(f"{svc.name}: stopped")
        else:
            say(f"{svc.name}: not running")


async def status(settings: Settings) -> list[ServiceStatus]:
    """Each service (each Kafka node apart) with its pid, port and a real probe."""
    result = []
    for svc in services(settings):
        pid = svc.proc.pid()
        if pid is None:
            detail = "port taken by another process" if port_open(svc.host, svc.port) else ""
            result.append(ServiceStatus(svc.name, None, svc.port, False, detail or "stopped"))
            continue
        try:
            await asyncio.wait_for(svc.probe(), 10)
            result.append(ServiceStatus(svc.name, pid, svc.port, True, "ok"))
        except Exception as exc:  # report any probe failure as unhealthy
            result.append(ServiceStatus(svc.name, pid, svc.port, False, f"probe failed: {exc}"))
    return result


async def kafka_health(settings: Settings) -> ClusterHealth:
    """The controller quorum and the under-replicated partitions of this stack's Kafka."""
    return await cluster_health(settings, kafka_libs_if_fetched(settings),
                                [svc.kafka_node for svc in kafka_services(settings)])


async def wait_in_sync(settings: Settings, timeout: float = 120.0) -> None:
    """Wait until every Kafka node answers and no partition is under-replicated (after a
    node was restarted, its replicas catch up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        names = {s.name for s in kafka_services(settings)}
        nodes = [s for s in await status(settings) if s.name in names]
        try:
            urps: list[UnderReplicated] | str = await describe_partitions(settings)
        except Exception as exc:  # not answering yet: try again until the deadline
            urps = f"unknown ({type(exc).__name__}: {exc})"
        if all(n.healthy for n in nodes) and urps == []:
            return
        if loop.time() > deadline:
            down_nodes = [n.name for n in nodes if not n.healthy]
            raise StackError(
                f"Kafka not in sync after {timeout:.0f}s: nodes down {down_nodes},"
                f" under-replicated partitions: {urps if isinstance(urps, str) else len(urps)}")
        await asyncio.sleep(1.0)


def env_lines(settings: Settings) -> list[str]:
    """Shell exports that point clients at this stack (passwords stay in state files)."""
    return [
        f"export SINKFLEET_HOME={settings.home}",
        f"export SINKFLEET_STATE_DIR={settings.state}",
        f"export SINKFLEET_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}",
        f"export SINKFLEET_PG_HOST={settings.pg_host}",
        f"export SINKFLEET_PG_PORT={settings.pg_port}",
        f"export SINKFLEET_PG_USER={settings.pg_user}",
        f"export SINKFLEET_PG_DATABASE={settings.pg_database}",
        f"export SINKFLEET_REDIS_HOST={settings.redis_host}",
        f"export SINKFLEET_REDIS_PORT={settings.redis_port}",
        "# passwords: SINKFLEET_PG_PASSWORD / SINKFLEET_REDIS_PASSWORD, or the generated files"
        f" in {settings.state / 'secrets'}",
    ]
