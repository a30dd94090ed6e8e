"""Workers decode records written with any registered version of their family, including
versions registered after they started (real Kafka and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.framing import frame_confluent
from sinkfleet.config import Settings
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.sink.postgres.schema_versions import register_catalogue
from sinkfleet.worker.loop import Worker
from sinkfleet.worker.schemas import WriterSchemas
from tests.support.evolution import EXTRA, NOTE, Evo, forget, new_evo
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def evo(stack: Settings, tmp_path: Path) -> AsyncIterator[Evo]:
    made = new_evo(tmp_path, stack)
    yield made
    await forget(made)


async def register_version(evo: Evo, schema: dict[str, Any]) -> None:
    """An operator runs `sinkfleet schemas register` for a deploy of ``schema``."""
    settings, cat = evo.version(schema)
    async with pg(settings) as conn:
        await register_catalogue(conn, cat, lambda m: None)


def record(i: int, version: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": f"v{version}-{i}", "ts": T0 + timedelta(seconds=i), "n": i,
                           "meta": {"source": f"s{i}"} if i % 2 else None}
    if version >= 2:
        rec["note"] = f"note {version}-{i}"
    if version >= 3:
        rec["extra"] = i
    return rec


async def publish(settings: Settings, topic: str, codec: Codec, records: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for rec in records:
            await producer.send(topic, codec.encode(rec), key=rec["id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def test_a_worker_stores_records_of_every_registered_version(evo: Evo) -> None:
    v1, v2, v3 = evo.schema(), evo.schema(NOTE), evo.schema(NOTE, EXTRA)
    await register_version(evo, v1)  # an earlier deploy
    settings, cat = evo.version(v2, store=("id", "ts", "n", "note"))  # what the worker runs
    await apply_topics(settings, cat, say=lambda m: None)
    await migrate(settings, cat, lambda m: None)  # registers v2
    writers = {v: Codec(s, SchemaStore()) for v, s in ((1, v1), (2, v2), (3, v3))}
    worker = Worker(settings, cat, cat.worker("w"))
    task = asyncio.create_task(worker.run())
    try:
        async def assigned() -> bool:
            return bool(worker.assignment)

        await async_wait_for(assigned, 60, "the worker's partitions")
        store = worker.writer_schemas.store
        assert store.knows(writers[1].fingerprint)  # loaded at start
        assert not store.knows(writers[3].fingerprint)
        await register_version(evo, v3)  # registered after the worker started
        sent = {v: [record(i, v) for i in range(40)] for v in (3, 1, 2)}
        for v, records in sent.items():
            await publish(settings, evo.topic, writers[v], records)

        async def stored() -> bool:
            async with pg(settings) as conn:
                return await conn.fetchval(f'SELECT count(*) FROM "{evo.table}"') >= 120

        await async_wait_for(stored, 60, "120 rows")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
    assert worker.stats.dead_lettered == 0
    assert worker.writer_schemas.lookups == 1  # version 3, once
    async with pg(settings) as conn:
        rows = {r["id"]: dict(r) for r in await conn.fetch(f'SELECT * FROM "{evo.table}"')}
    expected = {rec["id"]: {"id": rec["id"], "ts": rec["ts"], "n": rec["n"],
                            "note": rec.get("note", "n/a")}  # v1 records: the default
                for records in sent.values() for rec in records}
    assert rows == expected


class _Registry(BaseHTTPRequestHandler):
    """A Confluent schema registry that takes its time."""

    schema = "{}"

    def do_GET(self) -> None:  # the http.server API
        time.sleep(0.5)
        body = json.dumps({"schema": self.schema}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_lookups_are_rate_limited_and_registry_calls_leave_the_loop_free(
        evo: Evo, slow_registry: str) -> None:
    settings, cat = evo.version(evo.schema())
    await migrate(settings, cat, lambda m: None)
    store = SchemaStore(slow_registry)
    known = WriterSchemas(settings, store, [evo.family], retry_after=0.3)
    v2 = Codec(evo.schema(NOTE), SchemaStore())
    chunk = {"tp": [SimpleNamespace(value=v2.encode(record(1, 2)))]}
    try:
        await known.prepare(chunk)  # unknown, not registered: one lookup
        await known.prepare(chunk)  # within retry_after: no lookup
        assert known.lookups == 1 and not store.knows(v2.fingerprint)
        await register_version(evo, evo.schema(NOTE))
        await asyncio.sleep(0.35)
        await known.prepare(chunk)
        assert known.lookups == 2 and store.knows(v2.fingerprint)
        # A Confluent id is fetched in a thread: the event loop keeps running meanwhile.
        _Registry.schema = json.dumps(evo.schema(NOTE, EXTRA))
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        body = {"tp": [SimpleNamespace(value=frame_confluent(7, b""))]}
        await known.prepare(body)
        ticker.cancel()
        assert ticks >= 20, "the registry lookup blocked the event loop"
        assert not store.needs_lookup(7) and store.by_id(7)["name"].endswith("Evo")
    finally:
        await known.close()
