"""Isolated catalogues of real families (renamed tables and sinks), and helpers that store
records through the real sink writers, as a worker does, then hand their changes to a
CacheWriter."""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest_asyncio
import yaml
from prometheus_client import CollectorRegistry

from sinkfleet.avro.hashing import content_hash
from sinkfleet.cache import CacheWriter
from sinkfleet.cache.store import forget_sink, redis_client
from sinkfleet.catalogue import Catalogue, Sink, load_catalogue
from sinkfleet.catalogue.audit import hash_field
from sinkfleet.config import Settings, load_settings
from sinkfleet.keys import join_key
from sinkfleet.sink.changes import Change
from sinkfleet.sink.postgres.audit_writer import AuditWriter
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.sink.postgres.state_writer import StateWriter
from sinkfleet.sink.postgres.writer import AppendWriter
from sinkfleet.worker.rows import RowBuilder
from tests.support.catalogue import ROOT, write_spec

# (family, topic file, sink file) → sink spec overrides
FAMILIES = {
    "workflow_states": ("workflow_state", "workflow_states"),
    "experience_events": ("experience_event", "experience_events"),
    "audit_entries": ("audit_entry", "audit_entries"),
    "policies": ("policy", "policies"),
}
RECENT_KEEP, RECENT_TTL = 5, 600


@dataclass
class CacheCatalogue:
    root: Path
    settings: Settings
    catalogue: Catalogue
    names: dict[str, str]  # real sink name → this catalogue's sink (and table) name
    offsets: dict[str, int] = field(default_factory=dict)

    def sink(self, real: str) -> Sink:
        return self.catalogue.sinks[self.names[real]]

    def with_settings(self, **overrides: Any) -> Settings:
        return load_settings(home=self.root, state_dir=self.settings.state, **overrides)


def make_cache_catalogue(tmp: Path, stack: Settings) -> CacheCatalogue:
    suffix = uuid.uuid4().hex[:8]
    root = tmp / f"cache-{suffix}"
    for sub in ("schemas", "topics", "sinks", "workers"):
        (root / sub).mkdir(parents=True)
    names = {}
    for real, (family, topic) in FAMILIES.items():
        name = f"{real[:20]}_{suffix}"
        names[real] = name
        shutil.copy(ROOT / "schemas" / f"{family}.avsc", root / "schemas")
        shutil.copy(ROOT / "topics" / f"{topic}.yaml", root / "topics")
        small = {"cache": {"recent": {"keep": RECENT_KEEP, "ttl_seconds": RECENT_TTL}}}
        write_spec(root / "sinks" / f"{real}.yaml",
                   yaml.safe_load((ROOT / "sinks" / f"{real}.yaml").read_text()),
                   {"name": name, "table": name},
                   small if real == "experience_events" else {})  # see the trimming
    (root / "workers" / "all.yaml").write_text(
        f"name: all\ngroup: test-cache-{suffix}\nsinks: [{', '.join(names.values())}]\n")
    settings = load_settings(home=root, state_dir=stack.state)
    return CacheCatalogue(root, settings, load_catalogue(root), names)


@pytest_asyncio.fixture
async def cache_catalogue(stack: Settings, tmp_path: Path) -> AsyncIterator[CacheCatalogue]:
    """A migrated catalogue of four families under fresh names; dropped afterwards, with
    their Redis keys."""
    cc = make_cache_catalogue(tmp_path, stack)
    await migrate(cc.settings, cc.catalogue, lambda m: None)
    try:
        yield cc
    finally:
        await drop_cache_catalogue(cc)


async def drop_cache_catalogue(cc: CacheCatalogue) -> None:
    async with pg(cc.settings) as conn:
        for name, sink in cc.catalogue.sinks.items():
            if sink.spec.state is not None:
                await conn.execute(f'DROP TABLE IF EXISTS "{sink.spec.history_table}" CASCADE')
            await conn.execute(f'DROP TABLE IF EXISTS "{sink.spec.table}" CASCADE')
            await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                               f"sink:{name}:%")
    client = redis_client(cc.settings)
    try:
        for name in cc.catalogue.sinks:
            await forget_sink(client, name)
    finally:
        await client.aclose()


def decoded(sink: Sink, record: dict[str, Any]) -> dict[str, Any]:
    """The record as a worker sees it after Avro decoding (timestamps as datetimes …)."""
    schema = fastavro.parse_schema(sink.schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    out: dict[str, Any] = fastavro.schemaless_reader(buf, schema, schema)  # type: ignore[assignment]
    return out


class Tomb:
    def __init__(self, *key: Any) -> None:
        self.key = key


async def store(cc: CacheCatalogue, real: str, items: Iterable[dict[str, Any] | Tomb],
                writer: CacheWriter | None = None) -> list[Change]:
    """Store records (and ``Tomb`` deletions) of one sink in one transaction through its
    real writer; submit the changes to ``writer``; return them."""
    sink = cc.sink(real)
    builder = RowBuilder(sink)
    rows: list[Any] = []
    sources = []
    for item in items:
        offset = cc.offsets.get(real, 0)
        cc.offsets[real] = offset + 1
        sources.append(SimpleNamespace(partition=0, offset=offset))
        if isinstance(item, Tomb):
            rows.append(builder.tombstone(join_key(item.key)))
        else:
            record = decoded(sink, item)
            if sink.spec.audit is not None:  # the hash the publisher would fill in
                record[hash_field(sink)] = content_hash(record, sink.schema, hash_field(sink))
            rows.append(builder(record))
    cls = (StateWriter if sink.spec.state is not None
           else AuditWriter if sink.spec.audit is not None else AppendWriter)
    pg_writer: Any = cls(sink, builder.names)
    async with pg(cc.settings) as conn:
        await pg_writer.prepare(conn)
        async with conn.transaction():
            written = await pg_writer.write(conn, rows, sources)
    changes: list[Change] = list(written.changes)
    if writer is not None:
        writer.submit(sink.spec.name, changes)
    return changes


async def redis_contents(settings: Settings, sink: str) -> dict[str, Any]:
    """Every key of a sink's caches: hashes as dicts, sorted sets as (member, score)."""
    client = redis_client(settings)
    out: dict[str, Any] = {}
    try:
        async for key in client.scan_iter(match=f"sinkfleet:{sink}:*"):
            kind = await client.type(key)
            if kind == "hash":
                out[key] = await client.hgetall(key)
            elif kind == "zset":
                out[key] = await client.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = kind
    finally:
        await client.aclose()
    return out


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def settled(writer: CacheWriter, timeout: float = 20) -> None:
    assert await writer.drain(timeout), "the cache writer did not settle"


async def entry(cc: CacheCatalogue, key: str) -> dict[str, str]:
    client = redis_client(cc.settings)
    try:
        result: dict[str, str] = await client.hgetall(key)
        return result
    finally:
        await client.aclose()
