"""Merge sinks (CRDTs) through the real writer on the real PostgreSQL: any permutation,
duplication and batching of the same updates gives the same row, and that row is the
join the Python model computes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinkfleet.config import Settings
from sinkfleet.errors import ValidationError
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.merge_writer import MergeWriter
from sinkfleet.worker.rows import RowBuilder
from tests.sink.merge_support import Replica, expected_values, make_crdt_family
from tests.support.family import Family, drop_family

pytestmark = pytest.mark.integration

ELEMENTS = ("plan", "code", "test", "ship")
OPS = ("hit", "inc", "dec", "tag", "add", "add", "remove")
# the row's CRDT columns (first_seen_at is the first write's time, not a CRDT)
ROW = ("key", "hits", "hits_state", "level", "level_state", "tags", "caps", "caps_state",
       "seen")


@pytest.fixture(scope="module")
def fam(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Family]:
    family = asyncio.run(make_crdt_family(tmp_path_factory.mktemp("crdt"), stack))
    yield family
    asyncio.run(drop_family(family))


def updates(ops: list[tuple[int, str, str]], key: str) -> list[dict[str, Any]]:
    """Each operation of a replica publishes that replica's whole state so far."""
    replicas = [Replica(f"r{i}") for i in range(3)]
    return [replicas[r].apply(op, element, key) for r, op, element in ops]


class _Msg:
    """Where a record came from (the writer's sources)."""

    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "t", 0, offset, None


async def write_batches(fam: Family, batches: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Write each batch in its own transaction, as the worker does; the stored row."""
    build = RowBuilder(fam.sink)
    writer = MergeWriter(fam.sink, build.names)
    conn = await connect(fam.settings)
    try:
        await writer.prepare(conn)
        for batch in batches:
            async with conn.transaction():
                await writer.write(conn, [build(r) for r in batch],
                                   [_Msg(i) for i in range(len(batch))])
        key = batches[0][0]["key"]
        row = await conn.fetchrow(f'SELECT * FROM "{fam.table}" WHERE key = $1', key)
        assert row is not None
        return {k: row[k] for k in ROW}
    finally:
        await conn.close()


OPERATIONS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(OPS),
                                st.sampled_from(ELEMENTS)), min_size=1, max_size=14)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPERATIONS, data=st.data())
def test_any_order_duplication_and_batching_gives_the_same_row(
        fam: Family, ops: list[tuple[int, str, str]], data: st.DataObject) -> None:
    key = uuid.uuid4().hex
    published = updates(ops, key)
    reference = asyncio.run(write_batches(fam, [published]))
    # the same updates again under another key: shuffled, some twice, in random batches
    other = uuid.uuid4().hex
    again = [{**r, "key": other} for r in published]
    extra = data.draw(st.lists(st.sampled_from(again), max_size=len(again)), "duplicates")
    delivered = data.draw(st.permutations(again + extra), "order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(delivered) - 1)),
                                    max_size=4), "batch cuts"))
    batches = [delivered[a:b] for a, b in zip([0, *cuts], [*cuts, len(delivered)],
                                              strict=True) if delivered[a:b]]
    row = asyncio.run(write_batches(fam, batches))
    assert {**row, "key": key} == reference
    expected = expected_values(published)
    assert {k: reference[k] for k in expected} == expected


def test_a_replayed_batch_changes_nothing_and_counts_no_row(fam: Family) -> None:
    key = uuid.uuid4().hex
    published = updates([(0, "hit", "plan"), (1, "add", "code"), (0, "remove", "plan")], key)

    async def run() -> list[int]:
        build = RowBuilder(fam.sink)
        writer = MergeWriter(fam.sink, build.names)
        conn = await connect(fam.settings)
        try:
            await writer.prepare(conn)
            counts = []
            for _ in range(2):
                async with conn.transaction():
                    w = await writer.write(conn, [build(r) for r in published],
                                           [_Msg(i) for i in range(len(published))])
                counts.append(w.inserted)
            return counts
        finally:
            await conn.close()

    assert asyncio.run(run()) == [1, 0]  # one id created; the replay changed no id


def test_an_or_set_keeps_an_add_the_remover_had_not_observed(fam: Family) -> None:
    key = uuid.uuid4().hex
    r0, r1 = Replica("r0"), Replica("r1")
    first = r0.apply("add", "code", key)      # r0 adds code (tag r0:1)
    concurrent = r1.apply("add", "code", key)  # r1 adds code too (r1:1), unseen by r0
    removed = r0.apply("remove", "code", key)  # r0 removes what it saw: r0:1 only
    row = asyncio.run(write_batches(fam, [[removed], [concurrent, first]]))
    assert row["caps"] == ["code"]
    assert json.loads(row["caps_state"]) == {"adds": {"code": ["r1:1"]}, "removes": ["r0:1"]}
    # once r1 removes its own tag too, code is gone whatever came first
    gone = r1.apply("remove", "code", key)
    row = asyncio.run(write_batches(fam, [[gone, removed]]))
    assert row["caps"] == []
    assert json.loads(row["caps_state"]) == {"adds": {}, "removes": ["r0:1", "r1:1"]}


@pytest.mark.parametrize(("change", "reason"), [
    ({"hits": -1}, "a g_counter is the replica's count so far, never below 0; got -1"),
    ({"level": {"increments": 1, "decrements": -2}},
     "decrements is the replica's total so far, never below 0; got -2"),
])
def test_negative_counts_are_refused_per_record(fam: Family, change: dict[str, Any],
                                                reason: str) -> None:
    record = {**updates([(0, "hit", "plan")], "k")[0], **change}
    with pytest.raises(ValidationError, match=reason):
        RowBuilder(fam.sink)(record)
