"""References between families, checked after the fact (docs/references.md): a child
stored before its parent is kept, counted as an orphan by `sinkfleet stats`, and stops
being one when the parent arrives; a deleted parent makes it an orphan again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.ops.lag.references import ReferencePoller
from sinkfleet.ops.stats.report import collect_stats
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.references import OrphanCount, orphan_counts
from tests.sink.families_support import Fleet, project_sinks
from tests.support.family import running_worker

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def fleet(stack: Settings, tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = await project_sinks(tmp_path, stack, ["memories", "causal_edges", "skills",
                                                  "skill_successes", "architectures"])
    yield fleet
    await fleet.drop()


def memory(memory_id: str, version: int = 1) -> dict[str, Any]:
    return {"memory_id": memory_id, "version": version, "content": f"about {memory_id}",
            "tier": 4, "importance": 0.5, "embedding": None, "created_at": T0,
            "last_accessed": T0}


def edge(edge_id: str, cause: str, effect: str) -> dict[str, Any]:
    return {"edge_id": edge_id, "from_memory": cause, "to_memory": effect, "weight": 0.9,
            "edge_type": "improvement", "created_at": T0}


def architecture(arch_id: str, parent: str | None) -> dict[str, Any]:
    return {"arch_id": arch_id, "version": 1, "name": arch_id, "paradigm": "neural",
            "substrate": "rust", "fitness_overall": 0.5, "fitness": "{}",
            "parent_id": parent, "generation": 0 if parent is None else 1,
            "created_at": T0}


async def orphans(fleet: Fleet) -> dict[tuple[str, str], OrphanCount]:
    back = {v: k for k, v in fleet.names.items()}
    async with pg(fleet.settings) as conn:
        counts = await orphan_counts(conn, fleet.catalogue)
    return {(back[c.sink], ",".join(c.columns)): c for c in counts}


async def test_a_child_before_its_parent_is_stored_then_an_orphan_then_not(
        fleet: Fleet) -> None:
    # Children first: an edge between two memories not yet published, a skill's
    # success count before the skill, an architecture evolved from an unknown parent
    # (and a root architecture: a null reference is no reference).
    await fleet.publish("causal_edge", edge("e-1", "m-cause", "m-effect"),
                        edge("e-2", "m-cause", "m-other"))
    await fleet.publish("skill_use", {"skill_id": "s-1", "replica_id": "r-1",
                                      "successes": 3, "last_used": T0})
    await fleet.publish("architecture", architecture("a-root", None),
                        architecture("a-child", "a-missing"))
    async with running_worker(fleet) as worker:  # type: ignore[arg-type]
        await fleet.drain()
        found = await orphans(fleet)
        assert {k: c.orphans for k, c in found.items()} == {
            ("architectures", "parent_id"): 1, ("causal_edges", "from_memory"): 2,
            ("causal_edges", "to_memory"): 2, ("skill_successes", "skill_id"): 1}
        async with pg(fleet.settings) as conn:
            first = await conn.fetchval(
                f'SELECT min(ingested_at) FROM "{fleet.sink("causal_edges")}"')
        edges = found[("causal_edges", "from_memory")]
        assert (edges.oldest, edges.arrived_by) == (first, "ingested_at")
        assert edges.target == fleet.sink("memories") and edges.note is None
        assert found[("skill_successes", "skill_id")].arrived_by == "first_seen_at"

        # The parents arrive: each reference they satisfy stops counting.
        await fleet.publish("memory", memory("m-cause"), memory("m-effect"))
        await fleet.publish("skill", {"skill_id": "s-1", "version": 1, "name": "review",
                                      "description": "code review",
                                      "trigger_pattern": "review.*code",
                                      "created_at": T0, "updated_at": T0})
        await fleet.drain()
        found = await orphans(fleet)
        assert {k: c.orphans for k, c in found.items()} == {
            ("architectures", "parent_id"): 1, ("causal_edges", "from_memory"): 0,
            ("causal_edges", "to_memory"): 1, ("skill_successes", "skill_id"): 0}
        assert found[("causal_edges", "from_memory")].oldest is None

        # A deleted parent (a tombstone) leaves its children orphans again.
        await fleet.delete("memory", "m-cause")
        await fleet.drain()
        assert (await orphans(fleet))[("causal_edges", "from_memory")].orphans == 2
        assert worker is not None

    # `sinkfleet stats` reports the same, per reference.
    report = await collect_stats(fleet.settings, fleet.catalogue)
    by = {(r.sink, tuple(r.columns)): r.orphans for r in report.references}
    assert by == {(fleet.sink("architectures"), ("parent_id",)): 1,
                  (fleet.sink("causal_edges"), ("from_memory",)): 2,
                  (fleet.sink("causal_edges"), ("to_memory",)): 1,
                  (fleet.sink("skill_successes"), ("skill_id",)): 0}
    assert report.as_dict()["references"][1]["orphans"] == 2

    # The lag exporter's gauges: the same counts, and the oldest orphan's age.
    poller = ReferencePoller(fleet.settings, fleet.catalogue)
    await poller.poll()
    text = poller.metrics(now=T0.timestamp() + 10**9).decode()
    edges, to = fleet.sink("causal_edges"), fleet.sink("memories")
    labels = f'columns="from_memory",sink="{edges}",target="{to}"'
    assert f"sinkfleet_reference_orphans{{{labels}}} 2\n" in text
    skills = f'columns="skill_id",sink="{fleet.sink("skill_successes")}"'
    assert f'sinkfleet_reference_orphans{{{skills},target="{fleet.sink("skills")}"}} 0\n' \
        in text
    [age] = [line for line in text.splitlines()
             if line.startswith(f"sinkfleet_reference_orphan_oldest_seconds{{{labels}}}")]
    async with pg(fleet.settings) as conn:
        oldest = await conn.fetchval(f'SELECT min(ingested_at) FROM "{edges}"')
    assert float(age.split()[-1]) == pytest.approx(T0.timestamp() + 10**9
                                                   - oldest.timestamp())
    assert poller.as_dict()["error"] is None and len(poller.as_dict()["references"]) == 4
