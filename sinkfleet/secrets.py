"""Generated secrets: the passwords a local stack makes once, under ``<state>/secrets/``.

Read by ``Settings.secret`` (when a connection is made) and written by the stack and by
``sink.postgres.roles`` (the workers' login role), so neither reaches into the other.
"""

from __future__ import annotations

import os
from pathlib import Path
from secrets import token_urlsafe
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sinkfleet.config import Settings


def secret_path(state: Path, name: str) -> Path:
    """Where the generated secret ``name`` lives (mode 0600 in a 0700 directory)."""
    return state / "secrets" / name


def read_secret(state: Path, name: str) -> str | None:
    """The generated secret ``name`` as it is on disk now, or None if none was made."""
    path = secret_path(state, name)
    return path.read_text().strip() if path.is_file() else None


def ensure_secret(settings: Settings, name: str) -> str:
    """The password ``name``: from settings if set, else generated once."""
    current = getattr(settings, name)
    if current is not None:
        return str(current.get_secret_value())
    return generated_secret(secret_path(settings.state, name))


def generated_secret(path: Path) -> str:
    """The password in ``path``, generated there (mode 0600) if it does not exist yet.
    Raises ``OSError`` when it cannot be written (a read-only state directory)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # a concurrent `db migrate` made it meanwhile
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(token_urlsafe(24))
    return path.read_text().strip()
