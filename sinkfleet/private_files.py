"""Files and directories only their owner may read (0600 / 0700), private from the moment
they exist: created with that mode, never chmod-ed afterwards (a reader who opens the
file in between keeps the descriptor)."""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dirs(path: Path) -> Path:
    """``mkdir -p path`` where every directory it creates is 0700 (``Path.mkdir`` gives
    missing parents the default mode). Existing directories are left as they are."""
    missing = []
    for p in (path, *path.parents):
        if p.is_dir():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made concurrently; fine if it is a directory
            if not p.is_dir():
                raise
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """A descriptor on ``path`` created 0600; a stale file at ``path`` (a crashed run's
    leftover, possibly with a wider mode) is removed first so the mode always applies."""
    path.unlink(missing_ok=True)
    return os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` into a new 0600 file at ``path`` (replacing any file there)."""
    raw = data.encode() if isinstance(data, str) else data
    with os.fdopen(open_private(path), "wb") as fh:
        fh.write(raw)


__all__ = ["DIR_MODE", "FILE_MODE", "open_private", "private_dirs", "write_private"]
