"""Why `publish()` waits, when the broker asked for fresh metadata is the one that is down:
the client's last metadata still names the partitions short of in-sync replicas (a pure
unit: the real cluster case is tests/chaos/test_cluster_faults.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import PartitionMetadata

from sinkfleet.producer import Publisher


class _Client:
    def __init__(self, partitions: dict[str, dict[int, PartitionMetadata]]) -> None:
        self.cluster = SimpleNamespace(_partitions=partitions)

    async def fetch_all_metadata(self) -> Any:
        raise KafkaConnectionError("Unable to bootstrap")


def _publisher(partitions: dict[str, dict[int, PartitionMetadata]]) -> Publisher:
    pub = object.__new__(Publisher)  # only what _why_unacknowledged reads
    pub.catalogue = SimpleNamespace(topics={"t": SimpleNamespace(name="t")})  # type: ignore[assignment]
    pub._producer = SimpleNamespace(client=_Client(partitions))  # type: ignore[assignment]
    return pub


async def test_a_dead_bootstrap_broker_still_names_the_short_partitions() -> None:
    pub = _publisher({"t": {0: PartitionMetadata("t", 0, 1, [1, 2, 3], [1, 3], 0),
                            1: PartitionMetadata("t", 1, -1, [2, 3, 1], [], 0),
                            2: PartitionMetadata("t", 2, 3, [3, 1, 2], [3, 1, 2], 0)}})
    why = await pub._why_unacknowledged()
    assert why.startswith("t[0] has 2 of 3 replicas in sync; t[1] has no leader:")
    assert "NotEnoughReplicas" in why


async def test_nothing_short_and_no_answer_says_a_broker_may_be_down() -> None:
    pub = _publisher({"t": {0: PartitionMetadata("t", 0, 1, [1], [1], 0)}})
    assert await pub._why_unacknowledged() == (
        "Kafka did not answer a metadata request within 3 s: a broker down or unreachable?"
        " (`sinkfleet stack status`)")
