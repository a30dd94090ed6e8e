"""A state-mode family (workflow state keyed by tenant and workflow): its catalogue, records
and cache reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sinkfleet.cache import CacheLayout
from sinkfleet.cache.store import redis_client
from sinkfleet.producer import Publisher
from tests.support.family import Family
from tests.support.waiting import async_wait_for

SCHEMA = {
    "type": "record", "name": "wf_state", "namespace": "test.sinkfleet",
    "fields": [
        {"name": "tenant_id", "type": "string"},
        {"name": "workflow_id", "type": "string"},
        {"name": "version", "type": "long"},
        {"name": "status", "type": "string"},
        {"name": "detail", "type": "string", "sinkfleet.json": True},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}
TOPIC = {"key": ["tenant_id", "workflow_id"], "config": {"cleanup.policy": "compact"}}
SINK = {
    "mode": "state", "id": ["tenant_id", "workflow_id"], "state": {"version": "version"},
    "cache": {"latest": True},
    "columns": [{"name": f["name"], "from": f["name"]} for f in SCHEMA["fields"]]
    + [{"name": "ingested_at", "default": "now()"}],
}
SINK["columns"][4]["type"] = "jsonb"  # detail


def state(tenant: str, wf: str, version: int, status: str) -> dict[str, Any]:
    return {"tenant_id": tenant, "workflow_id": wf, "version": version, "status": status,
            "detail": f'{{"step": {version}, "note": "v{version} of {wf}"}}',
            "updated_at": datetime(2026, 11, 25, 12, version, tzinfo=UTC)}


async def publish(fam: Family, records: list[dict[str, Any] | tuple[str, ...]]) -> None:
    async with Publisher(fam.settings, catalogue=fam.catalogue) as pub:
        for rec in records:
            if isinstance(rec, tuple):
                await pub.delete(fam.family, *rec)
            else:
                await pub.publish(fam.family, rec)


async def cached(fam: Family, *ids: str) -> dict[str, Any] | None:
    """The latest-state cache entry of ``ids`` ({v, d}), or None."""
    client = redis_client(fam.settings)
    try:
        entry = await client.hgetall(CacheLayout.of(fam.sink).latest_key(ids))
    finally:
        await client.aclose()
    return {"v": int(entry["v"]), "d": json.loads(entry["d"])} if entry else None


async def cache_settles(fam: Family, ids: tuple[str, ...], version: int | None) -> None:
    async def done() -> bool:
        entry = await cached(fam, *ids)
        return (entry is None) if version is None else (entry is not None
                                                         and entry["v"] == version)

    await async_wait_for(done, 20, f"Redis latest of {ids} at version {version}")
