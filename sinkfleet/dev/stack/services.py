"""The three local services: Kafka (KRaft, Maven jars; sinkfleet/dev/stack/kafka_node.py),
PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

from sinkfleet.config import Settings
from sinkfleet.dev.stack.base import Service, _run
from sinkfleet.dev.stack.base import maven_fetch as maven_fetch
from sinkfleet.dev.stack.kafka_node import SINGLE_NODE_DEFAULTS as SINGLE_NODE_DEFAULTS
from sinkfleet.dev.stack.kafka_node import Kafka as Kafka
from sinkfleet.dev.stack.kafka_node import kafka_services
from sinkfleet.dev.stack.process import port_open
from sinkfleet.errors import StackError
from sinkfleet.private_files import write_private
from sinkfleet.secrets import ensure_secret

# The local stack's PostgreSQL settings (postgresql.conf here; `-c` flags in a container,
# sinkfleet/dev/stack/containers.py). fsync and synchronous_commit stay on.
PG_TUNING = (
    ("max_connections", "200"),
    ("shared_buffers", "256MB"),
    ("work_mem", "16MB"),
    ("maintenance_work_mem", "128MB"),
    ("max_wal_size", "4GB"),
    ("checkpoint_timeout", "15min"),
    ("wal_compression", "lz4"),
    ("log_min_messages", "warning"),
)


def redis_settings(settings: Settings, password: str) -> list[tuple[str, str]]:
    """The local stack's Redis settings (redis.conf here; flags in a container)."""
    return [
        ("requirepass", password),
        # A cache: it is rebuilt from PostgreSQL, so no persistence.
        ("save", '""'),
        ("appendonly", "no"),
        ("maxmemory", settings.redis_maxmemory),
        ("maxmemory-policy", "allkeys-lru"),
    ]


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise StackError(f"PostgreSQL's {name} not found: install the server"
                     " (apt-get install postgresql) or put its bin/ on PATH")


class Postgres(Service):
    marker = "postgres"

    @property
    def port(self) -> int:
        return self.settings.pg_port

    def user(self) -> str | None:
        # PostgreSQL refuses to run as root; use Debian's unprivileged 'postgres' account.
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise StackError("running as root but no 'postgres' user exists to run PostgreSQL:"
                             " install the postgresql package or run as a normal user") from None
        return "postgres"

    @property
    def data(self) -> Path:
        return self._root() / "data"

    def _root(self) -> Path:
        root = self.settings.state / "postgres"
        user = self.user()
        if user is None:
            return root
        # The postgres user must be able to reach the data directory.
        probe = subprocess.run(["test", "-x", str(self.settings.state.parent)], user=user,
                               check=False)
        if probe.returncode == 0:
            return root
        # Keyed on this state directory's own random id, so a fresh clone at the same path
        # (new secrets) never reuses an old cluster initialised with another password.
        stack_id = self.settings.state / "stack-id"
        if not stack_id.is_file():
            self.settings.state.mkdir(parents=True, exist_ok=True)
            stack_id.write_text(secrets.token_hex(8))
        return Path(f"/var/tmp/sinkfleet-pg-{stack_id.read_text().strip()}")

    @property
    def password(self) -> str:
        return ensure_secret(self.settings, "pg_password")

    def prepare(self) -> None:
        root, user = self._root(), self.user()
        root.mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(root, user, user)
        if (self.data / "PG_VERSION").is_file():
            return
        pwfile = root / ".pwfile"
        write_private(pwfile, self.password + "\n")
        if user is not None:
            shutil.chown(pwfile, user, user)
        try:
            _run([_pg_bin("initdb"), "-D", str(self.data), "-U", self.settings.pg_user,
                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--locale=C"], "initdb", user=user)
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# sinkfleet local stack\n" + "\n".join([
                "listen_addresses = '127.0.0.1'",
                "unix_socket_directories = ''",
                *(f"{key} = {value}" for key, value in PG_TUNING),
                "",
            ]))

    def argv(self) -> list[str]:
        # Commit timestamps (10 bytes a transaction): benchmarks/latency.py reads each
        # row's commit time from them. On the command line, so existing data dirs get it.
        return [_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "track_commit_timestamp=on"]

    async def probe(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.settings.pg_user,
                                     password=self.password, database="postgres", timeout=3)
        await conn.close()

    async def after_ready(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.settings.pg_user,
                                     password=self.password, database="postgres", timeout=5)
        try:
            db = self.settings.pg_database
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
                await conn.execute(f'CREATE DATABASE "{db}"')
        finally:
            await conn.close()


class Redis(Service):
    marker = "redis-server"

    @property
    def port(self) -> int:
        return self.settings.redis_port

    def prepare(self) -> None:
        if shutil.which("redis-server") is None:
            raise StackError("redis-server not found: install it (apt-get install redis-server)")
        home = self.settings.state / "redis"
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join([
                "bind 127.0.0.1",
                f"port {self.port}",
                f"dir {home}",
                "daemonize no",
                "protected-mode yes",
                *(f"{key} {value}" for key, value in redis_settings(self.settings,
                                                                   self.password)),
                "",
            ]))

    @property
    def password(self) -> str:
        return ensure_secret(self.settings, "redis_password")

    def argv(self) -> list[str]:
        return ["redis-server", str(self.settings.state / "redis" / "redis.conf")]

    async def probe(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis(host=self.host, port=self.port, password=self.password,
                                socket_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()


def services(settings: Settings) -> list[Service]:
    return [*kafka_services(settings), Postgres("postgres", settings),
            Redis("redis", settings)]


async def wait_ready(svc: Service, timeout: float) -> None:
    """Probe until the service answers; fail with its log path if it dies or times out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < deadline:
        if svc.proc.pid() is None:
            raise StackError(f"{svc.name} exited during start-up; see {svc.proc.logfile}:\n"
                             f"{svc.proc.log_tail()}")
        if port_open(svc.host, svc.port):
            try:
                await svc.probe()
                return
            except Exception as exc:  # not ready yet: any failure means probe again
                last = exc
        await asyncio.sleep(0.2)
    raise StackError(f"{svc.name} did not become ready in {timeout:.0f}s (last error: {last});"
                     f" see {svc.proc.logfile}")
