"""The synthetic loads behave like an agent platform (pure: no servers)."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from typing import Any

import pytest

from sinkfleet.dev.synthetic.base import StateLoad
from sinkfleet.dev.synthetic.loads import (
    LOADS,
    MIX,
    ExperienceLoad,
    MixedLoad,
    Tombstone,
    synthetic_records,
)

STATE = sorted(f for f, load in LOADS.items() if issubclass(load, StateLoad))


def take(family: str, n: int, seed: int = 0, **kw: Any) -> list[Any]:
    return list(islice(synthetic_records(family, seed, **kw), n))


def test_experience_fast_path_is_unchanged() -> None:
    via_registry = take("experience_event", 200, seed=4, start_us=1)
    direct = list(islice(ExperienceLoad(seed=4, start_us=1), 200))
    assert via_registry == direct


@pytest.mark.parametrize("family", sorted(LOADS))
def test_loads_are_reproducible_and_prefixed(family: str) -> None:
    a = take(family, 300, seed=1, start_us=10**15, prefix="x-")
    assert a == take(family, 300, seed=1, start_us=10**15, prefix="x-")
    assert a != take(family, 300, seed=2, start_us=10**15, prefix="x-")
    # the prefix keeps runs apart: no id of one prefix's run is an id of another's
    def ids(records: list[Any]) -> set[str]:
        return {json.dumps(r.key if isinstance(r, Tombstone) else next(iter(r.values())),
                           default=str) for r in records}

    assert not ids(a) & ids(take(family, 300, seed=1, start_us=10**15, prefix="y-"))


@pytest.mark.parametrize("family", STATE)
def test_state_versions_increase_with_stale_writers_and_tombstones(family: str) -> None:
    key = LOADS[family].key
    newest: dict[tuple[Any, ...], int] = {}
    published: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    stale = deletes = recreated = 0
    deleted: set[tuple[Any, ...]] = set()
    for item in take(family, 4000, seed=3):
        if isinstance(item, Tombstone):
            assert item.key in newest, "only published ids are deleted"
            deleted.add(item.key)
            deletes += 1
            continue
        ident = tuple(item[k] for k in key)
        version = item["version"]
        if version <= newest.get(ident, 0):
            assert item in published[ident], "a stale version is one published before"
            stale += 1
            continue
        if ident in deleted:
            recreated += 1
            deleted.discard(ident)
        else:
            assert version == newest.get(ident, 0) + 1
        newest[ident] = version
        published.setdefault(ident, []).append(dict(item))
    assert stale > 20
    assert deletes > 0 or family == "policy"


def test_policy_lineage_points_at_published_versions() -> None:
    versions: dict[str, set[int]] = {}
    rollbacks = 0
    for item in take("policy", 3000, seed=2):
        if isinstance(item, Tombstone):
            continue
        bin_versions = versions.setdefault(item["state_bin_id"], set())
        if item["version"] in bin_versions:
            continue  # a stale re-publish
        if item["parent_version"] is None:
            assert not bin_versions or item["version"] == max(bin_versions) + 1
        else:
            assert item["parent_version"] in bin_versions
            assert item["parent_version"] < item["version"]
            rollbacks += item["parent_version"] < item["version"] - 1
        bin_versions.add(item["version"])
        json.loads(item["action_weights"])
    assert rollbacks > 0


def test_audit_entries_chain_per_tenant_in_time_order() -> None:
    last_ts: dict[str, int] = {}
    state: dict[tuple[str, str], Any] = {}
    for item in take("audit_entry", 3000, seed=4):
        tenant = item["tenant_id"]
        assert item["ts"] > last_ts.get(tenant, 0)
        last_ts[tenant] = item["ts"]
        entity = json.loads(item["metadata"])["entity"]
        before = None if item["before"] is None else json.loads(item["before"])
        if (tenant, entity) in state:
            assert before == state[(tenant, entity)], "before is the previous after"
        after = None if item["after"] is None else json.loads(item["after"])
        state[(tenant, entity)] = after
        assert item["content_hash"] is None  # the publisher fills it
    assert len(last_ts) == 8


def test_memory_entries_carry_tags_and_provenance() -> None:
    items = take("memory_entry", 2000, seed=5)
    kinds = Counter(i["entry_type"] for i in items)
    assert set(kinds) == {"episodic_note", "artifact", "snapshot"}
    assert kinds["episodic_note"] > kinds["artifact"] > kinds["snapshot"]
    for item in items:
        assert 1 <= len(item["tags"]) <= 4 and len(set(item["tags"])) == len(item["tags"])
        assert (item["task_id"] is None) == (item["step_id"] is None)
        json.loads(item["content"])


def test_mixed_load_has_realistic_proportions_and_cross_references() -> None:
    items = list(islice(MixedLoad(seed=6, prefix="m-"), 20_000))
    counts = Counter(f for f, _ in items)
    total = sum(MIX.values())
    for family, weight in MIX.items():
        assert abs(counts[family] / len(items) - weight / total) < 0.02, family
    events = {r["event_id"] for f, r in items if f == "experience_event"}
    cited = [r["related_event_id"] for f, r in items
             if f == "learning_metric" and r["related_event_id"] is not None]
    assert cited and sum(e in events for e in cited) / len(cited) > 0.9
    task_tenant = {r["task_id"]: r["tenant_id"] for f, r in items
                   if f == "task_state" and isinstance(r, dict)}
    memory = [r for f, r in items if f == "memory_entry" and r["task_id"] in task_tenant]
    assert memory, "memory entries cite tasks the load published"
    assert all(task_tenant[r["task_id"]] == r["tenant_id"] for r in memory), \
        "tenant isolation: a memory entry's task belongs to its tenant"


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="no synthetic load for family 'nope'"):
        synthetic_records("nope")
