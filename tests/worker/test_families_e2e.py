"""Every record family end to end on real Kafka and PostgreSQL: synthetic records →
publisher → worker process → rows, compared field by field with what was published.

append: exactly the published records, once each. state: the newest version per id
(stale writers ignored, tombstones honoured) and every version in the history with
its parent. audit: every entry, with its content hash and a per-tenant chain in
publication order.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.avro.hashing import ZERO_HASH, chain_hash, content_hash
from sinkfleet.catalogue import Sink
from sinkfleet.dev.produce import produce
from sinkfleet.dev.synthetic.base import StateLoad
from sinkfleet.dev.synthetic.loads import LOADS, Tombstone, synthetic_records
from sinkfleet.sink.postgres.connect import pg
from tests.support.catalogue import TestCatalogue
from tests.support.kafka import end_offsets
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration

STATE = sorted(f for f, load in LOADS.items() if issubclass(load, StateLoad))
APPEND = ["learning_metric", "memory_entry", "worker_event"]
N = 1500


def _sink(tc: TestCatalogue) -> Sink:
    return tc.catalogue.sinks[tc.table]


async def run_family(tc: TestCatalogue, log: Path, seed: int) -> list[Any]:
    """Publish N synthetic records of the family, let one worker store them all."""
    records = synthetic_records(tc.family, seed, prefix=f"t{tc.suffix}-")
    result = await produce(tc.settings, tc.catalogue, tc.family, records, N, keep=True)
    assert result.records is not None and len(result.records) == N
    worker = tc.start_worker(log)
    try:
        await async_wait_for(lambda: _stored(tc, N), 120, f"{N} records stored")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, _tail(log)
    assert "dead_lettered=0" in _tail(log).strip().splitlines()[-1], _tail(log)
    return result.records


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _stored(tc: TestCatalogue, n: int) -> bool:
    async with pg(tc.settings) as conn:
        stored = await conn.fetchval("SELECT coalesce(sum(next_offset), 0) FROM"
                                     " sinkfleet.consumer_offsets WHERE group_id = $1", tc.group)
    return bool(stored >= n)


async def fetch(tc: TestCatalogue, sql: str) -> list[Any]:
    async with pg(tc.settings) as conn:
        return list(await conn.fetch(sql))


def _value(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for name in path:
        value = None if value is None else value[name]
    return value


def assert_row_equals(sink: Sink, row: Any, record: dict[str, Any]) -> None:
    """Every column that comes from the record holds exactly the published value."""
    for col in sink.columns:
        if col.source is None:
            continue
        want, got = _value(record, col.source.path), row[col.name]
        if want is None:
            assert got is None, col.name
        elif col.pg_type == "timestamptz":
            assert got == datetime(1970, 1, 1, tzinfo=UTC).fromtimestamp(
                want // 1_000_000, UTC).replace(microsecond=want % 1_000_000), col.name
        elif col.pg_type == "jsonb":
            assert json.loads(got) == json.loads(want), col.name
        elif col.pg_type == "uuid":
            assert str(got) == want, col.name
        elif col.pg_type == "bytea":
            assert bytes(got) == want, col.name
        else:
            assert got == want, col.name


def _id(sink: Sink, record: dict[str, Any] | Any) -> tuple[Any, ...]:
    by_col = {c.name: c for c in sink.columns}
    out = []
    for name in sink.spec.id:
        col = by_col[name]
        assert col.source is not None
        value = _value(record, col.source.path) if isinstance(record, dict) else record[name]
        if col.pg_type == "timestamptz" and isinstance(value, int):
            value = datetime.fromtimestamp(value // 1_000_000, UTC).replace(
                microsecond=value % 1_000_000)
        out.append(str(value) if col.pg_type == "uuid" else value)
    return tuple(out)


@pytest.mark.parametrize("family", APPEND)
async def test_append_family_stores_exactly_what_was_published(
        catalogue_factory: Any, tmp_path: Path, family: str) -> None:
    tc: TestCatalogue = await catalogue_factory(family=family, max_records=400)
    records = await run_family(tc, tmp_path / "worker.log", seed=11)
    sink = _sink(tc)
    rows = {_id(sink, r): r for r in await fetch(tc, f'SELECT * FROM "{tc.table}"')}
    assert len(rows) == N
    assert set(rows) == {_id(sink, r) for r in records}
    for record in records:
        assert_row_equals(sink, rows[_id(sink, record)], record)


def expected_state(items: list[Any], key: tuple[str, ...]) -> tuple[
        dict[tuple[Any, ...], dict[str, Any]], set[tuple[Any, ...]]]:
    """The state a version-guarded sink must end in (docs/sink-modes.md): the newest
    version per id unless a tombstone deleted it, and (id…, version) of each deletion.
    One id lives on one partition, so publication order is offset order."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    newest: dict[tuple[Any, ...], int] = {}
    deleted: dict[tuple[Any, ...], int] = {}  # id -> version of its last deletion
    deletions = set()
    for item in items:
        if isinstance(item, Tombstone):
            latest.pop(item.key, None)
            deleted[item.key] = newest[item.key]
            deletions.add((*item.key, newest[item.key]))
            continue
        ident, version = tuple(item[k] for k in key), item["version"]
        newest[ident] = max(newest.get(ident, 0), version)
        if version > deleted.get(ident, 0) and version > latest.get(ident, {}).get("version", 0):
            latest[ident] = item
    return latest, deletions


@pytest.mark.parametrize("family", STATE)
async def test_state_family_keeps_the_newest_version_and_every_version(
        catalogue_factory: Any, tmp_path: Path, family: str) -> None:
    tc: TestCatalogue = await catalogue_factory(family=family, max_records=400)
    items = await run_family(tc, tmp_path / "worker.log", seed=12)
    sink, key = _sink(tc), LOADS[family].key
    latest, deleted = expected_state(items, key)
    rows = {_id(sink, r): r for r in await fetch(tc, f'SELECT * FROM "{tc.table}"')}
    assert set(rows) == set(latest)
    for ident, record in latest.items():
        assert_row_equals(sink, rows[ident], record)
    assert any(r["version"] for r in latest.values())
    # History: every version once (a stale re-publish is recognised), every deletion at
    # the version it deleted, and each version's parent the one published before it.
    history = await fetch(tc, f'SELECT * FROM "{sink.spec.history_table}"')
    upserts = {(*_id(sink, h), h["version"]): h for h in history if h["op"] == "upsert"}
    published = {(*_id(sink, i), i["version"]) for i in items if not isinstance(i, Tombstone)}
    assert set(upserts) == published
    assert {(*_id(sink, h), h["version"]) for h in history if h["op"] == "delete"} == deleted
    for (*_, version), h in upserts.items():
        assert h["parent_version"] == (version - 1 if version > 1 else None)


async def test_audit_family_stores_every_entry_chained_per_tenant(
        catalogue_factory: Any, tmp_path: Path) -> None:
    from sinkfleet.ops.audit.verify import verify

    tc: TestCatalogue = await catalogue_factory(family="audit_entry", max_records=400)
    items = await run_family(tc, tmp_path / "worker.log", seed=13)
    sink = _sink(tc)
    schema = tc.catalogue.schemas["audit_entry"]
    rows = {str(r["entry_id"]): r for r in await fetch(tc, f'SELECT * FROM "{tc.table}"')}
    assert set(rows) == {i["entry_id"] for i in items}
    for item in items:
        hashed = {**item, "content_hash": content_hash(item, schema, "content_hash")}
        assert_row_equals(sink, rows[item["entry_id"]], hashed)
    # One chain per tenant, in the order the entries were published.
    by_tenant: dict[str, list[str]] = {}
    for item in items:
        by_tenant.setdefault(item["tenant_id"], []).append(item["entry_id"])
    for tenant, ids in by_tenant.items():
        prev = ZERO_HASH
        for seq, entry_id in enumerate(ids, start=1):
            row = rows[entry_id]
            assert (row["chain_seq"], bytes(row["prev_hash"])) == (seq, prev), tenant
            prev = chain_hash(prev, bytes(row["content_hash"]))
            assert bytes(row["chain_hash"]) == prev
    result = await verify(tc.settings, tc.catalogue)
    assert result.ok and result.entries == N, result.as_dict()


async def test_produce_cli_publishes_a_family_with_tombstones(
        catalogue_factory: Any) -> None:

    tc: TestCatalogue = await catalogue_factory(family="job")
    out = _cli(tc, "produce", "--family", "job", "--family", "all", "--count", "10")
    assert out.returncode == 2 and "--family all cannot be combined" in out.stderr
    out = _cli(tc, "produce", "--family", "mixed", "--count", "800", "--seed", "3")
    assert out.returncode == 0, out.stderr
    assert "produced 800 job records" in out.stdout and "tombstones" in out.stdout, out.stdout
    assert sum((await end_offsets(tc.settings, [tc.topic])).values()) == 800


def _cli(tc: TestCatalogue, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], env=tc.env(),
                          cwd=tc.root, capture_output=True, text=True, timeout=120)
