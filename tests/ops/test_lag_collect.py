"""The collector's bookkeeping without a broker: which record's timestamp answers which
offset, and coordinators that move."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from sinkfleet.config import load_settings
from sinkfleet.ops.lag.collect import LagCollector

TP = TopicPartition("t", 0)


@pytest.fixture
async def collector() -> AsyncIterator[LagCollector]:
    made = LagCollector(load_settings())  # never started: no broker is asked
    yield made
    await made.close()


@dataclass
class Record:
    offset: int
    timestamp: int  # ms


async def test_each_offset_takes_the_first_record_at_or_after_it(
        collector: LagCollector) -> None:
    # Offsets 12 and 13 were compacted away (or hold a transaction marker).
    records = [Record(o, 1_000_000 + o * 1000) for o in (10, 11, 14, 15)]
    pending = sorted([10, 12, 13, 15, 40], reverse=True)
    collector._resolve(TP, pending, records)  # type: ignore[arg-type]
    assert pending == [40]  # past what was read: the next fetch (or a seek) answers it
    assert collector._ts == {(TP, 10): 1010.0, (TP, 12): 1014.0, (TP, 13): 1014.0,
                             (TP, 15): 1015.0}


class Admin:
    """Group coordination as a broker answers it; the group's coordinator moves once."""

    def __init__(self, client: Any) -> None:
        self._client = client  # the real one, never started: its cluster has no brokers
        self.coordinator = {"a": 1, "b": 1}
        self.finds = 0
        self.refuse = 0  # an error code for every OffsetFetch

    async def list_consumer_groups(self, brokers: list[int] | None) -> list[tuple[str, str]]:
        return [("a", "consumer"), ("b", "consumer")]

    async def find_coordinator(self, group: str) -> int:
        self.finds += 1
        return self.coordinator[group]

    async def _send_request(self, request: Any, node: int) -> Any:
        groups = request._groups if hasattr(request, "_groups") else [request._group]
        wrong = [g for g in groups if self.coordinator[g] != node]
        if hasattr(request, "_groups"):  # DescribeGroups
            return Described([{"group": g, "state": "Empty", "members": [],
                               "error_code": 16 if g in wrong else 0} for g in groups])
        error = 16 if wrong else self.refuse
        return Fetched(error, [] if error else [("t", [(0, 7, "", 0)])])


@dataclass
class Described:
    groups: list[dict[str, Any]]

    def to_object(self) -> dict[str, Any]:
        return {"groups": self.groups}


@dataclass
class Fetched:
    error_code: int
    topics: list[tuple[str, list[tuple[int, int, str, int]]]]


async def test_coordinators_are_cached_and_asked_again_when_they_move(
        collector: LagCollector) -> None:
    admin = Admin(collector._admin._client)
    real, collector._admin = collector._admin, admin  # type: ignore[assignment]
    try:
        assert await collector._groups() == {"a": ("Empty", 0), "b": ("Empty", 0)}
        assert await collector._committed("a") == {TP: 7}
        assert admin.finds == 2  # once per group, not once per request
        await collector._groups()
        assert admin.finds == 2
        admin.coordinator["a"] = 2  # a's coordinator moves: both requests find it again
        assert await collector._groups() == {"a": ("Empty", 0), "b": ("Empty", 0)}
        assert admin.finds == 3
        admin.coordinator["b"] = 2
        assert await collector._committed("b") == {TP: 7}
        assert admin.finds == 4
        admin.refuse = 30  # not authorised: the group shows no offsets, the poll goes on
        assert await collector._committed("a") == {}
    finally:
        collector._admin = real


def test_offset_fetch_responses_read_as_aiokafka_reads_them() -> None:
    from aiokafka.protocol.commit import OffsetFetchResponse_v2, OffsetFetchResponse_v3

    from sinkfleet.ops.lag.protocol import OffsetFetchAll

    topics = [("orders", [(0, 41, "", 0), (1, -1, None, 0), (7, 2**40, "meta ü", 0)]),
              ("t.dlq", [(3, 5, "", 3)]), ("empty", [])]
    for version, response in ((2, OffsetFetchResponse_v2(topics, 0)),
                              (3, OffsetFetchResponse_v3(250, topics, 16))):
        struct = OffsetFetchAll("g").build(OffsetFetchAll._CLASSES[version - 2])
        assert version == struct.API_VERSION and struct.consumer_group == "g"
        raw = response.encode()
        fast = struct.RESPONSE_TYPE.decode(raw)
        assert fast == type(response).decode(raw)
        assert fast.topics == [(t, list(map(tuple, ps))) for t, ps in topics]
