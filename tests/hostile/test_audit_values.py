"""Hostile audit values through the real worker into real PostgreSQL: numbers jsonb
rewrites (``1e2`` → ``100``, ``-0.0`` → ``0.0``), numbers no double holds, unicode keys.
`audit verify` must pass on them, and must still catch a one-digit edit of a big number."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.ops.audit.verify import verify
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from tests.support.family import Family, drain, drop_family, make_family, rows, running_worker

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "record", "name": "audit_hostile", "namespace": "test.sinkfleet",
    "fields": [
        {"name": "entry_id", "type": "string"},
        {"name": "tenant_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "actor", "type": "string"},
        {"name": "after", "type": ["null", "string"], "sinkfleet.json": True,
         "default": None},
        {"name": "score", "type": "double"},
        {"name": "detail", "type": {"type": "record", "name": "Detail", "fields": [
            {"name": "note", "type": ["null", "string"], "sinkfleet.json": True},
            {"name": "w", "type": "double"}]}},
        {"name": "content_hash", "type": {"type": "fixed", "name": "Sha256", "size": 32}},
    ],
}
SINK = {
    "mode": "audit", "id": ["entry_id"],
    "audit": {"tenant": "tenant_id", "hash": "content_hash"},
    "columns": [{"name": f["name"], "from": f["name"],
                 **({"type": "jsonb"} if f["name"] in ("after", "detail") else {})}
                for f in SCHEMA["fields"]],
}
BIG_INT = "123456789012345678901234567890"
BIG_DEC = "12345678901234567890.123456789"
# JSON texts exactly as a producer in any language may write them (not Python's dumps).
AFTERS = ["1e2", "-0.0", "1e20", "1e21", "1.0", BIG_INT, BIG_DEC, "-0",
          '{"zähler": 1e2, "€": {"😀": [1.0, -0.0, 1E-7]}, "\ufb33": "דּ", "a\\u00e9": null}',
          f'{{"n": {BIG_INT}, "d": {BIG_DEC}, "list": [{BIG_INT}, 9007199254740993]}}',
          "0.1000000000000000055511151231257827", '"\\ud83d\\ude00 \\u2028"']
SCORES = [1e20, -0.0, 100.0, 1e21, 1e-7, 0.1]
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def fam(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await make_family(tmp_path, stack, SCHEMA, {"key": ["tenant_id"]}, SINK,
                               max_records=7)
    yield family
    await drop_family(family)


def entry(tenant: str, n: int) -> dict[str, Any]:
    return {"entry_id": f"{tenant}-{n:03d}", "tenant_id": tenant,
            "ts": T0 + timedelta(seconds=n), "actor": f"agent-{n % 3}",
            "after": AFTERS[n % len(AFTERS)], "score": SCORES[n % len(SCORES)],
            "detail": {"note": AFTERS[(n + 3) % len(AFTERS)], "w": SCORES[(n + 1) % 6]},
            "content_hash": None}


async def tamper(fam: Family, sql: str) -> None:
    async with pg(fam.settings) as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql)


async def test_values_jsonb_rewrites_verify_and_edits_are_all_named(fam: Family) -> None:
    published = [entry(t, n) for n in range(24) for t in ("acme", "globex")]
    async with Publisher(fam.settings, catalogue=fam.catalogue) as pub:
        for rec in published:
            await pub.publish(fam.family, rec)
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        assert (worker.stats.stored, worker.stats.dead_lettered) == (48, 0)
    stored = {r["entry_id"]: r for r in await rows(fam, f'SELECT * FROM "{fam.table}"')}
    # jsonb did rewrite the numbers: these are the cases a float round-trip gets wrong
    assert [stored[f"acme-{n:03d}"]["after"] for n in range(8)] == [
        "100", "0.0", "100000000000000000000", "1000000000000000000000", "1.0", BIG_INT,
        BIG_DEC, "0"]
    assert json.loads(stored["acme-009"]["after"], parse_float=str, parse_int=str) == {
        "n": BIG_INT, "d": BIG_DEC, "list": [BIG_INT, "9007199254740993"]}

    result = await verify(fam.settings, fam.catalogue)
    assert result.broken == []
    assert (result.ok, result.entries, result.tenants) == (True, 48, 2)

    # One digit of a 30-digit integer (a float would not see it) and an actor, in two
    # places of one chain: both are named, and the rest of the chain still verifies.
    edited = BIG_INT[:-1] + "1"
    await tamper(fam, f"""UPDATE "{fam.table}" SET after = '{edited}'::jsonb"""
                      " WHERE entry_id = 'acme-005'")
    await tamper(fam, f"""UPDATE "{fam.table}" SET actor = 'mallory'"""
                      " WHERE entry_id = 'acme-019'")
    result = await verify(fam.settings, fam.catalogue)
    assert (result.ok, result.entries) == (False, 48)
    assert [(b.tenant, b.sequence, b.entry_id, b.what) for b in result.broken] == [
        ("acme", 6, "acme-005", "content_hash"), ("acme", 20, "acme-019", "content_hash")]
    assert [b.found for b in result.broken] == [
        bytes(stored[i]["content_hash"]).hex() for i in ("acme-005", "acme-019")]
