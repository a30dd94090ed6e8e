"""The three local services: Kafka (KRaft, Maven jars), PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sinkfleet.config import Settings
from sinkfleet.dev.stack.cluster import KafkaNode, read_record, single_node
from sinkfleet.dev.stack.process import ManagedProcess, port_open
from sinkfleet.errors import StackError
from sinkfleet.private_files import write_private
from sinkfleet.secrets import ensure_secret


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


# One broker, fast test start-up: internal topics with one replica and one partition,
# no rebalance delay, and topics only from topics/ (never auto-created).
SINGLE_NODE_DEFAULTS = (
    "num.partitions=1",
    "offsets.topic.num.partitions=1",
    "offsets.topic.replication.factor=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "group.initial.rebalance.delay.ms=0",
    "auto.create.topics.enable=false",
)


def cluster_defaults(brokers: int) -> tuple[str, ...]:
    """A replicated cluster's settings: internal topics and topics made without a
    replication factor get min(3, brokers) replicas and need all but one in sync, and a
    replica that fell behind never becomes leader (no unclean election: it would lose
    acknowledged records)."""
    rf = min(3, brokers)
    isr = rf - 1 if rf >= 3 else 1
    return (
        "num.partitions=1",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={isr}",
        "offsets.topic.num.partitions=3",
        f"offsets.topic.replication.factor={rf}",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={isr}",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={isr}",
        "unclean.leader.election.enable=false",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
    )


def node_properties(node: KafkaNode, voters: list[KafkaNode], data: Path,
                    clustered: bool) -> str:
    """server.properties of one combined broker/controller node (pure)."""
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node.id}",
        "controller.quorum.voters=" + ",".join(v.voter for v in voters),
        f"listeners=PLAINTEXT://{node.host}:{node.port},"
        f"CONTROLLER://{node.host}:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://{node.host}:{node.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data}",
        *(cluster_defaults(len(voters)) if clustered else SINGLE_NODE_DEFAULTS),
        "",
    ])


def _libs_dir(settings: Settings) -> Path:
    # keyed on the pom: a new Kafka version (or tool) is a new directory, fetched once
    pom = resources.files("sinkfleet.dev.stack").joinpath("pom.xml")
    return settings.state / "kafka" / f"libs-{hashlib.sha256(pom.read_bytes()).hexdigest()[:12]}"


def kafka_libs(settings: Settings) -> Path:
    """The Kafka jars (resolved from Maven Central once), shared by every node."""
    libs = _libs_dir(settings)
    pom = resources.files("sinkfleet.dev.stack").joinpath("pom.xml")
    with resources.as_file(pom) as pom_path:
        return maven_fetch(libs, ["-f", str(pom_path), "dependency:copy-dependencies",
                                  "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
                           "Kafka jars")


def kafka_libs_if_fetched(settings: Settings) -> Path | None:
    """The Kafka jars if they are already here (never fetches)."""
    libs = _libs_dir(settings)
    return libs if (libs / ".complete").is_file() else None


def need_java() -> None:
    if shutil.which("java") is None:
        raise StackError("Java not found on PATH: install a JDK 17+"
                         " (apt-get install openjdk-17-jre-headless)")


@dataclass
class Kafka(Service):
    """One Kafka node: the whole single-node Kafka (``kafka``), or one node of a recorded
    cluster (``kafka-1`` … with its own directory, ports, heap and process)."""

    node: KafkaNode | None = None  # None: the single node on the settings' ports
    voters: list[KafkaNode] = field(default_factory=list)
    cluster_id: str | None = None  # a cluster's, shared by its nodes; None: single node
    marker = "kafka.Kafka"

    def __post_init__(self) -> None:
        if self.node is None:
            self.node = single_node(self.settings)

    @property
    def kafka_node(self) -> KafkaNode:
        assert self.node is not None  # set by __post_init__
        return self.node

    @property
    def host(self) -> str:  # type: ignore[override]
        return self.kafka_node.host

    @property
    def port(self) -> int:
        return self.kafka_node.port

    @property
    def home(self) -> Path:
        root = self.settings.state / "kafka"
        return root if self.cluster_id is None else root / f"node-{self.kafka_node.id}"

    def _libs(self) -> Path:
        return kafka_libs(self.settings)

    def prepare(self) -> None:
        need_java()
        self.libs = self._libs()
        data = self.home / "data"
        props = self.home / "server.properties"
        props.parent.mkdir(parents=True, exist_ok=True)
        props.write_text(node_properties(self.kafka_node, self.voters or [self.kafka_node], data,
                                         clustered=self.cluster_id is not None))
        if not (data / "meta.properties").is_file():
            cp = f"{self.libs}/*"
            cluster_id = self.cluster_id or _run(
                ["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                "kafka storage random-uuid").strip().splitlines()[-1]
            _run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                  "-c", str(props), "--ignore-formatted"], f"{self.name} storage format")

    def argv(self) -> list[str]:
        log4j = resources.files("sinkfleet.dev.stack").joinpath("log4j2.properties")
        heap = self.settings.kafka_heap
        return ["java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.libs}/*",
                "kafka.Kafka", str(self.home / "server.properties")]

    async def probe(self) -> None:
        """This node answers metadata requests and is a registered, unfenced broker."""
        # aiokafka only when Kafka is probed: `stack up --only postgres` never loads it
        from aiokafka.admin import AIOKafkaAdminClient

        from sinkfleet.kafka.client import kafka_client_kwargs

        admin = AIOKafkaAdminClient(**{**kafka_client_kwargs(self.settings),
                                       "bootstrap_servers": self.kafka_node.address},
                                    request_timeout_ms=3000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        if self.kafka_node.id not in {b["node_id"] for b in cluster["brokers"]}:
            raise StackError(f"{self.name} answers but is not (yet) a registered broker")


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
                "max_connections = 200",
                "shared_buffers = 256MB",
                "work_mem = 16MB",
                "maintenance_work_mem = 128MB",
                "max_wal_size = 4GB",
                "checkpoint_timeout = 15min",
                "wal_compression = lz4",
                "log_min_messages = warning",
                "",
            ]))

    def argv(self) -> list[str]:
        return [_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port)]

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
                f"requirepass {self.password}",
                # A cache: it is rebuilt from PostgreSQL, so no persistence.
                'save ""',
                "appendonly no",
                f"maxmemory {self.settings.redis_maxmemory}",
                "maxmemory-policy allkeys-lru",
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


def kafka_services(settings: Settings) -> list[Kafka]:
    """The single node ``kafka``, or the recorded cluster's ``kafka-1`` … ``kafka-N``."""
    record = read_record(settings.state)
    if record is None:
        return [Kafka("kafka", settings, single_node(settings))]
    nodes = list(record.nodes)
    return [Kafka(f"kafka-{n.id}", settings, n, nodes, record.cluster_id) for n in nodes]


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
