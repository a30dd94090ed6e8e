"""`sinkfleet stack up --brokers 3`: a real three-node KRaft cluster on its own ports and
state directory (never the shared stack's), replicated topics, acks=all round trips, and
a node killed with SIGKILL that `status` reports and `up` brings back in sync.

Only Kafka runs here: the cluster is what is under test, and PostgreSQL and Redis are
the same as in the single-node stack (tests/stack/test_stack.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from sinkfleet.catalogue import load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.stack import manager
from sinkfleet.dev.stack.health import describe_partitions
from sinkfleet.dev.stack.process import port_open
from sinkfleet.errors import StackError
from sinkfleet.ops.setup.topics import apply_topics
from tests.support.catalogue import ROOT, without_kafka_layout_env
from tests.support.waiting import async_wait_for


@pytest.fixture(scope="module", autouse=True)
def _own_kafka_layout() -> Iterator[None]:
    with without_kafka_layout_env():
        yield

pytestmark = pytest.mark.integration

# Ports nobody else uses (the local stack's: 19092/19093, 15432, 16379), and below Linux's
# ephemeral range (32768-60999), where any outgoing connection may take a port just as
# a broker binds it (that happened here with 39092).
BROKERS = [27092, 27093, 27094]
CONTROLLERS = [27192, 27193, 27194]
TOPIC = "agent.experience-events"


def _say(message: str) -> None:
    print(f"[cluster] {message}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    taken = [p for p in BROKERS + CONTROLLERS if port_open("127.0.0.1", p)]
    assert not taken, f"ports {taken} are in use: the cluster test needs them free"
    state = tmp_path_factory.mktemp("cluster") / "state"
    first = load_settings(home=ROOT, state_dir=state,
                          kafka_bootstrap=",".join(f"127.0.0.1:{p}" for p in BROKERS),
                          kafka_controller_port=CONTROLLERS[0])
    try:
        started = asyncio.run(manager.up(first, ["kafka"], _say, brokers=3))
        assert started == ["kafka-1", "kafka-2", "kafka-3"]
        # from here on, as every later command sees it: the layout comes from the record
        yield load_settings(home=ROOT, state_dir=state)
    finally:
        manager.down(first, ["kafka"], _say)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINKFLEET_")}
    env.update(SINKFLEET_HOME=str(ROOT), SINKFLEET_STATE_DIR=str(settings.state))
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], capture_output=True,
                          text=True, env=env, timeout=120)


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=10_000)
    await admin.start()
    return admin


async def test_three_nodes_answer_and_form_one_quorum(cluster: Settings) -> None:
    assert cluster.kafka_bootstrap == ",".join(f"127.0.0.1:{p}" for p in BROKERS)
    assert cluster.kafka_brokers == 3
    nodes = [s for s in await manager.status(cluster) if s.name.startswith("kafka")]
    assert [(s.name, s.port, s.healthy) for s in nodes] == [
        (f"kafka-{n}", port, True) for n, port in enumerate(BROKERS, 1)]
    assert len({s.pid for s in nodes}) == 3
    health = await manager.kafka_health(cluster)
    assert health.quorum is not None, health.quorum_error
    assert sorted(v.node_id for v in health.quorum.voters) == [1, 2, 3]
    assert health.quorum.leader in (1, 2, 3)
    assert health.under_replicated == []
    # each node its own directory and server.properties
    for n in (1, 2, 3):
        props = (cluster.state / "kafka" / f"node-{n}" / "server.properties").read_text()
        assert f"node.id={n}\n" in props


async def test_topics_get_three_replicas_and_two_in_sync(cluster: Settings) -> None:
    catalogue = load_catalogue(ROOT)
    await apply_topics(cluster, catalogue, say=_say)
    names = [n for spec in catalogue.topics.values() for n in (spec.name, spec.dlq)]

    async def settled() -> tuple[list, dict[str, str]] | None:  # type: ignore[type-arg]
        """Topics and their min.insync.replicas, once every broker knows them all."""
        admin = await _admin(cluster)
        try:
            described = await admin.describe_topics(names)
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        finally:
            await admin.close()
        configs = {res[3]: {e[0]: e[1] for e in res[4]} for r in responses
                   for res in r.resources}
        if any(t["error_code"] or any(p["error_code"] for p in t["partitions"])
               for t in described) or any("min.insync.replicas" not in c
                                          for c in configs.values()):
            return None
        return described, {n: c["min.insync.replicas"] for n, c in configs.items()}
    described, min_isr = await async_wait_for(settled, 30, "the new topics on every broker")
    assert sorted(t["topic"] for t in described) == sorted(names)
    for topic in described:
        assert {len(p["replicas"]) for p in topic["partitions"]} == {3}, topic["topic"]
        assert {len(p["isr"]) for p in topic["partitions"]} == {3}, topic["topic"]
    assert min_isr == dict.fromkeys(names, "2")


async def _publish(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, request_timeout_ms=30_000)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(TOPIC, value, key=str(i % 12).encode())
    finally:
        await producer.stop()


async def _read_all(settings: Settings) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(TOPIC, p) for p in range(6)]  # topics/experience_events.yaml
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        got: list[bytes] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            got += [m.value for msgs in batch.values() for m in msgs if m.value is not None]
        return got
    finally:
        await consumer.stop()


FIRST = [f"before-{i}".encode() for i in range(300)]
SECOND = [f"one-down-{i}".encode() for i in range(100)]


async def test_acks_all_records_come_back(cluster: Settings) -> None:
    await _publish(cluster, FIRST)
    assert sorted(await _read_all(cluster)) == sorted(FIRST)


async def test_a_killed_node_is_reported_and_up_brings_it_back_in_sync(
        cluster: Settings) -> None:
    health = await manager.kafka_health(cluster)
    assert health.quorum is not None and health.quorum.leader is not None
    victim = health.quorum.leader  # the active controller: the harder loss
    admin = await _admin(cluster)
    try:  # every partition has a replica on every node (RF 3 on 3 nodes)
        partitions = {(t["topic"], p["partition"]) for t in await admin.describe_topics()
                      for p in t["partitions"]}
    finally:
        await admin.close()
    name = f"kafka-{victim}"
    pid = next(s.pid for s in await manager.status(cluster) if s.name == name)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def reported_down() -> bool:
        node = next(s for s in await manager.status(cluster) if s.name == name)
        return not node.healthy and node.pid is None and node.detail == "stopped"
    await async_wait_for(reported_down, 30, f"{name} reported down")

    async def every_partition_lost_its_replica() -> bool:
        try:
            urps = await describe_partitions(cluster)
        except KafkaError:  # metadata from a broker that lost its controller: ask again
            return False
        return {(u.topic, u.partition) for u in urps} == partitions
    await async_wait_for(every_partition_lost_its_replica, 60,
                         "every partition under-replicated after the kill")
    urps = (await manager.kafka_health(cluster)).under_replicated or []
    assert all(len(u.replicas) == 3 and len(u.isr) == 2 and victim not in u.isr
               for u in urps)
    health = await manager.kafka_health(cluster)
    assert health.quorum is not None and health.quorum.leader not in (None, victim)

    # `status` (the command) says so and exits 1
    out = _cli(cluster, "stack", "status", "--json")
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert [(s["name"], s["healthy"]) for s in doc["services"] if s["name"].startswith(
        "kafka")] == [(f"kafka-{n}", n != victim) for n in (1, 2, 3)]
    assert len(doc["kafka"]["under_replicated"]) == len(partitions)

    # two of three in sync is enough for acks=all with min.insync.replicas=2
    await _publish(cluster, SECOND)

    assert await manager.up(cluster, ["kafka"], _say) == [name]
    await manager.wait_in_sync(cluster, timeout=120)
    health = await manager.kafka_health(cluster)
    assert health.under_replicated == []
    assert health.quorum is not None and sorted(v.node_id for v in health.quorum.voters) == [
        1, 2, 3]
    assert sorted(await _read_all(cluster)) == sorted(FIRST + SECOND)


async def test_up_again_starts_nothing_and_the_size_is_kept(cluster: Settings) -> None:
    said: list[str] = []
    assert await manager.up(cluster, ["kafka"], said.append) == []
    assert [line.split(" (")[0] for line in said] == [
        f"kafka-{n}: already running" for n in (1, 2, 3)]
    with pytest.raises(StackError, match=r"has 3 node\(s\), not 1"):
        await manager.up(cluster, ["kafka"], said.append, brokers=1)


def test_down_stops_every_node(cluster: Settings) -> None:
    said: list[str] = []
    manager.down(cluster, ["kafka"], said.append)
    assert said == ["kafka-3: stopped", "kafka-2: stopped", "kafka-1: stopped"]
    assert not [p for p in BROKERS + CONTROLLERS if port_open("127.0.0.1", p)]
