"""The local Kafka: one combined broker/controller node per process, from the Maven jars
(a single node, or one node of a cluster made by `stack up --brokers N`)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sinkfleet.config import Settings
from sinkfleet.dev.stack.base import Service, _run, maven_fetch
from sinkfleet.dev.stack.cluster import KafkaNode, read_record, single_node
from sinkfleet.errors import StackError

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


# A node's own settings beside the rendered ones (tests/chaos/network_cluster.py: extra
# listeners advertised through fault proxies): each key there replaces the rendered one.
OVERRIDES_FILE = "overrides.properties"


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines (comments and blank lines skipped), in order (pure)."""
    pairs = (line.split("=", 1) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "!")))
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2)}


def node_properties(node: KafkaNode, voters: list[KafkaNode], data: Path,
                    clustered: bool, overrides: dict[str, str] | None = None) -> str:
    """server.properties of one combined broker/controller node (pure); ``overrides``
    replace rendered keys (in place) or add new ones (at the end)."""
    lines = _rendered(node, voters, data, clustered)
    if not overrides:
        return "\n".join([*lines, ""])
    left = dict(overrides)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in left:
            lines[i] = f"{key}={left.pop(key)}"
    return "\n".join([*lines, *(f"{k}={v}" for k, v in left.items()), ""])


def _rendered(node: KafkaNode, voters: list[KafkaNode], data: Path,
              clustered: bool) -> list[str]:
    return [
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
    ]


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
        extra = self.home / OVERRIDES_FILE
        overrides = parse_properties(extra.read_text()) if extra.is_file() else None
        props.write_text(node_properties(self.kafka_node, self.voters or [self.kafka_node], data,
                                         clustered=self.cluster_id is not None,
                                         overrides=overrides))
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


def kafka_services(settings: Settings) -> list[Kafka]:
    """The single node ``kafka``, or the recorded cluster's ``kafka-1`` … ``kafka-N``."""
    record = read_record(settings.state)
    if record is None:
        return [Kafka("kafka", settings, single_node(settings))]
    nodes = list(record.nodes)
    return [Kafka(f"kafka-{n.id}", settings, n, nodes, record.cluster_id) for n in nodes]
