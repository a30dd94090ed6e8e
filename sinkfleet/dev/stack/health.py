"""A Kafka cluster's health beyond "each node answers": the KRaft controller quorum
(leader, voters, lag — kafka-metadata-quorum from the stack's own jars) and partitions
whose in-sync replicas are fewer than their replicas (Kafka metadata)."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sinkfleet.config import Settings
from sinkfleet.dev.stack.cluster import KafkaNode
from sinkfleet.errors import StackError


@dataclass(frozen=True)
class Voter:
    node_id: int
    status: str  # Leader, Follower or Observer (a broker that does not vote)
    log_end_offset: int
    lag: int  # records behind the leader's log end


@dataclass(frozen=True)
class Quorum:
    leader: int | None
    voters: list[Voter]
    observers: list[Voter] = field(default_factory=list)

    @property
    def max_lag(self) -> int:
        return max((v.lag for v in self.voters), default=0)


@dataclass(frozen=True)
class UnderReplicated:
    topic: str
    partition: int
    leader: int  # -1: no leader (offline)
    replicas: list[int]
    isr: list[int]


@dataclass
class ClusterHealth:
    quorum: Quorum | None
    quorum_error: str | None
    under_replicated: list[UnderReplicated] | None  # None: metadata could not be read
    metadata_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_replication(text: str) -> Quorum:
    """Parse ``kafka-metadata-quorum describe --replication`` (pure).

    The table's header names the columns (NodeId … Lag … Status); rows follow."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    header_at = next((i for i, ln in enumerate(lines) if ln and ln[0] == "NodeId"), None)
    if header_at is None:
        raise StackError("kafka-metadata-quorum printed no replication table:"
                         f" {text.strip()[:300]!r}")
    header = lines[header_at]
    col = {name: i for i, name in enumerate(header)}
    voters: list[Voter] = []
    observers: list[Voter] = []
    leader = None
    for row in lines[header_at + 1:]:
        if len(row) != len(header):
            continue
        member = Voter(int(row[col["NodeId"]]), row[col["Status"]],
                       int(row[col["LogEndOffset"]]), int(row[col["Lag"]]))
        if member.status == "Leader":
            leader = member.node_id
        (observers if member.status == "Observer" else voters).append(member)
    return Quorum(leader, voters, observers)


def under_replicated(topics: list[dict[str, Any]]) -> list[UnderReplicated]:
    """Partitions whose in-sync replicas are fewer than their replicas (pure; ``topics``
    as aiokafka's ``describe_topics`` returns them)."""
    result = []
    for t in topics:
        for p in t["partitions"]:
            if len(p["isr"]) < len(p["replicas"]):
                result.append(UnderReplicated(t["topic"], p["partition"], p["leader"],
                                              list(p["replicas"]), list(p["isr"])))
    return sorted(result, key=lambda u: (u.topic, u.partition))


def quorum_argv(libs: Path, controllers: list[KafkaNode]) -> list[str]:
    log4j = resources.files("sinkfleet.dev.stack").joinpath("tools-log4j2.properties")
    bootstrap = ",".join(f"{n.host}:{n.controller_port}" for n in controllers)
    # A short-lived client JVM: small heap, no optimising compiler (starts faster).
    return ["java", "-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*",
            "org.apache.kafka.tools.MetadataQuorumCommand",
            "--bootstrap-controller", bootstrap, "describe", "--replication"]


async def describe_quorum(libs: Path, controllers: list[KafkaNode],
                          timeout: float = 30.0) -> Quorum:
    """The controller quorum as the active controller reports it (DescribeQuorum)."""
    proc = await asyncio.create_subprocess_exec(
        *quorum_argv(libs, controllers), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise StackError(f"kafka-metadata-quorum did not answer in {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = (err or out).decode(errors="replace").strip().splitlines()[-3:]
        raise StackError(f"kafka-metadata-quorum failed (exit {proc.returncode}): "
                         + " | ".join(tail))
    return parse_replication(out.decode(errors="replace"))


async def describe_partitions(settings: Settings) -> list[UnderReplicated]:
    """Under-replicated partitions of every topic (internal ones included)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from sinkfleet.kafka.client import kafka_client_kwargs

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), request_timeout_ms=5000)
    try:
        await admin.start()
        return under_replicated(await admin.describe_topics())
    finally:
        await admin.close()


async def cluster_health(settings: Settings, libs: Path | None,
                         controllers: list[KafkaNode]) -> ClusterHealth:
    """Quorum and under-replicated partitions; a part that cannot be read says why."""
    quorum, quorum_error = None, None
    if libs is None:
        quorum_error = "the Kafka jars are not fetched yet (run `sinkfleet stack up`)"
    else:
        try:
            quorum = await describe_quorum(libs, controllers)
        except StackError as exc:
            quorum_error = str(exc)
    try:
        urps: list[UnderReplicated] | None = await asyncio.wait_for(
            describe_partitions(settings), 20)
        metadata_error = None
    except Exception as exc:  # report any failure to read metadata, never crash status
        urps, metadata_error = None, f"{type(exc).__name__}: {exc}"
    return ClusterHealth(quorum, quorum_error, urps, metadata_error)
