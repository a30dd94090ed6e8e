"""The read API over real PostgreSQL and Redis: rows stored through the real writers,
read back by time range, from the caches and without them, with history and audit
trails; and `sinkfleet query` on the command line."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from sinkfleet import Reader
from sinkfleet.cache import CacheLayout, CacheWriter
from sinkfleet.cache.store import redis_client
from sinkfleet.errors import CatalogueError, ConfigError
from tests.support.cache import RECENT_KEEP, CacheCatalogue, Tomb, store
from tests.support.cli import query
from tests.support.endpoints import free_port
from tests.support.records import audit, event, now_us, policy, workflow

pytestmark = pytest.mark.integration

BASE = now_us() - 3_600_000_000  # events an hour ago, one per ms


def at(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC)


async def fill(cc: CacheCatalogue) -> None:
    sinks = [cc.sink(r) for r in ("workflow_states", "experience_events", "policies")]
    writer = CacheWriter(cc.settings, sinks, group="g")
    await writer.start()
    try:
        await store(cc, "experience_events",
                    [event(f"agent-{a}", ep, s, BASE + s * 1000 + a)
                     for a in range(2) for ep in (1, 2) for s in range(10)], writer)
        for v in (1, 2, 3):
            await store(cc, "workflow_states", [workflow("t:1", "wf-a", v, status=f"s{v}"),
                                                workflow("t:1", "wf-b", v)], writer)
        await store(cc, "workflow_states", [Tomb("t:1", "wf-b")], writer)
        await store(cc, "policies", [policy("bin-1", 1, None), policy("bin-1", 2, 1),
                                     policy("bin-1", 3, 1)], writer)
        await store(cc, "audit_entries",
                    [audit("tenant-1", f"agent-{i % 2}", f"act-{i}", BASE + i * 1000)
                     for i in range(6)] + [audit("tenant-2", "agent-0", "x", BASE)])
        assert await writer.drain(20)
    finally:
        await writer.close()


async def drop_key(cc: CacheCatalogue, key: str) -> None:
    client = redis_client(cc.settings)
    try:
        assert await client.delete(key) == 1
    finally:
        await client.aclose()


async def test_events_in_a_time_range_by_agent_and_episode(
        cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    sink = cc.names["experience_events"]
    async with Reader(cc.settings, cc.catalogue) as r:
        rows = await r.events(sink, start=at(BASE + 2000), end=at(BASE + 7000),
                              where={"agent_id": "agent-1", "episode_id": 2})
        assert [row["step_number"] for row in rows] == [2, 3, 4, 5, 6]
        assert {(row["agent_id"], row["episode_id"]) for row in rows} == {("agent-1", 2)}
        assert rows[0]["ts"] == at(BASE + 2001)
        assert isinstance(rows[1]["action_parameters"], dict)  # jsonb parsed
        # strings (as the CLI passes them) are parsed to the columns' types
        same = await r.events(sink, start=(at(BASE + 2000)).isoformat(),
                              end=at(BASE + 7000), where={"agent_id": "agent-1",
                                                          "episode_id": "2"})
        assert same == rows
        assert len(await r.events(sink, start=at(BASE), limit=7)) == 7
        assert len(await r.events(sink)) == 40

        with pytest.raises(ConfigError, match="no column 'agent'.*columns: event_id, ts"):
            await r.events(sink, where={"agent": "x"})
        with pytest.raises(ConfigError, match="'x' is not a valid bigint"):
            await r.events(sink, where={"episode_id": "x"})
        with pytest.raises(CatalogueError, match=f"no sink 'nope'.*{sink}"):
            await r.events("nope")
        with pytest.raises(CatalogueError, match=f"is a append sink.*{cc.names['policies']}"):
            await r.state(sink, "x")


async def test_recent_from_redis_then_from_postgres(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    sink = cc.names["experience_events"]
    async with Reader(cc.settings, cc.catalogue) as r:
        hot = await r.recent(sink, agent_id="agent-0", episode_id=1)
        assert r.cache_stats.hits == 1 and r.cache_stats.misses == 0
        assert [row["step_number"] for row in hot] == [9, 8, 7, 6, 5][:RECENT_KEEP]
        await drop_key(cc, CacheLayout.of(cc.sink("experience_events")).recent_key(
            ["agent-0", 1]))
        cold = await r.recent(sink, agent_id="agent-0", episode_id="1")
        assert r.cache_stats.misses == 1 and r.cache_stats.hit_rate == 0.5
        assert cold == hot  # the same dicts, whichever store served them
        assert await r.recent(sink, agent_id="nobody", episode_id=1) == []
        with pytest.raises(ConfigError, match="keyed by agent_id, episode_id"):
            await r.recent(sink, agent_id="agent-0")


async def test_state_history_and_active_versions(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    sink = cc.names["workflow_states"]
    async with Reader(cc.settings, cc.catalogue) as r:
        hot = await r.state(sink, "t:1", "wf-a")
        assert r.cache_stats.hits == 1
        assert hot is not None and hot["version"] == 3 and hot["status"] == "s3"
        assert isinstance(hot["updated_at"], dt.datetime) and isinstance(hot["metadata"], dict)
        await drop_key(cc, CacheLayout.of(cc.sink("workflow_states")).latest_key(
            ["t:1", "wf-a"]))
        assert await r.state(sink, "t:1", "wf-a") == hot
        assert r.cache_stats.misses == 1
        assert await r.state(sink, "t:1", "wf-b") is None  # deleted by a tombstone
        assert await r.state(sink, "t:1", "never") is None
        with pytest.raises(ConfigError, match=r"keyed by \(tenant_id, workflow_id\)"):
            await r.state(sink, "t:1")

        history = await r.state_history(sink, "t:1", "wf-b")
        assert [(h["version"], h["op"], h["parent_version"]) for h in history] == [
            (1, "upsert", None), (2, "upsert", 1), (3, "upsert", 2), (3, "delete", 3)]
        assert history[0]["status"] == "running" and history[-1]["status"] is None
        assert {"kafka_partition", "kafka_offset", "recorded_at"} <= set(history[0])

        policies = cc.names["policies"]
        active = await r.active(policies, "bin-1")
        assert active is not None and active["version"] == 3
        assert active["parent_policy_version"] == 1  # the lineage the agent declared
        lineage = await r.history(policies, "bin-1")
        assert [p["version"] for p in lineage] == [1, 2, 3]


async def test_audit_trail_by_tenant_actor_and_time(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    sink = cc.names["audit_entries"]
    async with Reader(cc.settings, cc.catalogue) as r:
        trail = await r.audit_trail(sink, tenant="tenant-1")
        assert [e["action"] for e in trail] == [f"act-{i}" for i in range(6)]
        assert [e["chain_seq"] for e in trail] == [1, 2, 3, 4, 5, 6]
        assert trail[1]["prev_hash"] == trail[0]["chain_hash"]
        by_actor = await r.audit_trail(sink, tenant="tenant-1", actor="agent-1",
                                       start=at(BASE + 2000))
        assert [e["action"] for e in by_actor] == ["act-3", "act-5"]
        assert len(await r.audit_trail(sink, tenant="tenant-1", limit=2)) == 2
        assert [e["action"] for e in await r.audit_trail(sink, tenant="tenant-2")] == ["x"]
        with pytest.raises(CatalogueError, match="needs a audit sink"):
            await r.audit_trail(cc.names["policies"], tenant="x")


async def test_audit_trail_where_never_widens_the_tenant(
        cache_catalogue: CacheCatalogue) -> None:
    """``where`` narrows a trail, never replaces its tenant (or actor): a where on the
    tenant column that names another tenant ANDs to nothing, it does not read theirs."""
    cc = cache_catalogue
    await fill(cc)
    sink = cc.names["audit_entries"]
    async with Reader(cc.settings, cc.catalogue) as r:
        assert await r.audit_trail(sink, tenant="tenant-1",
                                   where={"tenant_id": "tenant-2"}) == []
        assert await r.audit_trail(sink, tenant="tenant-1", actor="agent-1",
                                   where={"actor": "agent-0"}) == []
        same = await r.audit_trail(sink, tenant="tenant-1", where={"tenant_id": "tenant-1"})
        assert [e["action"] for e in same] == [f"act-{i}" for i in range(6)]
        narrowed = await r.audit_trail(sink, tenant="tenant-1", where={"actor": "agent-1"})
        assert [e["action"] for e in narrowed] == ["act-1", "act-3", "act-5"]


async def test_reader_falls_back_when_redis_is_down(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    settings = cc.with_settings(redis_port=free_port())  # nothing listens there
    async with Reader(settings, cc.catalogue) as r:
        row = await r.state(cc.names["workflow_states"], "t:1", "wf-a")
        assert row is not None and row["version"] == 3
        rows = await r.recent(cc.names["experience_events"], agent_id="agent-1", episode_id=2)
        assert len(rows) == RECENT_KEEP
        # one failed attempt, then Redis is skipped for a while
        assert r.cache_stats.as_dict() == {"hits": 0, "misses": 2, "errors": 1,
                                           "hit_rate": 0.0}


async def test_query_cli(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    states, events = cc.names["workflow_states"], cc.names["experience_events"]
    out = query(cc, "state", "--sink", states, "t:1", "wf-a", "--json")
    assert out.returncode == 0, out.stderr
    row: dict[str, Any] = json.loads(out.stdout)[0]
    assert row["version"] == 3 and row["metadata"]["version"] == 3

    out = query(cc, "events", "--sink", events, "--where", "agent_id=agent-0", "--where",
                "episode_id=1", "--start", at(BASE + 8000).isoformat(), "--json")
    assert out.returncode == 0, out.stderr
    assert [e["step_number"] for e in json.loads(out.stdout)] == [8, 9]

    out = query(cc, "recent", "--sink", events, "agent_id=agent-0", "episode_id=1",
                "--columns", "step_number,ts")
    assert out.returncode == 0, out.stderr
    assert "step_number" in out.stdout and "served by Redis" in out.stderr

    out = query(cc, "history", "--sink", states, "t:1", "wf-b")
    assert out.returncode == 0 and "delete" in out.stdout, out.stderr
    out = query(cc, "audit", "--sink", cc.names["audit_entries"], "--tenant", "tenant-1",
                "--actor", "agent-0", "--json")
    assert [e["action"] for e in json.loads(out.stdout)] == ["act-0", "act-2", "act-4"]

    for args, message in [
        (("state", "--sink", "nope", "x"), "no sink 'nope' in sinks/ (state sinks: "),
        (("events", "--sink", events, "--where", "bogus=1"), "no column 'bogus'"),
        (("events", "--sink", events, "--where", "bogus"), "write COLUMN=VALUE"),
        (("events", "--sink", events, "--start", "yesterday"), "not an ISO-8601 time"),
    ]:
        out = query(cc, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
