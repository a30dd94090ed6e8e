"""`sinkfleet produce`'s loads of the seed 001, 003 (CRDTs and ledgers) and 004
families, stored by a worker and checked as each sink mode promises (dev/verify_load.py,
the demo's summary): state rows at their newest versions, append rows once, merge rows
equal to the join of every replica's state — and the merge check fails when a row is not
that join."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import islice
from pathlib import Path

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.dev.produce import produce_mixed
from sinkfleet.dev.synthetic.loads import MIX, MixedLoad
from sinkfleet.dev.verify_load import check_load
from sinkfleet.sink.postgres.connect import pg
from tests.sink.families_support import Fleet, project_sinks
from tests.support.family import running_worker

pytestmark = pytest.mark.integration
SINKS = {"distributed_metric": "distributed_metrics", "capability_set": "capability_sets",
         "token": "tokens", "graph_connection": "graph_connections", "memory": "memories",
         "skill": "skills", "skill_use": "skill_successes", "architecture": "architectures",
         "intelligence": "intelligences", "vector": "vectors",
         "reflexion_episode": "reflexion_episodes", "causal_edge": "causal_edges",
         "judgement_snapshot": "judgement_snapshots", "egg_revision": "egg_revisions",
         "job_resource_allocation": "job_resource_ledger", "job_event": "job_events",
         "worker_journal_entry": "worker_journal", "tadpole_activity": "tadpole_activity"}


@pytest_asyncio.fixture
async def fleet(stack: Settings, tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = await project_sinks(tmp_path, stack, list(SINKS.values()))
    yield fleet
    await fleet.drop()


async def test_every_seed_family_loads_as_its_mode_promises(fleet: Fleet) -> None:
    load = MixedLoad(3, prefix="loads-", mix={f: MIX[f] for f in SINKS})
    result = await produce_mixed(fleet.settings, fleet.catalogue,
                                 fleet.items(islice(load, 3000)), 3000, keep=True)
    assert result.records is not None
    assert set(result.by_family or {}) == {fleet.family(f) for f in SINKS}
    async with running_worker(fleet):  # type: ignore[arg-type]
        await fleet.drain(timeout=120)
    checks = await check_load(fleet.settings, fleet.catalogue, result.records)
    back = {v: k for k, v in fleet.families.items()}
    by = {back[c.family]: c for c in checks}
    assert set(by) == set(SINKS)
    assert [(c.family, c.note) for c in checks if not c.ok] == []
    assert {by[f].mode for f in ("distributed_metric", "capability_set", "skill_use")} == {
        "merge"}
    assert all(by[f].note == "joins ok" and by[f].expected > 5
               for f in ("distributed_metric", "capability_set", "skill_use"))
    assert all(c.stored == c.expected > 0 for c in checks)
    assert sum(c.tombstones for c in checks) == result.tombstones > 0

    # The merge check can fail: a row that is not the join of what was published.
    table = fleet.sink("skill_successes")
    async with pg(fleet.settings) as conn:
        await conn.execute(f'UPDATE "{table}" SET successes = successes + 1'
                           f' WHERE skill_id = (SELECT min(skill_id) FROM "{table}")')
    [again] = [c for c in await check_load(fleet.settings, fleet.catalogue, [
        (f, r) for f, r in result.records if f == fleet.family("skill_use")])]
    assert (again.wrong, again.note, again.ok) == (1, "rows differ from the join", False)
