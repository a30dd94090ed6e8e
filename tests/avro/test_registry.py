"""Schema-registry lookups (``SchemaStore.look_up`` and the blocking ``by_id``) against a
registry stub on 127.0.0.1: what each answer means, the bounds, the negative cache."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.framing import frame_confluent
from sinkfleet.errors import DecodeError, RegistryUnavailable
from tests.support.avro_hostile import EXPERIENCE, check_message

SCHEMA = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}


class Stub(BaseHTTPRequestHandler):
    """id 1..99: the schema; 404 for 404, 503 for 503, 401 for 401, a 2 MB answer for
    413, garbage for 400; ``delay`` seconds per answer; counts requests in flight."""

    delay = 0.0
    asked: list[int] = []
    busy = 0
    most_busy = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # the http.server API
        schema_id = int(self.path.rsplit("/", 1)[1])
        with Stub.lock:
            Stub.asked.append(schema_id)
            Stub.busy += 1
            Stub.most_busy = max(Stub.most_busy, Stub.busy)
        try:
            time.sleep(Stub.delay)
            status = schema_id if schema_id in (401, 404, 503) else 200
            body = json.dumps({"schema": json.dumps(SCHEMA)}).encode()
            if schema_id == 413:
                body = b"{" + b" " * 2_000_000 + b"}"
            elif schema_id == 400:
                body = b"<html>not a registry</html>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (deadline)
        finally:
            with Stub.lock:
                Stub.busy -= 1

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    Stub.delay, Stub.asked, Stub.busy, Stub.most_busy = 0.0, [], 0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_answers_are_told_apart_and_remembered(registry: str) -> None:
    store = SchemaStore(registry, retry_after=30, retry_unreachable=0.3)
    store.inline_lookups = False  # as in workers: decode never asks the registry itself
    codec = Codec(EXPERIENCE, store)
    await store.look_up([5, 404, 503, 401, 413, 400, 5])
    assert sorted(Stub.asked) == [5, 400, 401, 404, 413, 503]
    assert store.by_id(5) == store.by_id(5) and store.settled(5)
    refused = {404: "schema id 404 unknown: the schema registry answered 404",
               413: "schema id 413: registry lookup failed: answer is over 1048576 bytes",
               400: "schema id 400: registry lookup failed: not a registry answer"}
    for schema_id, text in refused.items():
        assert store.settled(schema_id) and not store.unreachable(schema_id)
        with pytest.raises(DecodeError, match=text) as info:
            codec.decode(frame_confluent(schema_id, b"\x00"))
        assert not info.value.retriable
        check_message(info.value)
    for schema_id in (503, 401):  # outages: never settled, decoding them is retriable
        assert store.unreachable(schema_id) and not store.settled(schema_id)
        with pytest.raises(RegistryUnavailable, match=f"HTTP {schema_id}") as info:
            codec.decode(frame_confluent(schema_id, b"\x00"))
        assert info.value.retriable
    with pytest.raises(RegistryUnavailable, match="not looked up"):
        store.by_id(77)
    # the negative cache: refusals for retry_after, outages for retry_unreachable
    Stub.asked = []
    await store.look_up([404, 503, 5])
    assert Stub.asked == []
    await asyncio.sleep(0.35)
    await store.look_up([404, 503, 5])
    assert Stub.asked == [503]


async def test_lookups_are_bounded_and_leave_the_loop_free(registry: str) -> None:
    store = SchemaStore(registry)
    Stub.delay = 0.1
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    await store.look_up(range(1, 41), concurrency=4, deadline=5)
    took = time.monotonic() - started
    ticker.cancel()
    assert all(store.settled(i) for i in range(1, 41))
    assert Stub.most_busy == 4 and 1.0 <= took < 3.0  # 40 answers of 0.1 s, 4 at a time
    assert ticks >= took / 0.01 / 3, "the lookups blocked the event loop"
    # a registry slower than the deadline: the call returns at it, nothing is settled
    Stub.delay = 3.0
    started = time.monotonic()
    await store.look_up(range(50, 60), concurrency=8, deadline=0.5)
    assert time.monotonic() - started < 1.0
    assert not any(store.settled(i) or store.unreachable(i) for i in range(50, 60))
    # a per-request timeout is an outage
    await store.look_up([60], timeout=0.3, deadline=5)
    assert store.unreachable(60)


def test_blocking_lookups_tell_refusals_from_outages(registry: str) -> None:
    store = SchemaStore(registry)
    codec = Codec(EXPERIENCE, store)
    with pytest.raises(DecodeError, match="schema id 404 unknown") as info:
        codec.decode(frame_confluent(404, b"\x00"))
    assert not info.value.retriable
    with pytest.raises(RegistryUnavailable, match="schema id 503: registry lookup failed:"
                                                   " HTTP 503"):
        codec.decode(frame_confluent(503, b"\x00"))
    assert store.by_id(9)["name"] == "R"
