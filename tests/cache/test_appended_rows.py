"""Appended rows reach the recent cache as row tuples (``AppendedRows``): the same Redis
contents and write counts as the same changes submitted as ``Change`` dicts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sinkfleet.cache import CacheWriter
from sinkfleet.cache.store import forget_sink, redis_client
from sinkfleet.sink.changes import AppendedRows, Change
from sinkfleet.worker.rows import RowBuilder
from tests.support.cache import RECENT_KEEP, CacheCatalogue, decoded, redis_contents
from tests.support.records import event, now_us


def test_appended_rows_read_as_changes() -> None:
    rows = [(1, "a"), (2, None)]
    appended = AppendedRows(["n", "s"], rows)
    want = [Change("append", {"n": 1, "s": "a"}), Change("append", {"n": 2, "s": None})]
    assert len(appended) == 2
    assert list(appended) == want
    assert appended == want
    assert appended[1] == want[1]
    assert appended[-1:] == want[1:]
    assert appended != want[:1]


def _rows(cc: CacheCatalogue) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Rows of three keys: one over `keep` with ties at the boundary, a duplicated row
    and future timestamps (capped to one score); one at `keep`; one under it."""
    sink = cc.sink("experience_events")
    build = RowBuilder(sink)
    base = now_us()
    records = [event("busy", 1, step, base - 1_000_000 * (step // 3)) for step in range(17)]
    records += [event("busy", 1, 90, base + 10**12), event("busy", 1, 91, base + 2 * 10**12)]
    records += [event("full", 2, step, base - step) for step in range(RECENT_KEEP)]
    records += [event("few", 3, step, base - step) for step in range(2)]
    rows = [build(decoded(sink, r)) for r in records]
    rows.insert(5, rows[0])  # a re-delivered row in the same batch
    return build.names, rows


async def _written(cc: CacheCatalogue, changes: Any) -> tuple[dict[str, Any], float]:
    sink = cc.sink("experience_events")
    registry = CollectorRegistry()
    writer = CacheWriter(cc.settings, [sink], group="g", registry=registry)
    await writer.start()
    try:
        writer.submit(sink.spec.name, changes)
        assert await writer.drain(20)
    finally:
        await writer.close()
    contents = await redis_contents(cc.settings, sink.spec.name)
    client = redis_client(cc.settings)
    try:
        await forget_sink(client, sink.spec.name)
    finally:
        await client.aclose()
    written = registry.get_sample_value("sinkfleet_cache_writes_total", {
        "group": "g", "sink": sink.spec.name, "cache": "recent"}) or 0.0
    return contents, written


@pytest.mark.integration
async def test_appended_rows_write_what_changes_write(cache_catalogue: CacheCatalogue) -> None:
    names, rows = _rows(cache_catalogue)
    as_dicts = [Change("append", dict(zip(names, r, strict=True))) for r in rows]
    want, want_written = await _written(cache_catalogue, as_dicts)
    got, got_written = await _written(cache_catalogue, AppendedRows(names, rows))
    assert sorted(len(v) for v in want.values()) == [2, RECENT_KEEP, RECENT_KEEP]
    assert got_written == want_written == len(rows)
    # Future rows score "now + skew" (capped): the same members, their scores a clock apart
    now = dt.datetime.now(dt.UTC).timestamp() * 1e6

    def exact(contents: dict[str, Any]) -> dict[str, Any]:
        return {k: sorted((m, str(s) if s < now else "capped") for m, s in v)
                for k, v in contents.items()}
    assert exact(got) == exact(want)
    busy = next(v for k, v in want.items() if k.endswith(":busy:1"))
    assert len([s for _, s in busy if s >= now]) == 2
