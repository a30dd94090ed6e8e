"""Audit sinks on real Kafka and PostgreSQL: content hashes, per-tenant chains, tamper
detection, append-only for the workers' role."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from sinkfleet.avro.hashing import LEGACY_HASH_VERSION, chain_hash, content_hash
from sinkfleet.config import Settings
from sinkfleet.ops.audit.verify import verify
from sinkfleet.ops.deadletters.inspect import Filter, inspect
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import AUDIT_CHAIN_COLUMNS
from sinkfleet.sink.postgres.roles import worker_password
from sinkfleet.worker.rows import RowBuilder
from tests.support.audit_family import SCHEMA, SINK, TOPIC, entry, publish, superuser
from tests.support.family import (
    Family,
    drain,
    drop_family,
    make_family,
    rewind,
    rows,
    running_worker,
)

pytestmark = pytest.mark.integration

@pytest_asyncio.fixture
async def fam(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await make_family(tmp_path, stack, SCHEMA, TOPIC, SINK, max_records=50)
    yield family
    await drop_family(family)


async def test_entries_are_chained_per_tenant_and_verify(fam: Family) -> None:
    tenants = ["acme", "globex", "initech"]
    published = [entry(t, n) for n in range(40) for t in tenants]
    forged = {**entry("acme", 999), "content_hash": bytes(32)}  # a hash that does not match
    await publish(fam, [*published[:60], forged, *published[60:]])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        assert worker.stats.stored == 120 and worker.stats.dead_lettered == 1
    stored = await rows(fam, f'SELECT * FROM "{fam.table}" ORDER BY tenant_id, chain_seq')
    assert len(stored) == 120
    schema = fam.catalogue.schemas[fam.family]
    for tenant in tenants:
        chain = [r for r in stored if r["tenant_id"] == tenant]
        sent = [r for r in published if r["tenant_id"] == tenant]
        assert [r["chain_seq"] for r in chain] == list(range(1, 41))
        assert [r["entry_id"] for r in chain] == [r["entry_id"] for r in sent]  # offset order
        prev = bytes(32)
        for row, rec in zip(chain, sent, strict=True):
            assert row["ts"] == rec["ts"] and row["actor"] == rec["actor"]
            assert json.loads(row["after"]) == json.loads(rec["after"])
            assert (row["before"] is None) == (rec["before"] is None)
            expected = content_hash(rec, schema, "content_hash")
            assert bytes(row["content_hash"]) == expected
            assert bytes(row["prev_hash"]) == prev
            assert bytes(row["chain_hash"]) == chain_hash(prev, expected)
            prev = bytes(row["chain_hash"])
    result = await verify(fam.settings, fam.catalogue)
    assert result.ok and result.entries == 120 and result.tenants == 3
    dead = await inspect(fam.settings, [f"{fam.topic}.dlq"], Filter.make())
    assert [(d.stage, d.error_class) for d in dead.records] == [("validate", "ValidationError")]
    assert "content_hash does not match" in dead.records[0].headers["sinkfleet.error.message"]


async def test_replay_adds_nothing_and_tampering_is_named(fam: Family) -> None:
    await publish(fam, [entry(t, n) for n in range(25) for t in ("acme", "globex")])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
    before = await rows(fam, f'SELECT * FROM "{fam.table}" ORDER BY entry_id')
    await rewind(fam)
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        assert worker.stats.consumed == 50 and worker.stats.stored == 0
    assert await rows(fam, f'SELECT * FROM "{fam.table}" ORDER BY entry_id') == before

    # the workers' role may not rewrite history
    conn = await asyncpg.connect(**{**fam.settings.pg_connect_kwargs,
                                    "user": fam.settings.pg_worker_user,
                                    "password": worker_password(fam.settings)})
    try:
        for sql in (f'UPDATE "{fam.table}" SET actor = \'x\'', f'DELETE FROM "{fam.table}"'):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()

    # a superuser can (with triggers off); verify names exactly the edited row
    async with pg(fam.settings) as conn:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(f'UPDATE "{fam.table}" SET actor = \'mallory\''
                               " WHERE tenant_id = 'globex' AND chain_seq = 7")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(f'DELETE FROM "{fam.table}" WHERE chain_seq = 1')
    result = await verify(fam.settings, fam.catalogue)
    assert not result.ok and result.entries == 50
    [broken] = result.broken
    assert (broken.tenant, broken.sequence, broken.what, broken.entry_id) == (
        "globex", 7, "content_hash", "globex-0006")
    assert broken.found == bytes(before[31]["content_hash"]).hex()  # globex-0006
    assert (await verify(fam.settings, fam.catalogue, tenant="acme")).ok

    # a removed row breaks the sequence at the row after it
    async with pg(fam.settings) as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(f'DELETE FROM "{fam.table}"'
                           " WHERE tenant_id = 'acme' AND chain_seq = 3")
    result = await verify(fam.settings, fam.catalogue, tenant="acme")
    assert [(b.tenant, b.sequence, b.what, b.expected, b.found) for b in result.broken] == [
        ("acme", 4, "sequence", "3", "4")]

    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sinkfleet", "audit", "verify", "--tenant", "globex", "--json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SINKFLEET_HOME": str(fam.root),
             "SINKFLEET_STATE_DIR": str(fam.settings.state)})
    assert cli.returncode == 1, cli.stderr
    report = json.loads(cli.stdout)
    assert report["ok"] is False and report["entries"] == 25
    assert [(b["tenant"], b["sequence"], b["what"]) for b in report["broken"]] == [
        ("globex", 7, "content_hash")]


async def test_redelivery_with_a_two_column_id_adds_nothing(stack: Settings,
                                                            tmp_path: Path) -> None:
    # Each batch holds one tenant's entries: one distinct tenant_id, many entry_ids. Deduping
    # each id column on its own paired them wrongly, re-chained stored entries, and the
    # partition retried on its primary key forever.
    two = await make_family(tmp_path, stack, SCHEMA, TOPIC,
                            {**SINK, "id": ["tenant_id", "entry_id"]}, max_records=50)
    try:
        await publish(two, [entry(t, n) for t in ("acme", "globex") for n in range(20)])
        async with running_worker(two) as worker:
            await drain(two, worker)
            assert worker.stats.stored == 40
        before = await rows(two, f'SELECT * FROM "{two.table}" ORDER BY tenant_id, chain_seq')
        await rewind(two)
        async with running_worker(two) as worker:
            await drain(two, worker, timeout=30)
            assert (worker.stats.consumed, worker.stats.stored) == (40, 0)
        assert await rows(two, f'SELECT * FROM "{two.table}" ORDER BY tenant_id,'
                               " chain_seq") == before
        assert (await verify(two.settings, two.catalogue)).entries == 40
    finally:
        await drop_family(two)


async def test_every_broken_link_of_every_chain_is_named(fam: Family) -> None:
    await publish(fam, [entry(t, n) for n in range(30) for t in ("acme", "globex")])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
    table = f'"{fam.table}"'
    await superuser(
        fam,
        f"UPDATE {table} SET actor = 'mallory' WHERE tenant_id = 'acme' AND chain_seq = 3",
        f"""UPDATE {table} SET after = '{{"count": 1e6}}' WHERE entry_id = 'acme-0016'""",
        f"UPDATE {table} SET chain_hash = '\\x00' WHERE tenant_id = 'globex'"
        " AND chain_seq = 10",
        f"DELETE FROM {table} WHERE tenant_id = 'globex' AND chain_seq = 25")
    result = await verify(fam.settings, fam.catalogue)
    assert (result.ok, result.entries, result.tenants, result.broken_tenants) == (
        False, 59, 2, 2)
    assert [(b.tenant, b.sequence, b.entry_id, b.what) for b in result.broken] == [
        ("acme", 3, "acme-0002", "content_hash"), ("acme", 17, "acme-0016", "content_hash"),
        ("globex", 10, "globex-0009", "chain_hash"), ("globex", 11, "globex-0010", "prev_hash"),
        ("globex", 26, "globex-0025", "sequence")]
    assert [(b.expected, b.found) for b in result.broken[3:]] == [
        ("00", result.broken[3].found), ("25", "26")]
    assert "edited" in result.broken[0].reason

    env = {**os.environ, "SINKFLEET_HOME": str(fam.root), "COLUMNS": "200",
           "SINKFLEET_STATE_DIR": str(fam.settings.state)}
    cli = [sys.executable, "-m", "sinkfleet", "audit", "verify"]
    text = await asyncio.to_thread(subprocess.run, [*cli, "--limit", "2"], capture_output=True,
                                   text=True, timeout=60, env=env)
    assert text.returncode == 1, text.stderr
    assert "audit BROKEN: 5 broken link(s) in 2 of 2 chain(s); 59 entries checked" in text.stdout
    assert "first 2 of 5 broken link(s)" in text.stdout
    assert "3 more: --limit N, or --json for every broken link" in text.stdout
    assert "globex-0009" not in text.stdout and "acme-0016" in text.stdout
    full = await asyncio.to_thread(subprocess.run, [*cli, "--json", "--limit", "2"],
                                   capture_output=True, text=True, timeout=60, env=env)
    report = json.loads(full.stdout)
    assert (full.returncode, report["broken_count"], report["broken_tenants"]) == (1, 5, 2)
    assert [(b["tenant"], b["sequence"], b["what"]) for b in report["broken"]] == [
        (b.tenant, b.sequence, b.what) for b in result.broken]


async def test_chains_hashed_before_v2_still_verify(fam: Family) -> None:
    """Rows an older worker stored with v1 content hashes verify (counted as legacy);
    new entries chain after them with v2; a v1 hash is no longer accepted on ingest."""
    schema = fam.catalogue.schemas[fam.family]
    records = [entry("acme", n) for n in range(10)]
    v1 = [content_hash(r, schema, "content_hash", version=LEGACY_HASH_VERSION)
          for r in records]
    v2 = [content_hash(r, schema, "content_hash") for r in records]
    differ = sum(a != b for a, b in zip(v1, v2, strict=True))
    assert differ > 0  # "ratio": 0.0 was "0.0" in v1, is "0" in v2
    build = RowBuilder(fam.sink)
    at = build.names.index("content_hash")
    chained, prev = [], bytes(32)
    for seq, (rec, old, new) in enumerate(zip(records, v1, v2, strict=True), start=1):
        row = list(build({**rec, "content_hash": new}))
        row[at] = old
        link = chain_hash(prev, old)
        chained.append((*row, seq, prev, link))
        prev = link
    async with pg(fam.settings) as conn:
        await conn.copy_records_to_table(fam.table, records=chained,
                                         columns=[*build.names, *AUDIT_CHAIN_COLUMNS])
    result = await verify(fam.settings, fam.catalogue)
    assert (result.ok, result.entries, result.legacy) == (True, 10, differ)

    stale = {**entry("acme", 10), "entry_id": "stale"}
    stale["content_hash"] = content_hash(stale, schema, "content_hash",
                                         version=LEGACY_HASH_VERSION)
    assert stale["content_hash"] != content_hash(stale, schema, "content_hash")
    await publish(fam, [entry("acme", n) for n in range(10, 15)] + [stale])
    async with running_worker(fam) as worker:
        await drain(fam, worker)
        assert (worker.stats.stored, worker.stats.dead_lettered) == (5, 1)
    result = await verify(fam.settings, fam.catalogue)
    assert (result.ok, result.entries, result.legacy) == (True, 15, differ)
    dead = await inspect(fam.settings, [f"{fam.topic}.dlq"], Filter.make())
    assert "legacy v1 canonical encoding" in dead.records[0].headers["sinkfleet.error.message"]
