"""SINKFLEET_TEST_BACKEND=testcontainers, without a Docker engine: the container
definitions (images, the Kafka image's environment, the local stack's settings and its
generated passwords), the client environment they produce, and the lifecycle (every
container started is stopped, also when a later one fails)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.stack.containers import (
    CLUSTER_ID,
    ContainerSpec,
    DockerStack,
    client_env,
    container_specs,
    kafka_env_name,
)
from sinkfleet.dev.stack.kafka_node import SINGLE_NODE_DEFAULTS
from sinkfleet.dev.stack.services import PG_TUNING
from sinkfleet.errors import StackError
from sinkfleet.secrets import read_secret
from tests.support.catalogue import ROOT


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=ROOT, state_dir=tmp_path / "state", redis_maxmemory="128mb")


def image_properties(env: dict[str, str]) -> dict[str, str]:
    """server.properties as the apache/kafka image derives them from KAFKA_* variables
    (its launch script: ___ → -, __ → _, _ → ., lower case)."""
    props = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name == "KAFKA_HEAP_OPTS":
            continue
        key = name.removeprefix("KAFKA_").replace("___", "-").replace("__", "@")
        props[key.replace("_", ".").replace("@", "_").lower()] = value
    return props


def test_property_names_become_the_images_variables() -> None:
    assert kafka_env_name("share.coordinator.state.topic.replication.factor") == \
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"
    assert kafka_env_name("a_b-c.d") == "KAFKA_A__B___C_D"
    assert image_properties({kafka_env_name("a_b-c.d"): "1"}) == {"a_b-c.d": "1"}


def test_kafka_is_the_local_stacks_kafka_in_kraft(settings: Settings) -> None:
    kafka, _, _ = container_specs(settings, "docker.example", 40123)
    pom = (ROOT / "sinkfleet" / "dev" / "stack" / "pom.xml").read_text()
    version = re.search(r"<kafka\.version>([^<]+)<", pom)
    assert version is not None and kafka.image == f"apache/kafka:{version.group(1)}"
    props = image_properties(kafka.env)
    for line in SINGLE_NODE_DEFAULTS:  # the same broker settings as `stack up`
        key, _, value = line.partition("=")
        assert props.pop(key) == value, key
    assert props == {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": "1@localhost:9093",
        "listeners": "BROKER://:9092,CONTROLLER://:9093,EXTERNAL://:40123",
        "advertised.listeners": "BROKER://localhost:9092,EXTERNAL://docker.example:40123",
        "listener.security.protocol.map": "BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                                          "EXTERNAL:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "BROKER",
        "log.dirs": "/var/lib/kafka/data",
    }
    assert kafka.env["CLUSTER_ID"] == CLUSTER_ID and re.fullmatch(r"[A-Za-z0-9_-]{22}",
                                                                  CLUSTER_ID)
    # the advertised port is bound to the same host port: clients reach what it advertises
    assert kafka.bound == {40123: 40123} and kafka.exposed == ()


def test_postgres_and_redis_use_the_generated_passwords_and_settings(
        settings: Settings) -> None:
    _, pg, redis = container_specs(settings, "localhost", 40123)
    pg_password = read_secret(settings.state, "pg_password")
    redis_password = read_secret(settings.state, "redis_password")
    assert pg_password and redis_password and pg_password != redis_password
    assert pg.env == {"POSTGRES_USER": "sinkfleet", "POSTGRES_DB": "sinkfleet",
                      "POSTGRES_PASSWORD": pg_password,
                      "POSTGRES_INITDB_ARGS": "--auth=scram-sha-256 --encoding=UTF8"
                                              " --locale=C"}
    assert pg.command == ["postgres", *[a for k, v in PG_TUNING for a in ("-c", f"{k}={v}")]]
    assert pg.exposed == (5432,)
    assert redis.command == ["redis-server", "--requirepass", redis_password, "--save", "",
                             "--appendonly", "no", "--maxmemory", "128mb",
                             "--maxmemory-policy", "allkeys-lru"]
    assert redis.exposed == (6379,)
    # a second definition reuses the same generated passwords
    assert container_specs(settings, "localhost", 1)[1].env["POSTGRES_PASSWORD"] == pg_password


def test_images_are_the_ones_docker_compose_runs(settings: Settings) -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    specs = {s.name: s.image for s in container_specs(settings, "h", 1)}
    assert specs == {name: services[name]["image"] for name in ("kafka", "postgres", "redis")}


def test_client_env_points_at_the_containers_and_holds_no_password(
        settings: Settings) -> None:
    container_specs(settings, "localhost", 40123)  # generates the passwords
    env = client_env(settings, "docker.example", 40123, 49001, 49002)
    assert env == {
        "SINKFLEET_STATE_DIR": str(settings.state),
        "SINKFLEET_KAFKA_BOOTSTRAP": "docker.example:40123",
        "SINKFLEET_PG_HOST": "docker.example", "SINKFLEET_PG_PORT": "49001",
        "SINKFLEET_PG_USER": "sinkfleet", "SINKFLEET_PG_DATABASE": "sinkfleet",
        "SINKFLEET_REDIS_HOST": "docker.example", "SINKFLEET_REDIS_PORT": "49002",
    }
    clients = load_settings(home=ROOT, **{k.removeprefix("SINKFLEET_").lower(): v
                                          for k, v in env.items()})
    kwargs = clients.pg_connect_kwargs  # the password as every client finds it
    assert kwargs["password"] == read_secret(settings.state, "pg_password")
    assert (kwargs["host"], kwargs["port"]) == ("docker.example", 49001)
    assert clients.redis_kwargs()["password"] == read_secret(settings.state, "redis_password")


class FakeContainer:
    def __init__(self, spec: ContainerSpec, log: list[str], fail: set[str]) -> None:
        self.spec, self.log, self.fail = spec, log, fail

    def start(self) -> FakeContainer:
        if self.spec.name in self.fail:
            raise RuntimeError(f"{self.spec.name} would not start")
        self.log.append(f"start {self.spec.name}")
        return self

    def stop(self) -> None:
        self.log.append(f"stop {self.spec.name}")

    def get_exposed_port(self, port: int) -> int:
        return 50000 + port


def _stack(settings: Settings, log: list[str], fail: frozenset[str] = frozenset(),
           probe_fails: bool = False) -> DockerStack:
    async def probe(clients: Settings) -> None:
        log.append(f"probe {clients.kafka_bootstrap} pg:{clients.pg_port}"
                   f" redis:{clients.redis_port}")
        if probe_fails:
            raise ConnectionRefusedError("nothing answers")

    return DockerStack(settings, factory=lambda spec: FakeContainer(spec, log, set(fail)),
                       host="localhost", say=lambda m: None, probe=probe)


def test_every_container_is_stopped_at_the_end(settings: Settings) -> None:
    log: list[str] = []
    docker = _stack(settings, log)
    env = docker.start()
    port = env["SINKFLEET_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1]
    assert log == ["start kafka", "start postgres", "start redis",
                   f"probe localhost:{port} pg:55432 redis:56379"]
    docker.stop()
    assert log[4:] == ["stop redis", "stop postgres", "stop kafka"]
    docker.stop()  # twice is harmless
    assert len(log) == 7


def test_a_container_that_fails_to_start_stops_the_others(settings: Settings) -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="redis would not start"):
        _stack(settings, log, fail=frozenset({"redis"})).start()
    assert log == ["start kafka", "start postgres", "stop postgres", "stop kafka"]


def test_servers_that_never_answer_fail_and_stop_everything(settings: Settings) -> None:
    log: list[str] = []
    with pytest.raises(StackError, match="did not answer in 0s: ConnectionRefusedError"):
        _stack(settings, log, probe_fails=True).start(timeout=0)
    assert log[-3:] == ["stop redis", "stop postgres", "stop kafka"]
