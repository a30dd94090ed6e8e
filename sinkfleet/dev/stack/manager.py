"""`sinkfleet stack up|down|status|env`: the local stack, idempotent and probed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass

from sinkfleet.config import Settings
from sinkfleet.dev.stack.process import port_open
from sinkfleet.dev.stack.services import Service, services, wait_ready
from sinkfleet.errors import StackError

STOP_SIGNALS = {"postgres": signal.SIGINT}  # PostgreSQL: SIGINT is "fast shutdown"
START_TIMEOUT = {"kafka": 120.0, "postgres": 60.0, "redis": 30.0}


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
    unknown = set(only) - {s.name for s in all_services}
    if unknown:
        raise StackError(f"unknown service(s) {sorted(unknown)}; choose from kafka, postgres,"
                         " redis")
    return [s for s in all_services if s.name in only]


async def up(settings: Settings, only: list[str] | None = None,
             say: Callable[[str], None] = print) -> list[str]:
    """Start what is not running; return the names this call started."""
    started: list[str] = []
    for svc in _select(settings, only):
        pid = svc.proc.pid()
        if pid is not None:
            await wait_ready(svc, START_TIMEOUT[svc.name])
            say(f"{svc.name}: already running (pid {pid}, port {svc.port})")
            continue
        if port_open(svc.host, svc.port):
            raise StackError(f"{svc.name}: port {svc.port} is taken by another process; stop it"
                             f" or choose another port (see `sinkfleet stack env`)")
        say(f"{svc.name}: preparing")
        await asyncio.to_thread(svc.prepare)
        pid = svc.proc.start(svc.argv(), user=svc.user())
        say(f"{svc.name}: started (pid {pid}), waiting until it answers")
        await wait_ready(svc, START_TIMEOUT[svc.name])
        await svc.after_ready()
        say(f"{svc.name}: ready on {svc.host}:{svc.port} (log {svc.proc.logfile})")
        started.append(svc.name)
    return started


def down(settings: Settings, only: list[str] | None = None,
         say: Callable[[str], None] = print) -> None:
    """Stop the services this stack started (by pid file), in reverse order."""
    for svc in reversed(_select(settings, only)):
        sig = STOP_SIGNALS.get(svc.name, signal.SIGTERM)
        if svc.proc.stop(sig):
            say(f"{svc.name}: stopped")
        else:
            say(f"{svc.name}: not running")


async def status(settings: Settings) -> list[ServiceStatus]:
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
