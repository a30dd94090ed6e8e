"""What every local-stack service shares: a command run, the Maven fetch, the base class."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sinkfleet.config import Settings
from sinkfleet.dev.stack.process import ManagedProcess
from sinkfleet.errors import StackError


def _run(argv: list[str], what: str, user: str | None = None) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, user=user, check=False)
    except FileNotFoundError:
        raise StackError(f"{what}: {argv[0]} not found on PATH") from None
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise StackError(f"{what} failed (exit {out.returncode}): " + " | ".join(tail))
    return out.stdout


def maven_fetch(dest: Path, mvn_args: list[str], what: str,
                say: Callable[[str], None] | None = None) -> Path:
    """Fill ``dest`` once by running ``mvn -B mvn_args`` (which must write into ``dest``).

    ``dest/.complete`` marks a finished fetch, so an interrupted one is redone and a
    finished one costs nothing. ``say``, if given, hears each artifact Maven downloads.
    """
    if (dest / ".complete").is_file():
        return dest
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) not found: install it (apt-get install maven);"
                         f" it fetches the {what} from Maven Central")
    argv = ["mvn", "-B", *mvn_args]
    if say is None:
        _run([argv[0], "-q", *argv[1:]], f"resolving {what} from Maven Central")
    else:
        say(f"{what}: resolving from Maven Central into {dest} (once; cached there)")
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(line.rstrip())
                if line.startswith("Downloaded from"):
                    say(f"  {line.split(': ', 1)[-1].strip()}")
        if proc.returncode != 0:
            tail = [ln for ln in lines if "ERROR" in ln][-5:] or lines[-5:]
            raise StackError(f"resolving {what} from Maven Central failed"
                             f" (exit {proc.returncode}): " + " | ".join(tail))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ".complete").touch()
    return dest


@dataclass
class Service:
    name: str
    settings: Settings

    @property
    def proc(self) -> ManagedProcess:
        st = self.settings.state
        return ManagedProcess(self.name, st / "run" / f"{self.name}.pid",
                              st / "logs" / f"{self.name}.log", self.marker)

    marker = ""
    host = "127.0.0.1"

    @property
    def port(self) -> int:
        raise NotImplementedError

    def prepare(self) -> None:
        """Install/initialise on-disk state (idempotent)."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def user(self) -> str | None:
        return None

    async def probe(self) -> None:
        """Raise unless the service answers a real request."""
        raise NotImplementedError

    async def after_ready(self) -> None:
        """One-time set-up that needs the running service."""
