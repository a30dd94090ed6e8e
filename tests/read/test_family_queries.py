"""The queries seeds 001 and 004 name, end to end (publish → worker → PostgreSQL →
Reader) over the families as shipped, each checked against the same query computed in
Python: memories by tier and importance, the k nearest vectors, a memory's causal
parents and children, a node's neighbours and statistics (degree, weight sums)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.read import Reader
from sinkfleet.read.query import Filter, Query, QueryError
from tests.sink.families_support import Fleet, project_sinks
from tests.support.catalogue import catalogue_env
from tests.support.family import running_worker

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module")
async def fleet(stack: Settings, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[tuple[Fleet, dict[str, list[dict[str, Any]]]]]:
    fleet = await project_sinks(tmp_path_factory.mktemp("families"), stack,
                                ["memories", "vectors", "causal_edges", "graph_connections",
                                 "skills"])
    published = {"memory": memories(), "vector": vectors(), "causal_edge": edges(),
                 "graph_connection": connections(), "skill": skills()}
    for family, records in published.items():
        await fleet.publish(family, *records)
    async with running_worker(fleet):  # type: ignore[arg-type]
        await fleet.drain()
    yield fleet, published
    await fleet.drop()


def memories() -> list[dict[str, Any]]:
    rng = random.Random(4)
    out = []
    for i in range(120):
        record = {"memory_id": f"mem-{i:03d}", "version": 1, "content": f"memory {i}",
                  "tier": i % 12 + 1, "importance": rng.randrange(0, 20) / 20,
                  "embedding": [rng.randrange(-8, 9) / 4 for _ in range(32)] if i % 2
                  else None, "created_at": T0, "last_accessed": T0}
        out.append(record)
        if i % 3 == 0:  # importance re-rated: the latest version counts
            out.append({**record, "version": 2, "importance": rng.randrange(0, 20) / 20,
                        "last_accessed": T0 + timedelta(hours=1)})
    return out


def vectors() -> list[dict[str, Any]]:
    rng = random.Random(5)
    # halves: exact in float32, so Python's distances are PostgreSQL's
    return [{"vector_id": f"vec-{i:03d}", "version": 1, "memory_id": f"mem-{i % 120:03d}",
             "dimension": 32, "embedding": [rng.randrange(0, 21) / 2 for _ in range(32)],
             "model": "mini-32", "created_at": T0} for i in range(300)]


def edges() -> list[dict[str, Any]]:
    rng = random.Random(6)
    return [{"edge_id": f"edge-{i:03d}", "from_memory": f"mem-{rng.randrange(10):03d}",
             "to_memory": f"mem-{rng.randrange(10):03d}", "weight": rng.randrange(1, 9) / 8,
             "edge_type": rng.choice(["improvement", "regression"]),
             "created_at": T0 + timedelta(seconds=i)} for i in range(80)]


NODES = [str(uuid.UUID(int=i + 1)) for i in range(12)]


def connections() -> list[dict[str, Any]]:
    rng = random.Random(7)
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for _ in range(150):
        key = (rng.choice(NODES), rng.choice(NODES), rng.choice(["spatial", "causal"]))
        version = seen[key]["version"] + 1 if key in seen else 1
        seen[key] = {"source_id": key[0], "target_id": key[1], "connection_type": key[2],
                     "version": version, "weight": rng.randrange(1, 16) / 4,
                     "updated_at": T0}
    out = list(seen.values())
    # earlier versions too, published first: the latest weight is the one that counts
    return [{**c, "version": c["version"] - 1, "weight": 99.0} for c in out
            if c["version"] > 1] + out


PATTERNS = ("review the code diff", "write unit tests", "Refactor Code paths", "summarise a"
            " thread", "decode 50% of the logs", "plan_a_trip", "codec selection")


def skills() -> list[dict[str, Any]]:
    return [{"skill_id": f"skill-{i:02d}", "version": 1, "name": f"skill {i}",
             "description": "", "trigger_pattern": pattern, "created_at": T0,
             "updated_at": T0} for i, pattern in enumerate(PATTERNS)]


def latest(records: list[dict[str, Any]], *key: str) -> list[dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        k = tuple(r[c] for c in key)
        if k not in out or out[k]["version"] < r["version"]:
            out[k] = r
    return list(out.values())


async def test_memories_by_tier_and_importance(
        fleet: tuple[Fleet, dict[str, list[dict[str, Any]]]]) -> None:
    f, published = fleet
    mems = latest(published["memory"], "memory_id")
    expected = sorted((m for m in mems if m["tier"] == 4),
                      key=lambda m: (m["importance"], m["memory_id"]), reverse=True)
    async with Reader(f.settings, f.catalogue) as r:
        sink = f.sink("memories")
        first = await r.query(Query(sink, [Filter("tier", "=", 4)], order_by="importance",
                                    newest_first=True, limit=6))
        rest = await r.query(Query(sink, [Filter("tier", "=", 4)], order_by="importance",
                                   newest_first=True, limit=6, cursor=first.next_cursor))
        important = await r.query(sink, ["tier=4", "importance>=0.5"],
                                  order_by="importance", newest_first=True)
        with pytest.raises(QueryError, match="cannot order"):
            await r.query(sink, order_by="importance")  # no tier: no index order
        one = await r.state(sink, "mem-003")
    got = first.rows + rest.rows
    assert rest.next_cursor is None and len(expected) == 10
    assert [(m["memory_id"], m["importance"], m["version"]) for m in got] == [
        (m["memory_id"], m["importance"], m["version"]) for m in expected]
    assert [m["memory_id"] for m in important.rows] == [
        m["memory_id"] for m in expected if m["importance"] >= 0.5]
    [mem3] = [m for m in mems if m["memory_id"] == "mem-003"]
    assert one is not None and (one["version"], one["importance"], one["embedding"]) == (
        2, mem3["importance"], mem3["embedding"])


async def test_the_k_nearest_vectors(
        fleet: tuple[Fleet, dict[str, list[dict[str, Any]]]]) -> None:
    f, published = fleet
    query = [5.0] * 32
    by_distance = sorted(published["vector"],
                         key=lambda v: (math.dist(v["embedding"], query), v["vector_id"]))
    async with Reader(f.settings, f.catalogue) as r:
        near = await r.nearest(f.sink("vectors"), "embedding", query, k=7)
        of_one = await r.nearest(f.sink("vectors"), "embedding", query, k=3,
                                 where={"memory_id": "mem-007"})
    assert [(v["vector_id"], v["distance"]) for v in near] == [
        (v["vector_id"], math.dist(v["embedding"], query)) for v in by_distance[:7]]
    assert near[0]["embedding"] == by_distance[0]["embedding"] and near[0]["dimension"] == 32
    mine = [v for v in by_distance if v["memory_id"] == "mem-007"]
    assert [v["vector_id"] for v in of_one] == [v["vector_id"] for v in mine[:3]]


async def test_causal_parents_and_children(
        fleet: tuple[Fleet, dict[str, list[dict[str, Any]]]]) -> None:
    f, published = fleet
    node = "mem-003"
    children = [e for e in published["causal_edge"] if e["from_memory"] == node]
    parents = [e for e in published["causal_edge"] if e["to_memory"] == node]
    async with Reader(f.settings, f.catalogue) as r:
        sink = f.sink("causal_edges")
        got_children = await r.query(sink, [f"from_memory={node}"], order_by="created_at")
        got_parents = await r.query(sink, [f"to_memory={node}"], order_by="created_at")
        strong = await r.query(sink, [f"from_memory={node}", "weight>0.5"],
                               order_by="created_at")
    assert children and parents
    assert [(e["edge_id"], e["to_memory"], e["weight"]) for e in got_children.rows] == [
        (e["edge_id"], e["to_memory"], e["weight"]) for e in children]
    assert [(e["edge_id"], e["from_memory"]) for e in got_parents.rows] == [
        (e["edge_id"], e["from_memory"]) for e in parents]
    assert [e["edge_id"] for e in strong.rows] == [
        e["edge_id"] for e in children if e["weight"] > 0.5]


async def test_a_nodes_neighbours_and_statistics(
        fleet: tuple[Fleet, dict[str, list[dict[str, Any]]]]) -> None:
    f, published = fleet
    edges = latest(published["graph_connection"], "source_id", "target_id",
                   "connection_type")
    node = NODES[2]
    out = sorted((e for e in edges if e["source_id"] == node),
                 key=lambda e: (e["target_id"], e["connection_type"]))
    into = [e for e in edges if e["target_id"] == node]
    sink = f.sink("graph_connections")
    async with Reader(f.settings, f.catalogue) as r:
        outgoing = await r.query(sink, [f"source_id={node}"], order_by="target_id")
        incoming = await r.query(sink, [f"target_id={node}"], order_by="connection_type",
                                 limit=1000)
        out_stats = await r.summary(sink, [f"source_id={node}"], of=["weight"])
        in_stats = await r.summary(sink, [Filter("target_id", "=", node)], of=["weight"])
        causal_out = await r.summary(sink, [f"source_id={node}", "connection_type=causal"])
        nobody = await r.summary(sink, [f"source_id={uuid.UUID(int=999)}"], of=["weight"])
        with pytest.raises(QueryError, match="numeric columns only"):
            await r.summary(sink, of=["connection_type"])
    assert [(str(e["target_id"]), e["connection_type"], e["weight"])
            for e in outgoing.rows] == [
        (e["target_id"], e["connection_type"], e["weight"]) for e in out]
    assert sorted((str(e["source_id"]), e["connection_type"]) for e in incoming.rows) == \
        sorted((e["source_id"], e["connection_type"]) for e in into)
    assert out and into
    assert out_stats == {"rows": len(out), "sum_weight": sum(e["weight"] for e in out),
                         "min_weight": min(e["weight"] for e in out),
                         "max_weight": max(e["weight"] for e in out),
                         "avg_weight": pytest.approx(sum(e["weight"] for e in out)
                                                     / len(out))}
    assert (in_stats["rows"], in_stats["sum_weight"]) == (
        len(into), sum(e["weight"] for e in into))
    assert causal_out == {"rows": sum(1 for e in out if e["connection_type"] == "causal")}
    assert nobody == {"rows": 0, "sum_weight": None, "min_weight": None,
                      "max_weight": None, "avg_weight": None}


async def test_skills_by_pattern(
        fleet: tuple[Fleet, dict[str, list[dict[str, Any]]]]) -> None:
    """Seed 004's get_skills_by_pattern("code"): a case-insensitive substring of the
    trigger pattern, taken literally (% and _ match themselves, not any text)."""
    f, _ = fleet

    async def matching(text: str) -> list[str]:
        async with Reader(f.settings, f.catalogue) as reader:
            page = await reader.query(f.sink("skills"),
                                      [Filter("trigger_pattern", "includes", text)],
                                      order_by="skill_id")
        return [r["trigger_pattern"] for r in page.rows]

    assert await matching("code") == [p for p in PATTERNS if "code" in p.lower()]
    assert await matching("code") == ["review the code diff", "Refactor Code paths",
                                      "decode 50% of the logs", "codec selection"]
    assert await matching("50%") == ["decode 50% of the logs"]
    assert await matching("%") == ["decode 50% of the logs"]
    assert await matching("n_a") == ["plan_a_trip"]  # not "plan" + any one character
    async with Reader(f.settings, f.catalogue) as reader:
        with pytest.raises(QueryError, match="includes needs a text column"):
            await reader.query(f.sink("skills"), [Filter("version", "includes", "1")])


def test_the_same_reads_on_the_command_line(
        fleet: tuple[Fleet, dict[str, list[dict[str, Any]]]]) -> None:
    f, published = fleet
    env = catalogue_env(f.root, f.settings)

    def query(*args: str) -> Any:
        out = subprocess.run([sys.executable, "-m", "sinkfleet", "query", *args, "--json"],
                             capture_output=True, text=True, env=env, timeout=120,
                             cwd=f.root)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    edges = latest(published["graph_connection"], "source_id", "target_id",
                   "connection_type")
    node = NODES[2]
    out = [e for e in edges if e["source_id"] == node]
    assert query("summary", "--sink", f.sink("graph_connections"), "--where",
                 f"source_id={node}", "--of", "weight") == {
        "rows": len(out), "sum_weight": sum(e["weight"] for e in out),
        "min_weight": min(e["weight"] for e in out),
        "max_weight": max(e["weight"] for e in out),
        "avg_weight": pytest.approx(sum(e["weight"] for e in out) / len(out))}
    mems = latest(published["memory"], "memory_id")
    top = sorted((m for m in mems if m["tier"] == 4),
                 key=lambda m: (m["importance"], m["memory_id"]), reverse=True)[:3]
    page = query("rows", "--sink", f.sink("memories"), "--where", "tier=4",
                 "--order-by", "importance", "--desc", "--limit", "3")
    assert [m["memory_id"] for m in page["rows"]] == [m["memory_id"] for m in top]
    assert page["next_cursor"] is not None
    found = query("rows", "--sink", f.sink("skills"), "--where",
                  "trigger_pattern includes CODE", "--order-by", "skill_id")
    assert [r["trigger_pattern"] for r in found["rows"]] == [
        p for p in PATTERNS if "code" in p.lower()]
