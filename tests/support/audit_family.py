"""An audit-mode family (entries chained per tenant): its catalogue, records, and writes
that bypass the append-only triggers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from tests.support.family import Family

SCHEMA = {
    "type": "record", "name": "audit_rec", "namespace": "test.sinkfleet",
    "fields": [
        {"name": "entry_id", "type": "string"},
        {"name": "tenant_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "actor", "type": "string"},
        {"name": "action", "type": "string"},
        {"name": "before", "type": ["null", "string"], "sinkfleet.json": True,
         "default": None},
        {"name": "after", "type": "string", "sinkfleet.json": True},
        {"name": "provenance", "type": ["null", {
            "type": "record", "name": "Provenance", "fields": [
                {"name": "task_id", "type": "string"},
                {"name": "step", "type": "int"},
                {"name": "weight", "type": "float"}]}], "default": None},
        {"name": "content_hash", "type": {"type": "fixed", "name": "Sha256", "size": 32}},
    ],
}
TOPIC = {"key": ["tenant_id"]}
SINK = {
    "mode": "audit", "id": ["entry_id"],
    "audit": {"tenant": "tenant_id", "hash": "content_hash"},
    "columns": [{"name": f["name"], "from": f["name"]} for f in SCHEMA["fields"]],
    "indexes": [{"columns": ["tenant_id", "ts"]}, {"columns": ["actor"]}],
}
for _col in SINK["columns"]:
    if _col["name"] in ("before", "after"):
        _col["type"] = "jsonb"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def entry(tenant: str, n: int) -> dict[str, Any]:
    return {"entry_id": f"{tenant}-{n:04d}", "tenant_id": tenant,
            "ts": T0 + timedelta(seconds=n), "actor": f"agent-{n % 3}",
            "action": "update_state",
            "before": None if n == 0 else json.dumps({"count": n - 1, "ünï": "ç"}),
            "after": json.dumps({"count": n, "ratio": n / 7}),
            "provenance": None if n % 2 else {"task_id": f"task-{n}", "step": n,
                                              "weight": 0.1 * n},
            "content_hash": None}


async def publish(fam: Family, records: list[dict[str, Any]]) -> None:
    async with Publisher(fam.settings, catalogue=fam.catalogue) as pub:
        for rec in records:
            await pub.publish(fam.family, rec)


async def superuser(fam: Family, *statements: str) -> None:
    """Run ``statements`` with the append-only triggers off (what an attacker with the
    owner's rights could do)."""
    async with pg(fam.settings) as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql in statements:
            await conn.execute(sql)
