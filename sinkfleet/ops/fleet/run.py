"""`sinkfleet fleet`: the process I/O around ``fleet.Supervisor``.

Files, under the state directory (``SINKFLEET_STATE_DIR``, default ``.sinkfleet``):

* ``logs/fleet-<spec>-<i>.log`` — slot i's worker output (appended; a marker line per start);
* ``run/fleet-<spec>-<i>.pid`` — the pid of slot i's running worker, removed when it exits;
* ``run/fleet-<spec>.pid`` — the supervisor's own pid: a second fleet of the same spec on
  the same state directory refuses to start.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError
from sinkfleet.ops.fleet.supervisor import Proc, RestartPolicy, Slot, Supervisor, fleet_table


def log_path(settings: Settings, spec: str, index: int) -> Path:
    return settings.state / "logs" / f"fleet-{spec}-{index}.log"


def pid_path(settings: Settings, spec: str, index: int | None = None) -> Path:
    name = f"fleet-{spec}" if index is None else f"fleet-{spec}-{index}"
    return settings.state / "run" / f"{name}.pid"


def _alive(pid: int, marker: bytes) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a reused pid is not ours
        try:
            return marker in cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
    return True


class ProcessLauncher:
    """Starts `python -m sinkfleet worker --spec NAME` per slot; keeps pid files and logs."""

    def __init__(self, settings: Settings, spec: str, instance_prefix: str | None = None
                 ) -> None:
        self.settings = settings
        self.spec = spec
        self.instance_prefix = instance_prefix  # None: dynamic group membership
        (settings.state / "logs").mkdir(parents=True, exist_ok=True)
        (settings.state / "run").mkdir(parents=True, exist_ok=True)

    def launch(self, slot: Slot) -> Proc:
        env = {**os.environ, "SINKFLEET_HOME": str(self.settings.home),
               "SINKFLEET_STATE_DIR": str(self.settings.state),
               "SINKFLEET_METRICS_PORT": str(slot.metrics_port or 0)}
        env.pop("SINKFLEET_WORKER_INSTANCE_ID", None)  # one id per slot, never shared
        if self.instance_prefix is not None:
            env["SINKFLEET_WORKER_INSTANCE_ID"] = f"{self.instance_prefix}-{slot.index}"
        log = log_path(self.settings, self.spec, slot.index)
        with open(log, "ab") as fh:
            fh.write(f"==== {datetime.now().isoformat(timespec='seconds')} sinkfleet fleet:"
                     f" slot {slot.index} starting (restarts so far {slot.restarts})\n".encode())
            fh.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "sinkfleet", "worker", "--spec", self.spec],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _write_atomic(pid_path(self.settings, self.spec, slot.index), f"{proc.pid}\n")
        return proc

    def reaped(self, slot: Slot, code: int) -> None:
        pid_path(self.settings, self.spec, slot.index).unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _supervisor_pidfile(settings: Settings, spec: str) -> Iterator[None]:
    path = pid_path(settings, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    other = _read_pid(path)
    if other is not None and other != os.getpid() and _alive(other, b"fleet"):
        raise ConfigError(f"a fleet of spec {spec!r} is already running (pid {other}, {path});"
                          " stop it first or use another SINKFLEET_STATE_DIR")
    for slot_pidfile in sorted(path.parent.glob(f"fleet-{spec}-*.pid")):
        orphan = _read_pid(slot_pidfile)
        if orphan is not None and _alive(orphan, b"worker"):
            raise ConfigError(f"worker pid {orphan} of an earlier fleet of spec {spec!r} is"
                              f" still running ({slot_pidfile}); stop it first (kill {orphan})")
        slot_pidfile.unlink(missing_ok=True)
    _write_atomic(path, f"{os.getpid()}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def instance_prefix(group: str) -> str:
    """Static member ids of this fleet's slots: ``<group>-<host>-<fleet pid>-<slot>``. A
    restarted worker reuses its slot's id; another fleet (even on this host) never does."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:120]
    return f"{group[:100]}-{host}-{os.getpid()}"


def run_fleet(settings: Settings, spec: str, workers: int, *, metrics_base_port: int,
              max_restarts: int, restart_window: float, stop_timeout: float,
              console: Console, err: Console, group: str | None = None) -> int:
    """Supervise until SIGTERM/SIGINT (or until every slot stopped or gave up)."""
    if metrics_base_port and metrics_base_port + workers - 1 > 65535:
        raise ConfigError(f"metrics ports {metrics_base_port}..{metrics_base_port + workers - 1}"
                          " exceed 65535; lower --metrics-base-port")
    live_view = console.is_terminal

    def say(message: str, level: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        line = escape(f"{stamp} fleet[{spec}] {message}")
        if level == "error":
            err.print(f"[bold red]{line}[/]", highlight=False, soft_wrap=not live_view)
        elif live_view:
            console.print(f"[yellow]{line}[/]" if level == "warn" else line, highlight=False)
        else:
            console.print(line, highlight=False, soft_wrap=True)

    slots = [Slot(i, metrics_base_port + i if metrics_base_port else None,
                  RestartPolicy(max_restarts, restart_window),
                  log=str(log_path(settings, spec, i))) for i in range(workers)]
    with _supervisor_pidfile(settings, spec):
        prefix = instance_prefix(group) if group is not None else None
        sup = Supervisor(slots, ProcessLauncher(settings, spec, prefix), time.monotonic, say,
                         stop_timeout=stop_timeout)
        signals: list[int] = []

        def on_signal(signum: int, frame: FrameType | None) -> None:
            signals.append(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            member = (f"static members {prefix}-<slot>" if prefix else "dynamic members")
            say(f"supervising {workers} worker(s) of spec {spec} ({member}); logs in"
                f" {settings.state / 'logs'}, pids in {settings.state / 'run'}", "info")
            sup.start()
            with contextlib.ExitStack() as stack:
                live = None
                if live_view:
                    live = stack.enter_context(Live(fleet_table(spec, slots, time.monotonic()),
                                                    console=console, auto_refresh=False))
                _loop(sup, signals, live, spec)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if not sup.done:  # an error in the loop itself: leave no worker behind
                sup.kill_all()
    code = sup.exit_code
    say(f"exiting {code}: " + ", ".join(f"slot {s.index} {s.state}" for s in slots),
        "info" if code == 0 else "error")
    return code


def _loop(sup: Supervisor, signals: list[int], live: Live | None, spec: str) -> None:
    handled = 0
    next_paint = 0.0
    while True:
        while handled < len(signals):
            sup.say(f"received {signal.Signals(signals[handled]).name}", "info")
            handled += 1
            sup.stop()
        sup.step()
        now = time.monotonic()
        if live is not None and (now >= next_paint or sup.done):
            live.update(fleet_table(spec, sup.slots, now), refresh=True)
            next_paint = now + 1.0
        if sup.done:
            return
        time.sleep(0.1)
