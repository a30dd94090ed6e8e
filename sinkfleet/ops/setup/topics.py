"""`sinkfleet topics apply`: make Kafka's topics match topics/ (plus dead-letter topics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs
from sinkfleet.worker.deadletter import DLQ_RECORD_LIMIT


@dataclass(frozen=True)
class DesiredTopic:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CurrentTopic:
    partitions: int
    config: dict[str, str]
    replication_factor: int = 1


def desired_topics(catalogue: Catalogue, brokers: int = 1) -> list[DesiredTopic]:
    """Every catalogue topic and its dead-letter topic (same retention and replication,
    fewer partitions), replicated as fits a cluster of ``brokers`` (TopicSpec.replication).

    A dead-letter topic's size limit and compression are its own, not the source's: the
    worker's dead letters are built to fit ``DLQ_RECORD_LIMIT``, and with
    ``compression.type=producer`` the broker stores their batches as sent, never
    recompressed into something bigger."""
    result = []
    for spec in catalogue.topics.values():
        factor, min_isr = spec.replication(brokers)
        config = {**spec.config, "min.insync.replicas": str(min_isr)}
        result.append(DesiredTopic(spec.name, spec.partitions, factor, config))
        dlq_config = {**config, "cleanup.policy": "delete",
                      "max.message.bytes": str(DLQ_RECORD_LIMIT),
                      "compression.type": "producer"}
        result.append(DesiredTopic(spec.dlq, min(spec.partitions, 3), factor, dlq_config))
    return result


def plan_changes(desired: DesiredTopic, current: CurrentTopic | None) -> list[str]:
    """Human-readable changes needed (pure). Raises if the change is impossible."""
    if current is None:
        return [f"create {desired.name} ({desired.partitions} partitions)"]
    changes = []
    if desired.partitions > current.partitions:
        changes.append(f"{desired.name}: partitions {current.partitions} → {desired.partitions}")
    elif desired.partitions < current.partitions:
        raise SinkfleetError(
            f"{desired.name} has {current.partitions} partitions and topics/ asks for"
            f" {desired.partitions}: Kafka cannot remove partitions; raise the spec to"
            f" {current.partitions} or recreate the topic")
    for key, value in sorted(desired.config.items()):
        if current.config.get(key) != value:
            changes.append(f"{desired.name}: {key} {current.config.get(key)} → {value}")
    return changes


async def _current(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, CurrentTopic]:
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    described = await admin.describe_topics(present)
    parts = {t["topic"]: len(t["partitions"]) for t in described}
    replicas = {t["topic"]: max((len(p["replicas"]) for p in t["partitions"]), default=1)
                for t in described}
    configs: dict[str, dict[str, str]] = {n: {} for n in present}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in present])
    for response in responses:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            configs[name] = {e[0]: e[1] for e in entries}
    return {n: CurrentTopic(parts[n], configs[n], replicas[n]) for n in present}


async def apply_topics(settings: Settings, catalogue: Catalogue, *, dry_run: bool = False,
                       say: Callable[[str], None] = print) -> list[str]:
    """Create or update topics; return the changes made (or planned, with ``dry_run``)."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), request_timeout_ms=15_000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise SinkfleetError(await explain_kafka_error(settings, exc)) from None
    all_changes: list[str] = []
    try:
        brokers = settings.kafka_brokers or len((await admin.describe_cluster())["brokers"])
        desired = desired_topics(catalogue, brokers)
        current = await _current(admin, [d.name for d in desired])
        for want in desired:
            have = current.get(want.name)
            changes = plan_changes(want, have)
            all_changes += changes
            for change in changes:
                say(("would " if dry_run else "") + change)
            if have is not None and have.replication_factor != want.replication_factor:
                say(f"note: {want.name} has {have.replication_factor} replica(s) per partition"
                    f" and topics/ asks {want.replication_factor}: Kafka changes that only by"
                    " reassigning partitions (kafka-reassign-partitions); left as it is")
            if dry_run or not changes:
                continue
            if have is None:
                resp = await admin.create_topics([NewTopic(
                    want.name, want.partitions, want.replication_factor,
                    topic_configs=want.config)])
                for err in resp.topic_errors:
                    # 36 = TOPIC_ALREADY_EXISTS: created a moment ago, not yet in metadata.
                    if err[1] and err[1] != 36:
                        raise SinkfleetError(f"creating {want.name} failed: "
                                             f"{for_code(err[1]).__name__}: {err[2]}")
                continue
            if want.partitions > have.partitions:
                await admin.create_partitions({want.name: NewPartitions(want.partitions)})
            if any(have.config.get(k) != v for k, v in want.config.items()):
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, want.name,
                                                          configs=want.config)])
        if not all_changes:
            say(f"topics are up to date ({len(desired)} topics)")
    finally:
        await admin.close()
    return all_changes
