"""A private three-broker Kafka for the cluster faults (tests/chaos/test_cluster_faults.py
and ``benchmarks/chaos_report.py``): its nodes, a chaos catalogue whose clients and worker
processes use it (PostgreSQL and Redis stay the stack's), and the node operations the
faults are made of — kill -9, restart, stop, the leader of a partition, the active
controller.

Only Kafka is private: the cluster is what is under test. It runs in its own state
directory on fixed loopback ports below Linux's ephemeral range (32768-60999, where an
outgoing connection may take a port just as a broker binds it), never the shared stack's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.stack import manager
from sinkfleet.dev.stack.health import describe_quorum
from sinkfleet.dev.stack.kafka_node import Kafka, kafka_libs_if_fetched, kafka_services
from sinkfleet.dev.stack.process import port_open
from sinkfleet.ops.setup.topics import apply_topics, desired_topics
from sinkfleet.sink.postgres.migrate import migrate
from tests.chaos.support import ChaosCatalogue, make_chaos_catalogue
from tests.support.catalogue import ROOT
from tests.support.waiting import async_wait_for

# The tests' cluster; the chaos report takes another set, so both can run at once
# (tests/stack/test_cluster.py has 27092-27094 / 27192-27194).
TEST_PORTS = ([28092, 28093, 28094], [28192, 28193, 28194])
REPORT_PORTS = ([28292, 28293, 28294], [28392, 28393, 28394])

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def cluster_settings(state: Path, brokers: list[int], controllers: list[int]) -> Settings:
    """The settings of a new three-node cluster in ``state`` (PostgreSQL and Redis
    unused: `manager` is only asked about Kafka)."""
    return load_settings(home=ROOT, state_dir=state,
                         kafka_bootstrap=",".join(f"127.0.0.1:{p}" for p in brokers),
                         kafka_controller_port=controllers[0])


def _share_jars(stack: Settings, cluster: Settings) -> None:
    """Link the stack's Kafka jars into the cluster's state directory (same pom, same
    directory name) instead of resolving them from Maven again."""
    libs = kafka_libs_if_fetched(stack)
    if libs is None:
        return
    dest = cluster.state / "kafka" / libs.name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(libs, target_is_directory=True)


async def start_cluster(stack: Settings, state: Path,
                        ports: tuple[list[int], list[int]] = TEST_PORTS,
                        say: Say = _quiet) -> Settings:
    """Three combined broker/controller nodes in ``state``, all answering; their settings
    as every later command reads them (from the recorded layout)."""
    brokers, controllers = ports
    taken = [p for p in brokers + controllers if port_open("127.0.0.1", p)]
    if taken:
        raise RuntimeError(f"ports {taken} are in use: the private cluster needs"
                           f" {brokers} and {controllers} free")
    first = cluster_settings(state, brokers, controllers)
    _share_jars(stack, first)
    await manager.up(first, ["kafka"], say, brokers=3)
    # the recorded layout, whatever SINKFLEET_KAFKA_* this process has (the chaos report
    # points them at its private single broker)
    return load_settings(home=ROOT, state_dir=state, kafka_bootstrap=first.kafka_bootstrap,
                         kafka_brokers=3)


def stop_cluster(cluster: Settings, say: Say = _quiet) -> None:
    manager.down(cluster, ["kafka"], say)


# --- a chaos catalogue on the cluster ----------------------------------------------------
@dataclass
class ClusterCatalogue(ChaosCatalogue):
    """A chaos catalogue whose Kafka is the private cluster: its settings (the publisher,
    the checks) and its worker processes bootstrap from the cluster's three brokers."""

    cluster: Settings | None = None

    def kafka_env(self) -> dict[str, str]:
        return {"SINKFLEET_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
                "SINKFLEET_KAFKA_BROKERS": "3"}

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.kafka_env()}

    def start_worker(self, log: Path, extra_env: dict[str, str] | None = None) -> Any:
        return super().start_worker(log, {**self.kafka_env(), **(extra_env or {})})


async def open_cluster_catalogue(tmp: Path, stack: Settings, cluster: Settings,
                                 **kwargs: Any) -> ClusterCatalogue:
    """A chaos catalogue on the cluster: its topics made there (three replicas, two in
    sync: ``topics/`` defaults for three brokers), its tables migrated in the stack's
    PostgreSQL."""
    cc = make_chaos_catalogue(tmp, stack, **kwargs)
    settings = load_settings(home=cc.root, state_dir=stack.state,
                             kafka_bootstrap=cluster.kafka_bootstrap, kafka_brokers=3)
    fields = {f.name: getattr(cc, f.name) for f in dataclasses.fields(cc)}
    out = ClusterCatalogue(**{**fields, "settings": settings, "cluster": cluster})
    await apply_topics(out.settings, out.catalogue, say=_quiet)
    await migrate(out.settings, out.catalogue, _quiet)
    await wait_topics_ready(out.settings, list(out.topics.values()))
    return out


# --- the nodes -----------------------------------------------------------------------------
def node(cluster: Settings, node_id: int) -> Kafka:
    return next(s for s in kafka_services(cluster) if s.kafka_node.id == node_id)


def node_ids(cluster: Settings) -> list[int]:
    return [s.kafka_node.id for s in kafka_services(cluster)]


async def kill9(cluster: Settings, node_id: int) -> None:
    """SIGKILL one node: no controlled shutdown, no leadership handed over."""
    svc = node(cluster, node_id)
    pid = svc.proc.pid()
    assert pid is not None, f"{svc.name} is not running"
    os.kill(pid, signal.SIGKILL)

    async def gone() -> bool:
        return svc.proc.pid() is None

    await async_wait_for(gone, 30, f"{svc.name} to die", interval=0.05)


async def stop_node(cluster: Settings, node_id: int) -> None:
    """SIGTERM one node and wait: a controlled shutdown (leaderships moved first)."""
    await asyncio.to_thread(node(cluster, node_id).proc.stop, signal.SIGTERM, 60.0)


async def start_node(cluster: Settings, node_id: int, say: Say = _quiet) -> None:
    """Start a stopped node again and wait until it is a registered broker."""
    await manager.up(cluster, [node(cluster, node_id).name], say)


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=10_000)
    await admin.start()
    return admin


async def describe(settings: Settings, topics: list[str]) -> dict[tuple[str, int], Any]:
    """(topic, partition) → its metadata (leader, replicas, isr) as a broker reports it."""
    admin = await _admin(settings)
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {(t["topic"], p["partition"]): p for t in described for p in t["partitions"]}


async def partition_leader(settings: Settings, topic: str, partition: int = 0) -> int:
    return int((await describe(settings, [topic]))[(topic, partition)]["leader"])


async def active_controller(cluster: Settings) -> int:
    """The KRaft quorum's leader, as the controllers report it (DescribeQuorum)."""
    libs = kafka_libs_if_fetched(cluster)
    assert libs is not None, "the cluster's Kafka jars are not there"
    quorum = await describe_quorum(libs, [s.kafka_node for s in kafka_services(cluster)])
    assert quorum.leader is not None, f"no active controller: {quorum}"
    return quorum.leader


async def wait_topics_ready(settings: Settings, topics: list[str], timeout: float = 60,
                            replicas: int = 3) -> None:
    """Until every partition of ``topics`` has a leader and ``replicas`` in sync."""
    async def ready() -> bool:
        try:
            parts = await describe(settings, topics)
        except Exception:  # metadata from a broker that is still catching up: ask again
            return False
        return bool(parts) and all(p["error_code"] == 0 and p["leader"] >= 0
                                   and len(p["isr"]) == replicas for p in parts.values())

    await async_wait_for(ready, timeout, f"{topics} led and {replicas} in sync",
                         interval=0.2)


async def set_min_insync(cc: ChaosCatalogue, value: int) -> None:
    """``min.insync.replicas`` of the catalogue's topics (not their dead-letter topics).
    AlterConfigs replaces a topic's whole configuration: the rest is sent as
    ``topics/`` wants it."""
    want = {d.name: d.config for d in desired_topics(cc.catalogue, 3)}
    admin = await _admin(cc.settings)
    try:
        await admin.alter_configs([
            ConfigResource(ConfigResourceType.TOPIC, t,
                           configs={**want[t], "min.insync.replicas": str(value)})
            for t in cc.topics.values()])
    finally:
        await admin.close()
