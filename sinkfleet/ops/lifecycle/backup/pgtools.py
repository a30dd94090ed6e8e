"""PostgreSQL's own client tools (pg_dump, pg_restore), run without a password in sight.

The password goes into a temporary ``.pgpass`` (mode 0600, in a private directory,
deleted afterwards) named by ``PGPASSFILE``; host, port, user and TLS settings go into
libpq's environment variables. Neither the command line (visible in ``ps``) nor our
output ever holds the password.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin/{tool}"


class PgToolError(SinkfleetError):
    """pg_dump or pg_restore is missing, too old for the server, or failed."""


@dataclass(frozen=True)
class PgTool:
    path: str
    major: int
    version: str  # e.g. "15.8"


def _version(path: str) -> tuple[int, str] | None:
    import subprocess

    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    if m is None:
        return None
    return int(m.group(1)), m.group(0)


def find_tool(tool: str, server_major: int, at_least: int = 0) -> PgTool:
    """The ``tool`` binary for a server of major version ``server_major``: the exact major
    if installed (Debian keeps one per version under /usr/lib/postgresql/N/bin), else the
    oldest newer one (pg_dump refuses servers newer than itself; pg_restore archives
    written by newer pg_dumps). ``at_least``: a minimum major (e.g. the dump's pg_dump)."""
    want = max(server_major, at_least)
    found: dict[int, PgTool] = {}
    candidates = sorted(glob.glob(DEBIAN_BIN_GLOB.format(tool=tool)))
    on_path = shutil.which(tool)
    if on_path:
        candidates.append(on_path)
    for path in candidates:
        got = _version(path)
        if got is not None and got[0] not in found:
            found[got[0]] = PgTool(path, *got)
    usable = sorted(m for m in found if m >= want)
    if not usable:
        have = ", ".join(f"{t.path} ({t.version})" for t in found.values()) or "none"
        raise PgToolError(
            f"no {tool} of PostgreSQL {want} or newer (found: {have}); install the client"
            f" of the server's version, e.g. apt-get install postgresql-client-{want}")
    best = server_major if server_major in usable else usable[0]
    return found[best]


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def libpq_env(settings: Settings, database: str | None = None) -> Iterator[dict[str, str]]:
    """An environment for libpq tools connecting as ``settings`` (to ``database``, default
    the settings' one). The temporary .pgpass is gone when the block ends."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") or k in ("PGTZ", "PGCLIENTENCODING")}
    env.update(PGHOST=settings.pg_host, PGPORT=str(settings.pg_port),
               PGUSER=settings.pg_user, PGDATABASE=database or settings.pg_database,
               PGSSLMODE=settings.pg_sslmode, PGAPPNAME="sinkfleet-backup",
               PGCONNECT_TIMEOUT="10")
    for var, value in (("PGSSLROOTCERT", settings.pg_sslrootcert),
                       ("PGSSLCERT", settings.pg_sslcert), ("PGSSLKEY", settings.pg_sslkey)):
        if value is not None:
            env[var] = str(value)
    private = tempfile.mkdtemp(prefix="sinkfleet-pg-")  # mode 0700
    try:
        password = settings.secret("pg_password")
        if password is not None:
            passfile = Path(private) / ".pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(":".join([_pgpass_field(settings.pg_host), str(settings.pg_port),
                                   "*", _pgpass_field(settings.pg_user),
                                   _pgpass_field(password.get_secret_value())])
                         + "\n")
            env["PGPASSFILE"] = str(passfile)
        else:
            env["PGPASSFILE"] = os.devnull
        yield env
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


async def run_tool(argv: list[str], env: dict[str, str], what: str,
                   watch: Path | None = None,
                   on_bytes: Callable[[int], None] | None = None) -> str:
    """Run a libpq tool; return its stdout. While it runs, report the size of ``watch``
    (the file it writes) to ``on_bytes`` twice a second. Failure: its last stderr lines."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    communicate = asyncio.ensure_future(proc.communicate())
    while not communicate.done():
        await asyncio.wait({communicate}, timeout=0.5)
        if watch is not None and on_bytes is not None:
            on_bytes(_size(watch))
    out, errs = communicate.result()
    if proc.returncode != 0:
        tail = " | ".join(errs.decode(errors="replace").strip().splitlines()[-6:])
        hint = ""
        if "permission denied" in tail:
            hint = ("; run it as the database owner (SINKFLEET_PG_USER), not the workers'"
                    " least-privilege role")
        raise PgToolError(f"{what} failed (exit {proc.returncode}): {tail}{hint}")
    return out.decode(errors="replace")
