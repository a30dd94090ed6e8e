"""The local Kafka's nodes: one combined broker/controller, or a cluster of them.

Pure layout and the record of it. A cluster's layout is decided once, by
``stack up --brokers N``, and kept in ``STATE_DIR/kafka/cluster.json`` (read back by
``Settings``, so every later command — status, down, env, clients — sees the same
nodes on the same ports). A single node keeps no record: its ports come from the
settings each time, as they always did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sinkfleet.config import LOCAL_CLUSTER_FILE, Settings, read_local_cluster
from sinkfleet.errors import StackError

MAX_BROKERS = 9


@dataclass(frozen=True)
class KafkaNode:
    """One Kafka process: broker and controller in one JVM (KRaft combined mode)."""

    id: int
    host: str
    port: int  # the broker's PLAINTEXT listener
    controller_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def voter(self) -> str:
        return f"{self.id}@{self.host}:{self.controller_port}"


@dataclass(frozen=True)
class ClusterRecord:
    cluster_id: str
    nodes: tuple[KafkaNode, ...]


def _host_ports(bootstrap: str) -> list[tuple[str, int]]:
    result = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        try:
            result.append((host or "127.0.0.1", int(port)))
        except ValueError:
            raise StackError(f"SINKFLEET_KAFKA_BOOTSTRAP entry {entry.strip()!r} is not"
                             " host:port") from None
    return result


def plan_nodes(settings: Settings, brokers: int) -> list[KafkaNode]:
    """The nodes of a new ``brokers``-node cluster on loopback (pure).

    Broker ports: those SINKFLEET_KAFKA_BOOTSTRAP lists, if it lists ``brokers`` of them;
    if it lists one, that port and every second port after it (19092, 19094, 19096).
    Each node's controller listens at the same distance from its broker port as
    SINKFLEET_KAFKA_CONTROLLER_PORT is from the first (default +1: 19093, 19095, 19097).
    """
    if not 1 <= brokers <= MAX_BROKERS:
        raise StackError(f"--brokers {brokers}: choose 1 to {MAX_BROKERS}")
    listed = _host_ports(settings.kafka_bootstrap)
    if len(listed) == brokers:
        pairs = listed
    elif len(listed) == 1:
        host, first = listed[0]
        pairs = [(host, first + 2 * i) for i in range(brokers)]
    else:
        raise StackError(f"SINKFLEET_KAFKA_BOOTSTRAP lists {len(listed)} brokers and"
                         f" --brokers is {brokers}: list one broker (the others take every"
                         f" second port after it) or exactly {brokers}")
    offset = settings.kafka_controller_port - pairs[0][1]
    nodes = [KafkaNode(i + 1, host, port, port + offset) for i, (host, port) in
             enumerate(pairs)]
    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    clash = sorted({p for p in ports if ports.count(p) > 1})
    if clash or not all(0 < p < 65536 for p in ports):
        raise StackError(
            f"the {brokers} nodes' broker ports {[n.port for n in nodes]} and controller"
            f" ports {[n.controller_port for n in nodes]} overlap or leave 1-65535: set"
            " SINKFLEET_KAFKA_CONTROLLER_PORT further from the broker ports (e.g. the first"
            " broker port + 100)")
    return nodes


def single_node(settings: Settings) -> KafkaNode:
    host, port = settings.kafka_host_port
    return KafkaNode(1, host, port, settings.kafka_controller_port)


def read_record(state: Path) -> ClusterRecord | None:
    raw = read_local_cluster(state)
    if raw is None:
        return None
    try:
        nodes = tuple(KafkaNode(int(n["id"]), str(n["host"]), int(n["port"]),
                                int(n["controller_port"])) for n in raw["nodes"])
        return ClusterRecord(str(raw["cluster_id"]), nodes)
    except (KeyError, TypeError, ValueError):
        raise StackError(f"{state / LOCAL_CLUSTER_FILE} is damaged: stop the stack, remove"
                         f" {state / 'kafka'} (its topics are lost) and run `sinkfleet stack"
                         " up --brokers N` again") from None


def write_record(state: Path, record: ClusterRecord) -> None:
    path = state / LOCAL_CLUSTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"cluster_id": record.cluster_id,
                               "nodes": [asdict(n) for n in record.nodes]}, indent=2) + "\n")
    tmp.replace(path)


def kafka_nodes(settings: Settings) -> tuple[list[KafkaNode], bool]:
    """This stack's Kafka nodes, and whether they form a recorded cluster."""
    record = read_record(settings.state)
    if record is None:
        return [single_node(settings)], False
    return list(record.nodes), True


def check_size(settings: Settings, brokers: int | None) -> None:
    """Refuse a ``--brokers`` that does not match what this state directory holds."""
    if brokers is None:
        return
    record = read_record(settings.state)
    have = len(record.nodes) if record else None
    if have is None and (settings.state / "kafka" / "data" / "meta.properties").is_file():
        have = 1
    if have is not None and have != brokers:
        raise StackError(
            f"this stack's Kafka ({settings.state / 'kafka'}) has {have} node(s), not"
            f" {brokers}: a KRaft quorum is not resized here. Run `sinkfleet stack down`"
            f" and remove {settings.state / 'kafka'} (its topics and records are lost), or"
            " use another SINKFLEET_STATE_DIR")
