"""The local stack in Docker (testcontainers), for `SINKFLEET_TEST_BACKEND=testcontainers`.

The same three services with the same settings as `sinkfleet stack up`: Kafka from the
``apache/kafka`` image at the pom's version, KRaft with the single node's defaults;
PostgreSQL and Redis with the local stack's tuning and the *generated* passwords of the
state directory (so every client finds them where it always does). The definitions are
pure (:func:`container_specs`, :func:`client_env`) and tested without Docker; only
:class:`DockerStack` talks to an engine. Generic containers only: testcontainers'
``KafkaContainer`` expects Confluent images and cannot start ``apache/kafka`` 4.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.stack.kafka_node import SINGLE_NODE_DEFAULTS
from sinkfleet.dev.stack.services import PG_TUNING, redis_settings
from sinkfleet.errors import StackError
from sinkfleet.secrets import ensure_secret

POSTGRES_IMAGE = "postgres:16"  # as docker-compose.yml
REDIS_IMAGE = "redis:7"
# A fixed id: each container is new, so it only has to be a valid one (22 base64url chars).
CLUSTER_ID = "c2lua2ZsZWV0LXRlc3RzMQ"
BROKER_PORT = 9092  # inside the container: the broker's own listener (inter-broker)
CONTROLLER_PORT = 9093


def kafka_image() -> str:
    """``apache/kafka`` at the version the local stack's jars have (sinkfleet/dev/stack/
    pom.xml), so both backends run the same Kafka."""
    pom = resources.files("sinkfleet.dev.stack").joinpath("pom.xml").read_text()
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    if found is None:
        raise StackError("sinkfleet/dev/stack/pom.xml names no kafka.version")
    return f"apache/kafka:{found.group(1)}"


def kafka_env_name(prop: str) -> str:
    """The ``apache/kafka`` image's environment variable for a server property: KAFKA_
    and the name upper-cased, '.' → '_', '_' → '__', '-' → '___' (the image's rule)."""
    return "KAFKA_" + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


@dataclass(frozen=True)
class ContainerSpec:
    """One container: image, environment, command, and the ports clients reach."""

    name: str
    image: str
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    exposed: tuple[int, ...] = ()  # container ports mapped to random host ports
    bound: dict[int, int] = field(default_factory=dict)  # container port -> same host port


def kafka_spec(host: str, port: int) -> ContainerSpec:
    """A single KRaft node. Clients reach ``host:port``; the host port is chosen before the
    container starts, because the broker must advertise it."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@localhost:{CONTROLLER_PORT}",
        "listeners": f"BROKER://:{BROKER_PORT},CONTROLLER://:{CONTROLLER_PORT},"
                     f"EXTERNAL://:{port}",
        "advertised.listeners": f"BROKER://localhost:{BROKER_PORT},EXTERNAL://{host}:{port}",
        "listener.security.protocol.map": "BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                                          "EXTERNAL:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "BROKER",
        "log.dirs": "/var/lib/kafka/data",
    }
    for line in SINGLE_NODE_DEFAULTS:
        key, _, value = line.partition("=")
        props[key] = value
    env = {"CLUSTER_ID": CLUSTER_ID, "KAFKA_HEAP_OPTS": "-Xms512m -Xmx512m"}
    env.update({kafka_env_name(k): v for k, v in props.items()})
    return ContainerSpec("kafka", kafka_image(), env, bound={port: port})


def postgres_spec(settings: Settings) -> ContainerSpec:
    env = {"POSTGRES_USER": settings.pg_user, "POSTGRES_DB": settings.pg_database,
           "POSTGRES_PASSWORD": ensure_secret(settings, "pg_password"),
           "POSTGRES_INITDB_ARGS": "--auth=scram-sha-256 --encoding=UTF8 --locale=C"}
    command = ["postgres", *(arg for k, v in PG_TUNING for arg in ("-c", f"{k}={v}"))]
    return ContainerSpec("postgres", POSTGRES_IMAGE, env, command, exposed=(5432,))


def redis_spec(settings: Settings) -> ContainerSpec:
    password = ensure_secret(settings, "redis_password")
    command = ["redis-server"]
    for key, value in redis_settings(settings, password):
        command += [f"--{key}", "" if value == '""' else value]
    return ContainerSpec("redis", REDIS_IMAGE, command=command, exposed=(6379,))


def container_specs(settings: Settings, kafka_host: str, kafka_port: int
                    ) -> list[ContainerSpec]:
    return [kafka_spec(kafka_host, kafka_port), postgres_spec(settings), redis_spec(settings)]


def client_env(settings: Settings, host: str, kafka_port: int, pg_port: int,
               redis_port: int) -> dict[str, str]:
    """The SINKFLEET_* variables that point every client (tests, worker processes) at the
    containers. No passwords: they stay in the state directory's generated files, which
    ``Settings.secret`` reads, exactly as with the local stack."""
    return {
        "SINKFLEET_STATE_DIR": str(settings.state),
        "SINKFLEET_KAFKA_BOOTSTRAP": f"{host}:{kafka_port}",
        "SINKFLEET_PG_HOST": host,
        "SINKFLEET_PG_PORT": str(pg_port),
        "SINKFLEET_PG_USER": settings.pg_user,
        "SINKFLEET_PG_DATABASE": settings.pg_database,
        "SINKFLEET_REDIS_HOST": host,
        "SINKFLEET_REDIS_PORT": str(redis_port),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def probe_clients(settings: Settings) -> None:
    """Raise unless Kafka, PostgreSQL and Redis all answer as ``settings`` reach them."""
    import asyncpg
    import redis.asyncio as aioredis
    from aiokafka.admin import AIOKafkaAdminClient

    from sinkfleet.kafka.client import kafka_client_kwargs

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.describe_cluster()
    finally:
        await admin.close()
    conn = await asyncpg.connect(**settings.pg_connect_kwargs, timeout=3)
    await conn.close()
    client = aioredis.Redis(**settings.redis_kwargs(), socket_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()


Factory = Callable[[ContainerSpec], Any]


def testcontainers_factory(spec: ContainerSpec) -> Any:  # pragma: no cover - needs Docker
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(spec.image)
    for key, value in spec.env.items():
        container.with_env(key, value)
    if spec.command:
        container.with_command(spec.command)
    if spec.exposed:
        container.with_exposed_ports(*spec.exposed)
    for inside, outside in spec.bound.items():
        container.with_bind_ports(inside, outside)
    return container


def docker_host() -> str:  # pragma: no cover - needs Docker
    """Where published ports are reached (localhost, or a remote engine's host)."""
    from testcontainers.core.docker_client import DockerClient

    return str(DockerClient().host())


@dataclass
class DockerStack:
    """Start the containers, wait until every client answers, stop them all at the end.

    ``factory`` builds a container object (testcontainers' DockerContainer by default)
    with ``start()``, ``stop()`` and ``get_exposed_port()``, and ``probe`` asks the
    servers; a unit test passes fakes of both."""

    settings: Settings
    factory: Factory = testcontainers_factory
    host: str = "localhost"
    say: Callable[[str], None] = print
    probe: Callable[[Settings], Coroutine[Any, Any, None]] = probe_clients
    started: list[Any] = field(default_factory=list)

    def start(self, timeout: float = 180.0) -> dict[str, str]:
        """Start everything (stopping what started if any part fails); return the
        client environment."""
        kafka_port = free_port()
        specs = container_specs(self.settings, self.host, kafka_port)
        containers = {}
        try:
            for spec in specs:
                self.say(f"{spec.name}: starting {spec.image}")
                container = self.factory(spec)
                container.start()
                self.started.append(container)
                containers[spec.name] = container
            env = client_env(self.settings, self.host, kafka_port,
                             int(containers["postgres"].get_exposed_port(5432)),
                             int(containers["redis"].get_exposed_port(6379)))
            self._wait(env, timeout)
            return env
        except BaseException:
            self.stop()
            raise

    def _wait(self, env: dict[str, str], timeout: float) -> None:
        overrides = {k.removeprefix("SINKFLEET_").lower(): v for k, v in env.items()}
        clients = load_settings(home=self.settings.home, **overrides)
        deadline = time.monotonic() + timeout
        while True:
            try:
                asyncio.run(self.probe(clients))
                return
            except Exception as exc:  # not up yet: every failure means probe again
                if time.monotonic() > deadline:
                    raise StackError(f"the containers did not answer in {timeout:.0f}s:"
                                     f" {type(exc).__name__}: {exc}") from None
                time.sleep(1.0)

    def stop(self) -> None:
        """Stop every container this stack started, newest first; never raises for one."""
        while self.started:
            container = self.started.pop()
            try:
                container.stop()
            except Exception as exc:  # keep stopping the others
                self.say(f"stopping a container failed: {exc}")
