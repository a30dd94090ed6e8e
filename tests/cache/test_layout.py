"""Cache keys, values and scores (pure)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

from sinkfleet.cache.layout import CacheLayout, cache_layouts, score
from sinkfleet.catalogue import load_catalogue
from sinkfleet.keys import split_key

ROOT = Path(__file__).resolve().parents[2]


def test_keys_percent_encode_and_split_back() -> None:
    cat = load_catalogue(ROOT)
    lay = CacheLayout.of(cat.sinks["workflow_states"])
    key = lay.latest_key(["t:1", "wf%2"])
    assert key == "sinkfleet:workflow_states:latest:t%3A1:wf%252"
    assert split_key(key.removeprefix(lay.prefix("latest")).encode(), 2) == ["t:1", "wf%2"]
    events = CacheLayout.of(cat.sinks["experience_events"])
    assert events.recent_key(["agent-1", 7]) == "sinkfleet:experience_events:recent:agent-1:7"


def test_layouts_of_the_catalogue() -> None:
    cat = load_catalogue(ROOT)
    layouts = cache_layouts(list(cat.sinks.values()))
    assert layouts["workflow_states"].latest and layouts["workflow_states"].recent is None
    recent = layouts["experience_events"].recent
    assert recent is not None and recent.by == ("agent_id", "episode_id")
    assert recent.order_by == "ts" and recent.ttl_seconds == 3600
    assert "audit_entries" not in layouts  # no cache
    # latest caches every column; recent only what the record fills (not ingested_at)
    assert "ingested_at" not in layouts["experience_events"].recent_columns


def test_scores_are_exact_microseconds() -> None:
    ts = dt.datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    assert score(ts) == 1740832215123456.0
    assert score(ts.replace(tzinfo=None)) == score(ts)
    assert score(dt.date(1970, 1, 2)) == 86_400_000_000
    assert score(42) == 42.0


def test_row_json_sorted_jsonb_embedded() -> None:
    cat = load_catalogue(ROOT)
    lay = CacheLayout.of(cat.sinks["workflow_states"])
    row = {"workflow_id": "w", "tenant_id": "t", "version": 3, "metadata": '{"b": 1, "a": [1]}',
           "updated_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "not_a_column": 1}
    text = lay.row_json(row, "latest")
    assert text == ('{"metadata":{"a":[1],"b":1},"tenant_id":"t",'
                    '"updated_at":"2025-01-01T00:00:00+00:00","version":3,"workflow_id":"w"}')
    assert "not_a_column" not in json.loads(text)


def test_row_json_writes_uuids_as_postgresql_returns_them() -> None:
    # asyncpg returns its own UUID subclass, which orjson does not take as a uuid.UUID:
    # every cached row of a sink with a uuid column failed to be written (demo: hit rate 0)
    from asyncpg.pgproto.pgproto import UUID as PgUUID

    from sinkfleet.sink.changes import row_json

    raw = bytes(range(16))
    row = {"id": PgUUID(raw), "plain": uuid.UUID(bytes=raw), "d": Decimal("1.50"),
           "b": b"\x00\xff"}
    assert row_json(row) == ('{"b":"00ff","d":"1.50",'
                             '"id":"00010203-0405-0607-0809-0a0b0c0d0e0f",'
                             '"plain":"00010203-0405-0607-0809-0a0b0c0d0e0f"}')
