"""`sinkfleet fleet`: the supervisor's logic, free of process I/O.

* ``RestartPolicy`` decides, per slot, whether an unexpected exit is restarted and
  after what delay (exponential back-off capped at ``max_delay``; a crash-loop guard
  gives up after more than ``max_restarts`` restarts within ``window`` seconds).
* ``Supervisor`` keeps N slots and drives a ``Launcher`` (the process I/O, see
  ``run.py``) with an injected clock, so tests run it with fakes.
* ``fleet_table`` renders the slots for the live view.

A worker exiting 0 on its own was asked to stop (e.g. someone sent it SIGTERM) and is
not restarted; a non-zero exit or a death by signal is unexpected and is.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rich.table import Table

from sinkfleet.errors import ConfigError

Say = Callable[[str, str], None]  # (message, level: "info" | "warn" | "error")


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay: float = 0.0
    reason: str = ""


class RestartPolicy:
    """Restart decisions for one slot. Pure: the caller passes the time in.

    A restart counts when it is decided (at the unexpected exit), so the guard sees
    a crash loop however long the back-off makes it wait. The back-off starts again
    from ``base_delay`` once a worker has run for ``stable_after`` seconds (default:
    the window).
    """

    def __init__(self, max_restarts: int = 5, window: float = 60.0, base_delay: float = 1.0,
                 max_delay: float = 30.0, stable_after: float | None = None) -> None:
        if max_restarts < 0:
            raise ConfigError(f"max restarts must be >= 0, not {max_restarts}")
        if window <= 0:
            raise ConfigError(f"restart window must be > 0 seconds, not {window:g}")
        if base_delay < 0 or max_delay < base_delay:
            raise ConfigError("back-off needs 0 <= base delay <= max delay")
        self.max_restarts = max_restarts
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stable_after = window if stable_after is None else stable_after
        self._restarts: deque[float] = deque()
        self._failures = 0  # consecutive unexpected exits of short-lived workers

    def recent_restarts(self, now: float) -> int:
        while self._restarts and self._restarts[0] <= now - self.window:
            self._restarts.popleft()
        return len(self._restarts)

    def next_delay(self) -> float:
        return min(self.base_delay * 2 ** min(self._failures, 32), self.max_delay)

    def on_unexpected_exit(self, now: float, uptime: float) -> Decision:
        if uptime >= self.stable_after:
            self._failures = 0
        recent = self.recent_restarts(now)
        if recent >= self.max_restarts:
            return Decision(False, reason=f"{recent} restarts in the last {self.window:g}s"
                                          f" (limit {self.max_restarts})")
        delay = self.next_delay()
        self._failures += 1
        self._restarts.append(now)
        return Decision(True, delay, f"restart {recent + 1} of {self.max_restarts} allowed"
                                     f" in {self.window:g}s")


class Proc(Protocol):
    """What the supervisor needs of a process (``subprocess.Popen`` fits)."""

    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    def launch(self, slot: Slot) -> Proc: ...

    def reaped(self, slot: Slot, code: int) -> None: ...


@dataclass
class Slot:
    index: int
    metrics_port: int | None  # None: the worker picks a free port
    policy: RestartPolicy
    state: str = "pending"  # pending | running | backoff | stopping | stopped | gave up
    proc: Proc | None = None
    started_at: float | None = None
    restart_at: float | None = None
    restarts: int = 0
    last_exit: int | None = None
    signalled: bool = False  # sent SIGTERM by the supervisor's shutdown
    pids: list[int] = field(default_factory=list)  # every pid this slot has had
    log: str = "its log"  # where the worker's output goes, for messages

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def uptime(self, now: float) -> float | None:
        if self.proc is None or self.started_at is None:
            return None
        return now - self.started_at


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited {code}"


class Supervisor:
    """N slots, each running one worker process; call ``step()`` periodically."""

    def __init__(self, slots: list[Slot], launcher: Launcher, clock: Callable[[], float],
                 say: Say, stop_timeout: float = 60.0) -> None:
        self.slots = slots
        self.launcher = launcher
        self.clock = clock
        self.say = say
        self.stop_timeout = stop_timeout
        self.stopping = False
        self.deadline: float | None = None
        self.killed = False

    def start(self) -> None:
        for slot in self.slots:
            self._launch(slot)

    def _launch(self, slot: Slot) -> None:
        now = self.clock()
        slot.restart_at = None
        try:
            proc = self.launcher.launch(slot)
        except OSError as exc:
            self.say(f"slot {slot.index}: cannot start a worker: {exc}", "warn")
            slot.started_at = now
            self._unexpected(slot, 1, now)
            return
        slot.proc, slot.started_at, slot.state = proc, now, "running"
        slot.pids.append(proc.pid)
        port = slot.metrics_port if slot.metrics_port is not None else "auto"
        again = f" (restart {slot.restarts})" if slot.restarts else ""
        self.say(f"slot {slot.index}: started worker pid {proc.pid}{again}, metrics port {port}",
                 "info")

    def step(self) -> None:
        """Reap exited workers, restart those due, enforce the shutdown deadline."""
        for slot in self.slots:
            if slot.proc is not None:
                code = slot.proc.poll()
                if code is not None:
                    self._exited(slot, code)
            elif (slot.state == "backoff" and not self.stopping and slot.restart_at is not None
                  and self.clock() >= slot.restart_at):
                slot.restarts += 1
                self._launch(slot)
        if (self.stopping and not self.killed and self.deadline is not None
                and self.clock() >= self.deadline and not self.done):
            self.say(f"workers still running after {self.stop_timeout:g}s: sending SIGKILL",
                     "warn")
            self.kill_all()

    def _exited(self, slot: Slot, code: int) -> None:
        now = self.clock()
        uptime = now - (slot.started_at or now)
        pid, slot.proc, slot.last_exit = slot.pid, None, code
        self.launcher.reaped(slot, code)
        what = f"slot {slot.index}: worker pid {pid} {describe_exit(code)} after {uptime:.1f}s"
        if self.stopping or code == 0:
            slot.state = "stopped"
            ok = code == 0
            self.say(what + ("" if self.stopping else "; not restarted (a clean exit)"),
                     "info" if ok else "warn")
            return
        self.say(what, "warn")
        self._unexpected(slot, code, now)

    def _unexpected(self, slot: Slot, code: int, now: float) -> None:
        uptime = now - (slot.started_at or now)
        decision = slot.policy.on_unexpected_exit(now, uptime)
        if decision.restart:
            slot.state, slot.restart_at = "backoff", now + decision.delay
            self.say(f"slot {slot.index}: restarting in {decision.delay:g}s"
                     f" ({decision.reason})", "warn")
        else:
            slot.state, slot.restart_at = "gave up", None
            self.say(f"slot {slot.index}: GAVE UP: crash loop, {decision.reason}; last worker"
                     f" {describe_exit(code)}; see {slot.log}", "error")
            if all(s.state == "gave up" for s in self.slots):
                self.say("every slot gave up: the fleet exits 1", "error")

    def stop(self) -> None:
        """SIGTERM every worker (they drain and exit 0); a second call sends SIGKILL."""
        if self.stopping:
            self.say("stopping again: sending SIGKILL to the workers still running", "warn")
            self.kill_all()
            return
        self.stopping = True
        self.deadline = self.clock() + self.stop_timeout
        running = [s for s in self.slots if s.proc is not None]
        self.say(f"stopping: SIGTERM to {len(running)} worker(s), waiting up to"
                 f" {self.stop_timeout:g}s", "info")
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.send_signal(signal.SIGTERM)
                slot.state, slot.signalled = "stopping", True
            elif slot.state in ("backoff", "pending"):
                slot.state, slot.restart_at = "stopped", None

    def kill_all(self) -> None:
        self.killed = True
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.kill()

    @property
    def done(self) -> bool:
        return all(s.proc is None and s.state in ("stopped", "gave up") for s in self.slots)

    @property
    def exit_code(self) -> int:
        """0 iff no slot gave up and every worker stopped by the shutdown exited 0."""
        if any(s.state == "gave up" for s in self.slots):
            return 1
        return 0 if all(s.last_exit == 0 for s in self.slots if s.signalled) else 1


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


STATE_STYLE = {"running": "green", "backoff": "yellow", "stopping": "cyan", "stopped": "dim",
               "gave up": "bold red", "pending": "dim"}


def fleet_table(spec: str, slots: list[Slot], now: float) -> Table:
    table = Table("slot", "pid", "state", "restarts", "uptime", "metrics port", "last exit",
                  title=f"sinkfleet fleet: spec {spec}")
    for s in slots:
        state = s.state
        if state == "backoff" and s.restart_at is not None:
            state = f"backoff ({max(0.0, s.restart_at - now):.0f}s)"
        style = STATE_STYLE.get(s.state, "")
        table.add_row(str(s.index), str(s.pid or "-"), f"[{style}]{state}[/]" if style else state,
                      str(s.restarts), _duration(s.uptime(now)),
                      str(s.metrics_port) if s.metrics_port is not None else "auto",
                      describe_exit(s.last_exit) if s.last_exit is not None else "-")
    return table
