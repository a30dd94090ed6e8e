"""Redis loses the caches while answering (FLUSHALL, a restart without persistence, an
eviction): the writer notices on its next write and fills the sink from PostgreSQL, so a
``recent`` set never stays cut down to the rows written since."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from sinkfleet.cache import CacheLayout, CacheWriter
from sinkfleet.cache.store import redis_client
from tests.support.cache import RECENT_KEEP, CacheCatalogue, entry, metric, settled, store
from tests.support.records import event, now_us, workflow

pytestmark = pytest.mark.integration


async def flushall(cc: CacheCatalogue, *sinks: str) -> None:
    """FLUSHALL as far as these sinks can tell (the Redis is shared with other tests)."""
    client = redis_client(cc.settings)
    try:
        for name in sinks:
            keys = [k async for k in client.scan_iter(match=f"sinkfleet:{name}:*")]
            await client.delete(*keys, CacheLayout.of(cc.catalogue.sinks[name]).filled_key())
    finally:
        await client.aclose()


async def test_caches_lost_by_redis_are_filled_from_postgres(
        cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    states, events = cc.sink("workflow_states"), cc.sink("experience_events")
    s_lay, e_lay = CacheLayout.of(states), CacheLayout.of(events)
    registry = CollectorRegistry()
    writer = CacheWriter(cc.settings, [states, events], group="g", registry=registry)
    await writer.start()
    base = now_us()
    try:
        await store(cc, "workflow_states", [workflow("t1", f"w{i}", 1) for i in range(5)],
                    writer)
        await store(cc, "experience_events", [event("ag", 1, s, base + s) for s in range(8)],
                    writer)
        await settled(writer)
        filled = metric(registry, "sinkfleet_cache_repairs_total", group="g",
                        sink=events.spec.name, kind="fill")

        await flushall(cc, states.spec.name, events.spec.name)
        await store(cc, "workflow_states", [workflow("t1", "w0", 2)], writer)
        await store(cc, "experience_events", [event("ag", 1, 8, base + 8)], writer)
        await settled(writer)
        assert metric(registry, "sinkfleet_cache_repairs_total", group="g",
                      sink=events.spec.name, kind="fill") == filled + 1
    finally:
        await writer.close()

    client = redis_client(cc.settings)
    try:
        members = await client.zrange(e_lay.recent_key(["ag", 1]), 0, -1, desc=True)
    finally:
        await client.aclose()
    # all the newest rows, not just the one written after the flush
    assert [json.loads(str(m))["step_number"] for m in members] == [8, 7, 6, 5, 4][:RECENT_KEEP]
    assert (await entry(cc, s_lay.latest_key(["t1", "w0"])))["v"] == "2"
    for i in range(1, 5):  # ids not written since the flush are back too
        assert (await entry(cc, s_lay.latest_key(["t1", f"w{i}"])))["v"] == "1"
