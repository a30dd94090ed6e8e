"""Flush Redis → `cache rebuild` → identical contents (every member and hash field)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sinkfleet.cache import CacheWriter
from sinkfleet.cache.rebuild import rebuild_caches
from sinkfleet.cache.store import redis_client
from tests.support.cache import CacheCatalogue, Tomb, redis_contents, store
from tests.support.records import event, now_us, policy, workflow

pytestmark = pytest.mark.integration

CACHED = ("workflow_states", "experience_events", "policies")


async def flush(cc: CacheCatalogue) -> None:
    """FLUSHDB for this test's sinks only: the Redis is shared with other tests."""
    client = redis_client(cc.settings)
    try:
        for real in CACHED:
            keys = [k async for k in client.scan_iter(match=f"sinkfleet:{cc.names[real]}:*")]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


async def fill(cc: CacheCatalogue) -> None:
    """A mixed load through the real writers and a CacheWriter, as a worker stores it."""
    sinks = [cc.sink(r) for r in CACHED]
    writer = CacheWriter(cc.settings, sinks, group="g")
    await writer.start()
    base = now_us() - 60_000_000
    try:
        for v in (1, 2, 3):
            await store(cc, "workflow_states", [workflow(f"t{t}", f"wf:{w}", v)
                                                for t in range(3) for w in range(4)], writer)
        await store(cc, "workflow_states", [workflow("t0", "wf:0", 2),  # stale: ignored
                                            Tomb("t1", "wf:1"), Tomb("t2", "wf:3")], writer)
        await store(cc, "policies", [policy("bin-%", 1, None), policy("bin-%", 2, 1),
                                     policy("bin-b", 1, None)], writer)
        for batch in range(3):
            await store(cc, "experience_events",
                        [event(f"agent-{a}", ep, batch * 4 + s, base + (batch * 4 + s) * 1000)
                         for a in range(3) for ep in (1, 2) for s in range(4)], writer)
        assert await writer.drain(20)
    finally:
        await writer.close()


async def test_rebuild_restores_identical_contents(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    before = {r: await redis_contents(cc.settings, cc.names[r]) for r in CACHED}
    assert len(before["workflow_states"]) == 12 - 2 and len(before["policies"]) == 2
    assert len(before["experience_events"]) == 6
    assert all(len(members) == 5 for members in before["experience_events"].values())

    await flush(cc)
    for r in CACHED:
        assert not await redis_contents(cc.settings, cc.names[r])
    results = await rebuild_caches(cc.settings, [cc.sink(r) for r in CACHED])
    by_sink = {r.sink: r for r in results}
    assert by_sink[cc.names["workflow_states"]].latest_keys == 10
    assert by_sink[cc.names["experience_events"]].recent_keys == 6
    after = {r: await redis_contents(cc.settings, cc.names[r]) for r in CACHED}
    assert after == before

    # a stale key of the sink (no row behind it) is deleted by a rebuild
    client = redis_client(cc.settings)
    stale = f"sinkfleet:{cc.names['workflow_states']}:latest:t9:ghost"
    try:
        await client.hset(stale, mapping={"v": "1", "d": "{}"})
        ttls = [await client.ttl(k) for k in after["experience_events"]]
    finally:
        await client.aclose()
    assert all(0 < t <= 600 for t in ttls)
    await rebuild_caches(cc.settings, [cc.sink("workflow_states")])
    assert await redis_contents(cc.settings, cc.names["workflow_states"]) == \
        before["workflow_states"]


def cli(cc: CacheCatalogue, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINKFLEET_HOME": str(cc.root),
           "SINKFLEET_STATE_DIR": str(cc.settings.state)}
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cache_rebuild_cli(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    await fill(cc)
    before = await redis_contents(cc.settings, cc.names["policies"])
    await flush(cc)
    out = cli(cc, "cache", "rebuild", "--sink", cc.names["policies"], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["latest_keys"] == 2
    assert await redis_contents(cc.settings, cc.names["policies"]) == before

    out = cli(cc, "cache", "rebuild", "--sink", cc.names["audit_entries"])
    assert out.returncode == 2
    assert "has no Redis cache" in out.stderr and cc.names["policies"] in out.stderr
    assert "Traceback" not in out.stderr
