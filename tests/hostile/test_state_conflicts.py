"""Two different state updates with the same version (real Kafka, PostgreSQL, Redis):
a deterministic winner whatever the delivery order, the loser visible, nothing stuck."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from sinkfleet.config import Settings
from sinkfleet.producer import Publisher
from sinkfleet.sink.state_conflicts import content_hash
from tests.support.family import (
    Family,
    drain,
    drop_family,
    make_family,
    rewind,
    rows,
    running_worker,
)
from tests.support.state_family import SCHEMA, SINK, TOPIC, cache_settles, cached, state
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def two(stack: Settings, tmp_path: Path) -> AsyncIterator[tuple[Family, Family]]:
    fams = (await make_family(tmp_path, stack, SCHEMA, TOPIC, SINK),
            await make_family(tmp_path, stack, SCHEMA, TOPIC, SINK))
    yield fams
    for fam in fams:
        await drop_family(fam)
        await forget_conflicts(fam)


async def forget_conflicts(fam: Family) -> None:
    from sinkfleet.sink.postgres.connect import pg
    async with pg(fam.settings) as conn:
        await conn.execute("DELETE FROM sinkfleet.state_conflicts WHERE sink = $1", fam.table)


async def send(fam: Family, updates: list[tuple[dict[str, Any], int]]) -> None:
    """Publish (record, producer timestamp ms) pairs in this order."""
    async with Publisher(fam.settings, catalogue=fam.catalogue) as pub:
        producer = AIOKafkaProducer(bootstrap_servers=fam.settings.kafka_bootstrap)
        await producer.start()
        try:
            for record, ms in updates:
                topic, key, value = pub.encode(fam.family, record)
                await producer.send_and_wait(topic, value, key=key, timestamp_ms=ms)
        finally:
            await producer.stop()


def conflicts_total(worker: Any, fam: Family) -> float:
    return worker.metrics.registry.get_sample_value(
        "sinkfleet_state_conflicts_total", {"group": fam.group, "sink": fam.table}) or 0.0


async def outcome(fam: Family) -> tuple[list[dict[str, Any]], ...]:
    """Latest, history and conflicts, without what only says when/where it was seen."""
    latest = await rows(fam, f'SELECT * FROM "{fam.table}" ORDER BY workflow_id')
    for r in latest:
        r.pop("ingested_at")
    history = await rows(fam, f'SELECT * FROM "{fam.table}_history"'
                         " ORDER BY workflow_id, version, op")
    for h in history:
        for k in ("kafka_partition", "kafka_offset", "recorded_at", "ingested_at"):
            h.pop(k)
    conflicts = await rows(fam, "SELECT key, version, loser_hash, loser_produced_at, loser,"
                           " winner_hash, winner_produced_at FROM sinkfleet.state_conflicts"
                           " WHERE sink = $1 ORDER BY key, version, loser_hash", fam.table)
    return latest, history, conflicts


T = 1_790_000_000_000  # producer timestamps, ms


async def test_same_version_two_payloads_any_order_same_winner_visible_loser(
        two: tuple[Family, Family]) -> None:
    a = state("t1", "wf", 2, "from-a")
    b = state("t1", "wf", 2, "from-b")
    c = state("t1", "tie", 4, "tie-c")
    d = state("t1", "tie", 4, "tie-d")
    updates = [(state("t1", "wf", 1, "one"), T), (a, T + 10), (b, T + 20),  # b: later
               (c, T + 30), (d, T + 30)]  # same timestamp: the greater hash wins
    orders = [updates, [updates[0], updates[2], updates[1], updates[4], updates[3]]]
    results = []
    for fam, order in zip(two, orders, strict=True):
        await send(fam, order)
        async with running_worker(fam) as worker:
            await drain(fam, worker)
            # the partition keeps going: a newer version after the conflict is stored
            await send(fam, [(state("t1", "wf", 3, "after"), T + 40)])
            await drain(fam, worker)
            assert conflicts_total(worker, fam) == 2
        results.append(await outcome(fam))
    assert results[0] == results[1]
    latest, history, conflicts = results[0]
    hashes = {s: content_hash(r, frozenset({"detail"}))
              for s, r in (("a", a), ("b", b), ("c", c), ("d", d))}
    tie_winner, tie_loser = ("c", "d") if hashes["c"] > hashes["d"] else ("d", "c")
    assert [(r["workflow_id"], r["version"], r["status"]) for r in latest] == [
        ("tie", 4, f"tie-{tie_winner}"), ("wf", 3, "after")]
    assert [(h["workflow_id"], h["version"], h["status"], h["parent_version"])
            for h in history] == [("tie", 4, f"tie-{tie_winner}", None), ("wf", 1, "one", None),
                                  ("wf", 2, "from-b", 1), ("wf", 3, "after", 2)]
    assert [(x["key"], x["version"], bytes(x["loser_hash"]), json.loads(x["loser"])["status"],
             bytes(x["winner_hash"])) for x in conflicts] == [
        ("t1:tie", 4, hashes[tie_loser], f"tie-{tie_loser}", hashes[tie_winner]),
        ("t1:wf", 2, hashes["a"], "from-a", hashes["b"])]
    # Redis holds the winner of the tie too
    for fam in two:
        await cache_settles(fam, ("t1", "tie"), 4)
        entry = await cached(fam, "t1", "tie")
        assert entry is not None and entry["d"]["status"] == f"tie-{tie_winner}"


async def test_a_later_winner_replaces_the_stored_one_and_replays_change_nothing(
        two: tuple[Family, Family]) -> None:
    fam = two[0]
    await send(fam, [(state("t1", "wf", 5, "first"), T + 100)])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        await cache_settles(fam, ("t1", "wf"), 5)
        # a later batch: same version, later timestamp → it wins, the first is the loser;
        # an identical re-delivery of the winner is no conflict
        await send(fam, [(state("t1", "wf", 5, "second"), T + 200),
                         (state("t1", "wf", 5, "second"), T + 150),
                         (state("t1", "wf", 5, "older"), T + 50)])
        await drain(fam, worker)
        assert conflicts_total(worker, fam) == 2
        assert worker.stats.stored == 2  # first, then its replacement

    async def settled() -> bool:
        entry = await cached(fam, "t1", "wf")
        return entry is not None and entry["d"]["status"] == "second"

    await async_wait_for(settled, 20, "the cache takes the same-version winner")
    before = await outcome(fam)
    assert [r["status"] for r in before[0]] == ["second"]
    assert [h["status"] for h in before[1]] == ["second"]
    assert sorted(json.loads(x["loser"])["status"] for x in before[2]) == ["first", "older"]
    await rewind(fam)
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        assert worker.stats.stored == 0 and conflicts_total(worker, fam) == 0
    assert await outcome(fam) == before


async def test_db_migrate_adds_the_rank_columns_to_a_deployed_history(
        two: tuple[Family, Family]) -> None:
    """A history table from before ranks: `db migrate` adds them, replays fill them in."""
    from sinkfleet.sink.postgres.connect import pg
    from sinkfleet.sink.postgres.migrate import migrate

    fam = two[0]
    await send(fam, [(state("t1", "old", 1, "legacy"), T)])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
    async with pg(fam.settings) as conn:  # as deployed before: no rank columns, no 0002
        await conn.execute(f'ALTER TABLE "{fam.table}_history" DROP COLUMN produced_at,'
                           " DROP COLUMN content_hash")
        await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id = $1",
                           f"sink:{fam.table}:0002")
    said: list[str] = []
    assert await migrate(fam.settings, fam.catalogue, said.append) == [f"sink:{fam.table}:0002"]
    await rewind(fam)
    async with running_worker(fam) as worker:  # a replay: no conflict, the rank filled in
        await drain(fam, worker)
        assert worker.stats.stored == 0 and conflicts_total(worker, fam) == 0
    history = await rows(fam, f'SELECT status, produced_at, content_hash FROM'
                         f' "{fam.table}_history"')
    assert [(h["status"], bytes(h["content_hash"])) for h in history] == [
        ("legacy", content_hash(state("t1", "old", 1, "legacy"), frozenset({"detail"})))]
    assert history[0]["produced_at"].timestamp() * 1000 == T
