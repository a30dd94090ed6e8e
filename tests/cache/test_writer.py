"""CacheWriter against real Redis and PostgreSQL: compare-and-set, tombstones, capped
recent sets with TTL, and an outage that never blocks the caller and heals from
PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sinkfleet.cache import CacheLayout, CacheWriter
from sinkfleet.cache import layout as cache_layout
from sinkfleet.cache.layout import FUTURE_SKEW, RecentLayout, score
from sinkfleet.cache.store import CAS_SCRIPT, redis_client
from sinkfleet.sink.changes import Change
from tests.support.cache import (
    RECENT_KEEP,
    RECENT_TTL,
    CacheCatalogue,
    Tomb,
    entry,
    metric,
    settled,
    store,
)
from tests.support.faults import TcpProxy
from tests.support.records import event, now_us, workflow
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration


async def test_latest_is_compare_and_set_on_version(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    sink = cc.sink("workflow_states")
    lay = CacheLayout.of(sink)
    writer = CacheWriter(cc.settings, [sink], group="g")
    await writer.start()
    try:
        v3 = {"tenant_id": "t1", "workflow_id": "wf:1", "version": 3, "status": "running"}
        v2 = {**v3, "version": 2, "status": "stale"}
        writer.submit(sink.spec.name, [Change("upsert", v3)])
        writer.submit(sink.spec.name, [Change("upsert", v2)])  # older: ignored
        await settled(writer)
        key = lay.latest_key(["t1", "wf:1"])
        got = await entry(cc, key)
        assert got["v"] == "3" and json.loads(got["d"])["status"] == "running"

        # a tombstone of an older version leaves the newer entry; of this one deletes it
        writer.submit(sink.spec.name, [Change("delete", {"tenant_id": "t1",
                                                         "workflow_id": "wf:1", "version": 2})])
        await settled(writer)
        assert (await entry(cc, key))["v"] == "3"
        writer.submit(sink.spec.name, [Change("delete", {"tenant_id": "t1",
                                                         "workflow_id": "wf:1", "version": 3})])
        await settled(writer)
        assert await entry(cc, key) == {}
    finally:
        await writer.close()


async def test_one_batch_with_many_versions_keeps_the_newest(
        cache_catalogue: CacheCatalogue) -> None:
    """Hundreds of changes in one submit (several script calls of one pipeline), ids
    repeated with older and newer versions in any order."""
    cc = cache_catalogue
    sink = cc.sink("workflow_states")
    lay = CacheLayout.of(sink)
    writer = CacheWriter(cc.settings, [sink], group="g")
    await writer.start()
    order = [(i, v) for v in (2, 5, 1, 4, 3) for i in range(150)]
    try:
        writer.submit(sink.spec.name, [
            Change("upsert", {"tenant_id": "t", "workflow_id": f"w{i}", "version": v})
            for i, v in order])
        writer.submit(sink.spec.name, [
            Change("delete", {"tenant_id": "t", "workflow_id": f"w{i}", "version": 5})
            for i in range(0, 150, 3)])
        await settled(writer)
        client = redis_client(cc.settings)
        try:
            versions = [await client.hget(lay.latest_key(["t", f"w{i}"]), "v")
                        for i in range(150)]
        finally:
            await client.aclose()
        assert versions == [None if i % 3 == 0 else "5" for i in range(150)]
    finally:
        await writer.close()


async def test_cas_script_compares_big_and_negative_versions(
        cache_catalogue: CacheCatalogue) -> None:
    key = f"sinkfleet:{cache_catalogue.names['workflow_states']}:latest:cas-test"
    client = redis_client(cache_catalogue.settings)
    cas = client.register_script(CAS_SCRIPT)
    try:
        big = 2**62
        for version, expected in [(9, 9), (10, 10), (9, 10), (big + 1, big + 1), (big, big + 1),
                                  (-5, big + 1)]:
            await cas(keys=[key], args=["set", str(version), "{}", ""])
            assert await client.hget(key, "v") == str(expected)
        await client.delete(key)
        await cas(keys=[key], args=["set", "-5", "{}", ""])
        await cas(keys=[key], args=["set", "-10", "{}", ""])
        assert await client.hget(key, "v") == "-5"
        assert await cas(keys=[key], args=["del", "-6", "", ""]) == 0  # cached -5 is newer
        assert await cas(keys=[key], args=["del", str(big), "", ""]) == 1
        # the same version: only a greater rank replaces (a same-version conflict's winner)
        assert await cas(keys=[key], args=["set", "7", '"a"', "0002ff"]) == 1
        assert await cas(keys=[key], args=["set", "7", '"b"', "0001ff"]) == 0
        assert await cas(keys=[key], args=["set", "7", '"c"', "0002ff"]) == 0
        assert await cas(keys=[key], args=["set", "7", '"d"', "0003aa"]) == 1
        assert await client.hget(key, "d") == '"d"'
    finally:
        await client.delete(key)
        await client.aclose()


async def test_state_writer_changes_keep_newest_in_postgres_and_redis(
        cache_catalogue: CacheCatalogue) -> None:
    """Version 3 then version 2 through the real state writer: 3 in both stores; a
    tombstone removes the key from both."""
    cc = cache_catalogue
    sink = cc.sink("workflow_states")
    lay = CacheLayout.of(sink)
    writer = CacheWriter(cc.settings, [sink], group="g")
    await writer.start()
    try:
        await store(cc, "workflow_states", [workflow("t1", "wf-1", 3, status="v3")], writer)
        await store(cc, "workflow_states", [workflow("t1", "wf-1", 2, status="v2")], writer)
        await settled(writer)
        got = await entry(cc, lay.latest_key(["t1", "wf-1"]))
        assert got["v"] == "3" and json.loads(got["d"])["status"] == "v3"
        await store(cc, "workflow_states", [Tomb("t1", "wf-1")], writer)
        await settled(writer)
        assert await entry(cc, lay.latest_key(["t1", "wf-1"])) == {}
    finally:
        await writer.close()


async def test_recent_is_capped_newest_first_with_ttl(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    sink = cc.sink("experience_events")
    lay = CacheLayout.of(sink)
    registry = CollectorRegistry()
    writer = CacheWriter(cc.settings, [sink], group="g", registry=registry)
    await writer.start()
    base = now_us()
    try:
        # two batches, out of order across them: the newest RECENT_KEEP survive
        await store(cc, "experience_events",
                    [event("a:1", 7, s, base + s * 1000) for s in range(8, 12)], writer)
        await store(cc, "experience_events",
                    [event("a:1", 7, s, base + s * 1000) for s in range(8)], writer)
        await store(cc, "experience_events", [event("other", 7, 0, base)], writer)
        await settled(writer)
        client = redis_client(cc.settings)
        try:
            key = lay.recent_key(["a:1", 7])
            assert key.endswith(":recent:a%3A1:7")
            members = await client.zrange(key, 0, -1, desc=True, withscores=True)
            ttl = await client.ttl(key)
        finally:
            await client.aclose()
        assert [json.loads(m)["step_number"] for m, _ in members] == [11, 10, 9, 8, 7][
            :RECENT_KEEP]
        assert members[0][1] == float(base + 11_000)  # score: µs since the epoch
        assert 0 < ttl <= RECENT_TTL
        assert metric(registry, "sinkfleet_cache_writes_total", group="g",
                      sink=sink.spec.name, cache="recent") == 13
    finally:
        await writer.close()


async def test_redis_outage_never_blocks_and_is_repaired_from_postgres(
        cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    proxy = TcpProxy(cc.settings.redis_host, cc.settings.redis_port)
    await proxy.start()
    settings = cc.with_settings(redis_port=proxy.port)
    states, events = cc.sink("workflow_states"), cc.sink("experience_events")
    s_lay, e_lay = CacheLayout.of(states), CacheLayout.of(events)
    registry = CollectorRegistry()
    writer = CacheWriter(settings, [states, events], group="g", registry=registry,
                         backoff_cap=0.3)
    await writer.start()
    base = now_us()
    try:
        await store(cc, "workflow_states", [workflow("t1", "stale", 1, status="old"),
                                            workflow("t1", "gone", 1)], writer)
        await settled(writer)
        proxy.cut()

        # the outage: every submit returns at once, whatever Redis does
        worst = 0.0
        for v in range(2, 6):
            changes = await store(cc, "workflow_states",
                                  [workflow("t1", "stale", v, status=f"v{v}"),
                                   workflow("t1", f"new-{v}", 1)])
            t0 = time.perf_counter()
            writer.submit(states.spec.name, changes)
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.05)
        changes = await store(cc, "workflow_states", [Tomb("t1", "gone")])
        writer.submit(states.spec.name, changes)
        changes = await store(cc, "experience_events",
                              [event("ag", 1, s, base + s) for s in range(7)])
        writer.submit(events.spec.name, changes)
        assert worst < 0.005, f"submit took {worst * 1000:.1f} ms during the outage"

        await async_wait_for(lambda: _true(writer.degraded is not None), 10,
                             "the writer to report degraded", interval=0.05)
        assert "Redis" in (writer.degraded or "")
        assert metric(registry, "sinkfleet_cache_errors_total", group="g",
                      sink=states.spec.name) >= 1
        assert metric(registry, "sinkfleet_cache_dirty_keys", group="g",
                      sink=states.spec.name) >= 1
        assert not await writer.drain(0.3)

        proxy.heal()
        await settled(writer, 30)
        assert writer.degraded is None
        assert metric(registry, "sinkfleet_cache_repairs_total", group="g",
                      sink=states.spec.name, kind="keys") >= 1
    finally:
        await writer.close()
        await proxy.stop()

    # Redis now holds exactly what PostgreSQL holds
    assert (await entry(cc, s_lay.latest_key(["t1", "stale"])))["v"] == "5"
    for v in range(2, 6):
        assert (await entry(cc, s_lay.latest_key(["t1", f"new-{v}"])))["v"] == "1"
    assert await entry(cc, s_lay.latest_key(["t1", "gone"])) == {}
    client = redis_client(cc.settings)
    try:
        members = await client.zrange(e_lay.recent_key(["ag", 1]), 0, -1, desc=True)
    finally:
        await client.aclose()
    assert [json.loads(m)["step_number"] for m in members] == [6, 5, 4, 3, 2][:RECENT_KEEP]


async def test_too_many_dirty_keys_rebuild_the_sink(cache_catalogue: CacheCatalogue) -> None:
    """Past max_dirty the writer forgets keys and rebuilds the whole sink: stale entries
    (here: one deleted in PostgreSQL while Redis was away) are gone afterwards."""
    cc = cache_catalogue
    proxy = TcpProxy(cc.settings.redis_host, cc.settings.redis_port)
    await proxy.start()
    sink = cc.sink("workflow_states")
    lay = CacheLayout.of(sink)
    registry = CollectorRegistry()
    writer = CacheWriter(cc.with_settings(redis_port=proxy.port), [sink], group="g",
                         registry=registry, max_dirty=3, backoff_cap=0.3)
    await writer.start()
    try:
        await store(cc, "workflow_states", [workflow("t2", "doomed", 4)], writer)
        await settled(writer)
        proxy.cut()
        await store(cc, "workflow_states", [Tomb("t2", "doomed")], writer)
        await store(cc, "workflow_states", [workflow("t2", f"w{i}", 1) for i in range(10)],
                    writer)
        assert metric(registry, "sinkfleet_cache_rebuild_pending", group="g",
                      sink=sink.spec.name) == 1
        proxy.heal()
        await settled(writer, 30)
        assert metric(registry, "sinkfleet_cache_repairs_total", group="g",
                      sink=sink.spec.name, kind="rebuild") == 1
    finally:
        await writer.close()
        await proxy.stop()
    assert await entry(cc, lay.latest_key(["t2", "doomed"])) == {}
    for i in range(10):
        assert (await entry(cc, lay.latest_key(["t2", f"w{i}"])))["v"] == "1"


async def test_start_and_close_with_redis_unreachable(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    proxy = TcpProxy(cc.settings.redis_host, cc.settings.redis_port)
    await proxy.start()
    proxy.cut()
    sink = cc.sink("workflow_states")
    writer = CacheWriter(cc.with_settings(redis_port=proxy.port), [sink], group="g",
                         backoff_cap=0.2)
    try:
        t0 = time.perf_counter()
        await writer.start()
        writer.submit(sink.spec.name, [Change("upsert", {"tenant_id": "t", "workflow_id": "w",
                                                         "version": 1})])
        assert time.perf_counter() - t0 < 0.05
        await async_wait_for(lambda: _true(writer.degraded is not None), 10, "degraded",
                             interval=0.05)
        t0 = time.perf_counter()
        await writer.close(timeout=2)
        assert time.perf_counter() - t0 < 2.5
    finally:
        await proxy.stop()


async def _true(value: Any) -> Any:
    return value


async def test_a_future_timestamp_does_not_pin_the_recent_cache(
        cache_catalogue: CacheCatalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row stamped years ahead is scored as "now + FUTURE_SKEW" when cached (skew 0
    here, to see it within a test): RECENT_KEEP rows arriving after it push it out,
    instead of it holding a slot until its timestamp passes."""
    monkeypatch.setattr(cache_layout, "FUTURE_SKEW", dt.timedelta(0))
    cc = cache_catalogue
    sink = cc.sink("experience_events")
    lay = CacheLayout.of(sink)
    writer = CacheWriter(cc.settings, [sink], group="g", registry=CollectorRegistry())
    await writer.start()
    future = now_us() + 10 * 365 * 86_400_000_000
    try:
        before = now_us()
        await store(cc, "experience_events", [event("f:1", 1, 99, future)], writer)
        await settled(writer)
        after = now_us()
        client = redis_client(cc.settings)
        try:
            key = lay.recent_key(["f:1", 1])
            [(member, pinned)] = await client.zrange(key, 0, -1, withscores=True)
            assert json.loads(member)["step_number"] == 99
            assert before <= pinned <= after  # scored as its arrival, not year +10
            await asyncio.sleep(0.002)
            newer = [event("f:1", 1, s, now_us() + s) for s in range(RECENT_KEEP)]
            await store(cc, "experience_events", newer, writer)
            await settled(writer)
            members = await client.zrange(key, 0, -1, desc=True)
        finally:
            await client.aclose()
        assert [json.loads(m)["step_number"] for m in members] == list(
            range(RECENT_KEEP))[::-1]
    finally:
        await writer.close()


def layout_of(recent: RecentLayout) -> CacheLayout:
    return CacheLayout(sink="s", latest_columns=(), recent_columns=(), jsonb=frozenset(),
                       ids=(), version=None, latest=False, recent=recent, types={})


def test_score_caps_only_timestamps_ahead_of_the_skew() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    recent = RecentLayout(("a",), 5, 60, "ts", "timestamptz")
    lay = layout_of(recent)
    near = now + FUTURE_SKEW - dt.timedelta(microseconds=1)
    cap = score(now + FUTURE_SKEW)
    assert lay.score({"ts": near}, now=now) == score(near)
    assert lay.score({"ts": now + dt.timedelta(days=3650)}, now=now) == cap
    assert lay.score({"ts": now - dt.timedelta(days=1)}, now=now) == score(
        now - dt.timedelta(days=1))
    counted = layout_of(RecentLayout(("a",), 5, 60, "n", "bigint"))
    assert counted.score({"n": 10**15}, now=now) == float(10**15)
