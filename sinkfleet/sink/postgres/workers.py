"""Listing sinkfleet.workers, the table each worker's heartbeat refreshes: operator
tools read it here, without importing the worker."""

from __future__ import annotations

from typing import Any

import asyncpg

LOST_AFTER_SECONDS = 30  # no heartbeat for this long: the worker is reported lost


async def list_workers(conn: asyncpg.Connection, groups: list[str] | None = None
                       ) -> list[dict[str, Any]]:
    """Workers seen in the last hour, with 'lost' for those whose heartbeat stopped."""
    rows = await conn.fetch(
        "SELECT *, extract(epoch FROM now() - heartbeat_at) AS silent_seconds"
        " FROM sinkfleet.workers WHERE heartbeat_at > now() - interval '1 hour'"
        " AND ($1::text[] IS NULL OR group_id = ANY($1)) ORDER BY group_id, worker_id",
        groups)
    out = []
    for r in rows:
        item = dict(r)
        silent = float(item.pop("silent_seconds"))
        if item["state"] != "stopped" and silent > LOST_AFTER_SECONDS:
            item["state"] = "lost"
        item["silent_seconds"] = round(silent, 1)
        for key in ("started_at", "heartbeat_at"):
            item[key] = item[key].timestamp()
        out.append(item)
    return out
