"""5,000 distinct Confluent schema ids against a slow registry that is down at first: the
worker stays in its group and responsive, stores every record whose id resolves, and
dead-letters exactly the records whose id the registry does not know (real Kafka and
PostgreSQL, an http.server registry stub on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.framing import SOE_HEADER_LEN, frame_confluent
from sinkfleet.config import Settings
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.worker.loop import Worker
from tests.support.deadletters import read_all
from tests.support.evolution import Evo, forget, new_evo
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration
RECORDS, BASE = 5000, 100_000  # record i is written with schema id BASE + i
DELAY = 0.02  # seconds the registry takes per answer
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def unknown(schema_id: int) -> bool:
    """The ids the registry answers 404 for: 100 of the 5,000."""
    return (schema_id - BASE) % 50 == 7


class Registry(BaseHTTPRequestHandler):
    schema = "{}"
    down = True  # 503 while set: an outage, not 5,000 unknown ids
    answers: Counter[tuple[int, int]] = Counter()  # (status, id) -> times answered
    lock = threading.Lock()

    def do_GET(self) -> None:  # the http.server API
        time.sleep(DELAY)
        schema_id = int(self.path.rsplit("/", 1)[1])
        status = 503 if Registry.down else 404 if unknown(schema_id) else 200
        body = json.dumps({"schema": self.schema} if status == 200 else
                          {"error_code": 40403 if status == 404 else 50001}).encode()
        with Registry.lock:
            Registry.answers[status, schema_id] += 1
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    Registry.down, Registry.answers = True, Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest_asyncio.fixture
async def evo(stack: Settings, tmp_path: Path) -> AsyncIterator[Evo]:
    made = new_evo(tmp_path, stack)
    yield made
    await forget(made)


async def publish_flood(settings: Settings, topic: str, codec: Codec) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                linger_ms=20)
    await producer.start()
    try:
        for i in range(RECORDS):
            rec = {"id": f"r{i}", "ts": T0 + timedelta(seconds=i), "n": i, "meta": None}
            body = codec.encode(rec)[SOE_HEADER_LEN:]
            await producer.send(topic, frame_confluent(BASE + i, body), key=rec["id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def test_a_flood_of_schema_ids_neither_stalls_the_group_nor_loses_records(
        evo: Evo, registry: str) -> None:
    schema = evo.schema()
    Registry.schema = json.dumps(schema)
    settings, cat = evo.version(schema)
    settings = settings.model_copy(update={"schema_registry_url": registry})
    await apply_topics(settings, cat, say=lambda m: None)
    await migrate(settings, cat, lambda m: None)
    await publish_flood(settings, evo.topic, Codec(schema, SchemaStore()))

    worker = Worker(settings, cat, cat.worker("w"), metrics_port=0)
    prepares: list[float] = []
    prepare = worker.writer_schemas.prepare

    async def timed(data: Any) -> None:
        started = time.monotonic()
        try:
            await prepare(data)
        finally:
            prepares.append(time.monotonic() - started)

    worker.writer_schemas.prepare = timed  # type: ignore[method-assign]
    lags: list[float] = []
    health: list[tuple[int, str]] = []
    heartbeat_ages: list[float] = []

    async def watch() -> None:
        """Loop lag every 50 ms; /healthz and the heartbeat row every second."""
        loop = asyncio.get_running_loop()
        next_probe = loop.time() + 1
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while True:
                before = loop.time()
                await asyncio.sleep(0.05)
                lags.append(loop.time() - before - 0.05)
                if loop.time() >= next_probe and worker.metrics_bound is not None:
                    next_probe = loop.time() + 1
                    url = f"http://127.0.0.1:{worker.metrics_bound}/healthz"
                    async with http.get(url) as resp:
                        health.append((resp.status, await resp.text()))
                    async with pg(settings) as conn:
                        age = await conn.fetchval(
                            "SELECT extract(epoch FROM now() - heartbeat_at) FROM"
                            " sinkfleet.workers WHERE worker_id = $1", worker.worker_id)
                    if age is not None:
                        heartbeat_ages.append(float(age))

    run = asyncio.create_task(worker.run())
    watcher = asyncio.create_task(watch())
    try:
        async def degraded() -> bool:
            return worker.health.state.startswith("degraded: schema-registry: unreachable")

        await async_wait_for(degraded, 60, "the worker to notice the registry outage")
        await asyncio.sleep(3)  # an outage of a few seconds: nothing may be dead-lettered
        assert worker.stats.dead_lettered == 0 and worker.stats.stored == 0
        assert any(text.startswith("degraded: schema-registry: unreachable for")
                   for _, text in health)
        Registry.down = False
        outage_ended = time.monotonic()

        async def settled() -> bool:
            return worker.stats.stored + worker.stats.dead_lettered == RECORDS

        await async_wait_for(settled, 180, f"{RECORDS} records stored or dead-lettered")
        took = time.monotonic() - outage_ended
        await asyncio.sleep(1.5)  # a /healthz probe after the recovery
    finally:
        watcher.cancel()
        worker.stop()
        await asyncio.wait_for(run, 60)
    stats = worker.stats
    assert (stats.stored, stats.dead_lettered, stats.rebalances) == (RECORDS - 100, 100, 1)
    # every id was answered once, except during the outage
    answered = {k: v for k, v in Registry.answers.items() if k[0] != 503}
    assert answered == {(404 if unknown(BASE + i) else 200, BASE + i): 1
                        for i in range(RECORDS)}
    async with pg(settings) as conn:
        rows = {r["id"]: r["n"] for r in await conn.fetch(f'SELECT id, n FROM "{evo.table}"')}
    assert rows == {f"r{i}": i for i in range(RECORDS) if not unknown(BASE + i)}
    dead = await read_all(settings, f"{evo.topic}.dlq", 100)
    reasons = {}
    for msg in dead:
        headers = dict(msg.headers)
        assert headers["sinkfleet.stage"] == b"decode"
        reasons[int.from_bytes(msg.value[1:5], "big")] = (
            headers["sinkfleet.error.message"].decode())
    assert reasons == {
        BASE + i: f"schema id {BASE + i} unknown: the schema registry answered 404 (not"
                  " registered there); replay the record once it is"
        for i in range(RECORDS) if unknown(BASE + i)}
    # responsive throughout: loop lag, the lock held per chunk, /healthz, heartbeats
    print(f"\nflood: settled {took:.1f}s after the outage; loop lag max {max(lags):.3f}s;"
          f" prepare max {max(prepares):.2f}s over {len(prepares)} chunks;"
          f" heartbeat age max {max(heartbeat_ages):.1f}s; {len(health)} /healthz probes")
    assert max(lags) < 0.5
    assert max(prepares) < worker.writer_schemas.registry_deadline + 1.0
    assert all(status == 200 for status, _ in health) and health[-1] == (200, "ok")
    assert heartbeat_ages and max(heartbeat_ages) < 10
