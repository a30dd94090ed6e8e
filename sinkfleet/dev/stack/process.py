"""Start, probe and stop one background service by pid file (pure process plumbing)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sinkfleet.errors import StackError


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    """Command line and process name (services such as Redis rewrite their title)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        comm = Path(f"/proc/{pid}/comm").read_bytes()
        return (cmd + b" " + comm).decode(errors="replace")
    except OSError:
        return ""


@dataclass
class ManagedProcess:
    """A service process we started, remembered by pid file and a cmdline marker.

    The marker guards against pid reuse: ``down`` never signals a process whose
    command line is not ours.
    """

    name: str
    pidfile: Path
    logfile: Path
    marker: str

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if self.marker not in _cmdline(pid):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        # A zombie (exited, not yet reaped by us) is not running.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                return None
        except (OSError, IndexError):
            return None
        return pid

    def start(self, argv: list[str], *, env: dict[str, str] | None = None,
              user: str | None = None, cwd: Path | None = None) -> int:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, user=user, cwd=cwd, start_new_session=True,
            )
        except FileNotFoundError:
            raise StackError(f"{self.name}: {argv[0]} not found") from None
        finally:
            log.close()
        self.pidfile.write_text(str(proc.pid))
        # Just after exec, /proc may still show the parent's name: wait until the
        # process is recognisably ours (or has exited) before anyone probes it.
        deadline = time.monotonic() + 5
        while self.pid() is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return proc.pid

    def send(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to our process if it runs; do not wait."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        return True

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> bool:
        """Signal our process and wait for it to exit; SIGKILL after ``timeout``."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
