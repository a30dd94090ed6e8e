"""Attacks on `sinkfleet serve` over real HTTP, against the seeded stack: SQL in where,
order_by and columns; huge, malformed and forged cursors; oversized request heads;
slow-loris clients and a connection flood; path traversal in sink names and ids. Each
gets a clear 4xx (JSON from the routes), the data is untouched, and the server serves
others all along."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
import yarl

from sinkfleet.http_server import HttpLimits
from sinkfleet.read.query import Query, SinkQuery
from sinkfleet.read.serve import ReadService, ServeOptions
from sinkfleet.read.sql import find_sink
from sinkfleet.sink.postgres.connect import pg
from tests.read.serve_support import Served, seeded, serve_login, served

__all__ = ["seeded", "served"]
pytestmark = pytest.mark.integration

INJECTIONS = [
    ("where", "state_bin_id=x' OR '1'='1"),
    ("where", "state_bin_id=bin-a'; DROP TABLE {table}; --"),
    ("where", "avg_reward>0; DROP TABLE {table}"),
    ("where", "avg_reward>pg_sleep(5)"),
    ("where", 'avg_reward" > 0 OR "1>0'),
    ("where", "state_bin_id in bin-a,x') OR true --"),
    ("where", "(select 1)=1"),
    ("order_by", "avg_reward; DROP TABLE {table}"),
    ("order_by", "avg_reward DESC, (SELECT pg_sleep(5))"),
    ("order_by", "1"),
    ("columns", "state_bin_id,(SELECT current_user)"),
    ("columns", "*"),
    ("columns", 'state_bin_id" FROM pg_shadow --'),
]


async def count(served: Served, sink: str) -> int:
    async with pg(served.seeded.settings) as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {served.sink(sink)}"))


@pytest.mark.parametrize(("param", "value"), INJECTIONS, ids=lambda v: str(v)[:40])
async def test_sql_in_parameters_is_a_value_or_a_clear_400(served: Served, param: str,
                                                           value: str) -> None:
    table = served.sink("policies")
    started = time.monotonic()
    status, body, _ = await served.get(f"/v1/sinks/{table}/rows",
                                       params={param: value.format(table=table)})
    assert time.monotonic() - started < 3  # no pg_sleep ran
    if status == 200:  # a value compared as a value: only a literal bin-a matches
        assert [r["state_bin_id"] for r in body["rows"]] in ([], ["bin-a"]), value
    else:
        assert status == 400 and body["error"], value
    assert await count(served, "policies") == 7


async def cursor_of(served: Served) -> str:
    _, body, _ = await served.get(f"/v1/sinks/{served.sink('policies')}/rows",
                                  params={"limit": "2", "order_by": "avg_reward"})
    cursor: str = body["next_cursor"]
    return cursor


async def test_huge_malformed_and_forged_cursors(served: Served) -> None:
    path = f"/v1/sinks/{served.sink('policies')}/rows"
    real = await cursor_of(served)
    sink = find_sink(served.seeded.catalogue, served.sink("policies"))
    _, _, keyset = SinkQuery(sink).plan(Query(sink.spec.name, order_by="avg_reward",
                                              limit=2))
    # the checksum key is in the source, so anyone can forge one: the values still go
    # through the column types and the query's filters
    forged = [keyset.encode(v) for v in (
        [{"a": 1}, "bin-a"], ["NaN'; DROP TABLE x", "bin-a"], [1e400, "bin-a"],
        [0.5, ["bin-a"]], [0.5, "x" * 3000])]
    flipped = real[:20] + ("A" if real[20] != "A" else "B") + real[21:]
    for cursor in ["", "=", "%%%", "!!!!", "A" * 5000, real + "A", flipped, real[:-4],
                   "eyJ0eXAiOiJKV1QifQ", *forged]:
        status, body, _ = await served.get(path, params={"order_by": "avg_reward",
                                                         "limit": "2", "cursor": cursor})
        assert status in (200, 400), (cursor[:40], status, body)
        if status == 200:  # a forged position is just a position: rows of this query
            assert all(r["state_bin_id"].startswith("bin-") for r in body["rows"])
        else:  # the cursor's checks, or the column type's (a forged value of a dict)
            assert "cursor" in body["error"] or "refused a value" in body["error"], body
    # longer than a request line may be: refused by the HTTP parser, server unharmed
    status, _, _ = await served.get(path, params={"cursor": "A" * 100_000})
    assert status in (400, 414)
    assert (await served.get("/healthz", None))[0] == 200


async def test_oversized_heads_are_refused(served: Served) -> None:
    path = f"/v1/sinks/{served.sink('policies')}/rows"
    for headers in ({"X-Big": "a" * 20_000},
                    {f"X-{i}": "a" for i in range(200)},
                    {"Last-Event-ID": "A" * 50_000}):
        status, _, _ = await served.get(path, headers=headers)
        assert status in (400, 431), status
    status, _, _ = await served.get(path, headers={
        "Authorization": "Bearer " + "x" * 6000}, tenant=None)
    assert status == 401
    assert (await served.get("/healthz", None))[0] == 200


TRAVERSALS = ["/v1/sinks/../../etc/passwd/rows", "/v1/sinks/%2e%2e/rows",
              "/v1/sinks/..%2F..%2Fetc%2Fpasswd/rows", "/v1/sinks/policies%00/rows",
              "/v1/sinks/policies%22%3B--/rows", "/v1/sinks/%2Fetc%2Fpasswd/rows",
              "/v1/sinks/pg_catalog.pg_authid/rows", "/v1/sinks/sinkfleet.api_tokens/rows",
              "/v1/sinks/{wf}/state/..%2F..%2Ftenant-2/wf-1",
              "/v1/sinks/{wf}/state/tenant-2%2F..%2Ftenant-1/wf-1",
              "/v1/sinks/{wf}/state/../../tenant-2/wf-1"]


@pytest.mark.parametrize("raw", TRAVERSALS)
async def test_path_traversal_reaches_no_other_relation(served: Served, raw: str) -> None:
    url = yarl.URL(served.url + raw.format(wf=served.sink("workflow_states")), encoded=True)
    auth = {"Authorization": f"Bearer {served.tokens['tenant-1']}"}
    async with served.session.get(url, headers=auth) as resp:
        body: Any = await resp.read()
        assert resp.status in (400, 404), (raw, resp.status, body[:200])
        if resp.content_type == "application/json":
            assert "error" in json.loads(body)


@pytest.fixture
async def strict(served: Served) -> Any:
    """A second service with short timeouts and small caps, for timing attacks."""
    login = await serve_login(served.seeded.settings)
    options = ServeOptions(limits=HttpLimits(request_timeout=1.5, write_timeout=2.0,
                                             max_connections=6), token_ttl=60)
    service = ReadService(login, served.seeded.catalogue, options)
    port = await service.start("127.0.0.1", 0)
    try:
        yield port
    finally:
        await service.close()
        async with pg(served.seeded.settings) as conn:
            await conn.execute(f"DROP ROLE IF EXISTS {login.pg_user}")


async def test_slow_loris_is_cut_while_others_are_served(strict: int) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    lorises = [await asyncio.open_connection("127.0.0.1", strict) for _ in range(3)]
    started = time.monotonic()
    cut: dict[int, float] = {}
    served_meanwhile = 0
    async with aiohttp.ClientSession() as session:
        for i in range(len(request)):
            for n, (reader, writer) in enumerate(lorises):
                if n in cut:
                    continue
                if reader.at_eof() or writer.is_closing():
                    cut[n] = time.monotonic() - started
                    continue
                try:
                    writer.write(request[i:i + 1])
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(1024), 0.01)
                    if data == b"":
                        cut[n] = time.monotonic() - started
                except (ConnectionError, TimeoutError):
                    if isinstance(reader.exception(), ConnectionError) or reader.at_eof():
                        cut[n] = time.monotonic() - started
            if len(cut) == len(lorises) or time.monotonic() - started > 6:
                break
            async with session.get(f"http://127.0.0.1:{strict}/healthz") as resp:
                assert resp.status == 200
                served_meanwhile += 1
            await asyncio.sleep(0.25)
    for _, writer in lorises:
        writer.close()
    assert len(cut) == 3, f"slow clients still connected after 6 s: {cut}"
    assert all(1.5 <= s <= 3.5 for s in cut.values()), cut
    assert served_meanwhile >= 4


async def test_a_connection_flood_gets_503_beyond_the_cap(strict: int) -> None:
    held = [await asyncio.open_connection("127.0.0.1", strict) for _ in range(6)]
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", strict)
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
        "error": "too many connections; retry later"}
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.3)
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{strict}/healthz") as resp:
        assert resp.status == 200


async def test_a_request_past_its_deadline_is_a_503(served: Served) -> None:
    login = await serve_login(served.seeded.settings)
    service = ReadService(login, served.seeded.catalogue,
                          ServeOptions(deadline=0.000_001, token_ttl=60))
    port = await service.start("127.0.0.1", 0)
    try:
        auth = {"Authorization": f"Bearer {served.tokens['tenant-1']}"}
        async with served.session.get(
                f"http://127.0.0.1:{port}/v1/sinks/{served.sink('policies')}/rows",
                headers=auth) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert "took longer than" in (await resp.json())["error"]
    finally:
        await service.close()
        async with pg(served.seeded.settings) as conn:
            await conn.execute(f"DROP ROLE IF EXISTS {login.pg_user}")


async def test_requests_beyond_the_cap_get_503_at_once(served: Served) -> None:
    """With one request being answered (a route held open by the test), another gets a
    503 with Retry-After at once — it does not queue — and is served once it is free."""
    from aiohttp import web

    login = await serve_login(served.seeded.settings)
    service = ReadService(login, served.seeded.catalogue,
                          ServeOptions(max_requests=1, max_streams=0, token_ttl=60))
    release, entered = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({})

    service.app.router.add_get("/held", held)
    port = await service.start("127.0.0.1", 0)
    auth = {"Authorization": f"Bearer {served.tokens['tenant-1']}"}
    base = f"http://127.0.0.1:{port}"
    try:
        first = asyncio.create_task(served.session.get(f"{base}/held", headers=auth))
        await asyncio.wait_for(entered.wait(), 5)
        started = time.monotonic()
        async with served.session.get(f"{base}/v1/sinks", headers=auth) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert "requests are being answered" in (await resp.json())["error"]
        assert time.monotonic() - started < 1
        # streams have a cap of their own (0 here), apart from requests
        async with served.session.get(
                f"{base}/v1/sinks/{served.sink('policies')}/stream", headers=auth) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "5"
            assert "event streams are open" in (await resp.json())["error"]
        release.set()
        (await first).release()
        async with served.session.get(f"{base}/v1/sinks", headers=auth) as resp:
            assert resp.status == 200
    finally:
        await service.close()
        async with pg(served.seeded.settings) as conn:
            await conn.execute(f"DROP ROLE IF EXISTS {login.pg_user}")
