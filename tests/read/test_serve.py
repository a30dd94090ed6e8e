"""`sinkfleet serve` end to end over real HTTP: the service in-process on a free port,
reading the seeded catalogue (published to Kafka, stored by a real worker) as a login
that is a member of sinkfleet_serve, with one token per tenant."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sys
import uuid
from typing import Any

import aiohttp
import pytest

from sinkfleet.producer import Publisher
from sinkfleet.read.reader import Reader
from sinkfleet.read.serve.replies import dumps
from sinkfleet.read.serve.tokens import create_token, revoke_token
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.worker.loop import Worker
from tests.read.query_support import AUDITS, MEMORIES, POLICIES, memory
from tests.read.serve_support import Served, seeded, served
from tests.support.catalogue import ROOT, catalogue_env
from tests.support.waiting import async_wait_for

__all__ = ["seeded", "served"]
pytestmark = pytest.mark.integration


def plain(rows: Any) -> Any:
    """Rows as the service writes them (JSON), to compare with the Reader's."""
    return json.loads(dumps(rows))


async def test_sinks_lists_columns_orders_and_filters(served: Served) -> None:
    status, body, _ = await served.get("/v1/sinks")
    assert status == 200
    by_name = {s["name"]: s for s in body["sinks"]}
    assert set(by_name) == set(served.seeded.catalogue.sinks)
    wf = by_name[served.sink("workflow_states")]
    assert wf["mode"] == "state" and wf["tenant"] is True
    assert wf["id"] == ["tenant_id", "workflow_id"] and wf["time_column"] is None
    # the token's tenant is fixed, so the tenant indexes' later columns are orderable
    assert wf["orderable"] == ["tenant_id", "workflow_id", "status", "updated_at"]
    assert wf["filters"]["status"] == ["=", "!=", "<", "<=", ">", ">=", "in", "between",
                                       "is null", "is not null"]
    assert wf["filters"]["metadata"] == ["is null", "is not null"]
    mem = by_name[served.sink("memory_entries")]
    assert mem["filters"]["tags"] == ["contains", "overlaps", "is null", "is not null"]
    assert {"name": "tags", "type": "text[]", "nullable": True} in mem["columns"] or \
        {"name": "tags", "type": "text[]", "nullable": False} in mem["columns"]


SEED_QUERIES = [
    ("policies", {"order_by": "avg_reward", "desc": "true"}),
    ("experience_events", {"desc": "true", "limit": "10"}),
    ("experience_events", {"where": "reward_homeostasis+reward_curiosity+reward_efficiency"
                                    "+reward_goal>0.5", "desc": "true"}),
    ("workflow_states", {"where": "status=failed"}),
    ("memory_entries", {"where": "tags contains important"}),
    ("jobs", {"where": "status=running", "order_by": "spawned_at"}),
    ("agent_workers", {"where": "status=active", "order_by": "expiry_at",
                       "columns": "worker_id,expiry_at"}),
]


@pytest.mark.parametrize(("sink", "params"), SEED_QUERIES, ids=lambda v: str(v))
async def test_rows_are_the_readers_rows(served: Served, sink: str,
                                         params: dict[str, str]) -> None:
    status, body, _ = await served.get(f"/v1/sinks/{served.sink(sink)}/rows", params=params)
    assert status == 200, body
    where = [params["where"]] if "where" in params else []
    columns = params["columns"].split(",") if "columns" in params else None
    async with Reader(served.seeded.settings, served.seeded.catalogue,
                      tenant="tenant-1") as r:
        page = await r.query(served.sink(sink), where, order_by=params.get("order_by"),
                             newest_first="desc" in params,
                             limit=int(params.get("limit", 100)), columns=columns)
    assert body == {"rows": plain(page.rows), "next_cursor": page.next_cursor}
    assert body["rows"], "every seed query has rows"


async def test_rows_exact_fields_and_order(served: Served) -> None:
    status, body, _ = await served.get(
        f"/v1/sinks/{served.sink('policies')}/rows",
        params={"order_by": "avg_reward", "desc": "1", "columns": "state_bin_id,avg_reward"})
    assert status == 200
    assert body == {"next_cursor": None, "rows": [
        {"state_bin_id": b, "avg_reward": a} for b, a in [
            ("bin-e", 0.9), ("bin-g", 0.75), ("bin-f", 0.75), ("bin-c", 0.75),
            ("bin-a", 0.75), ("bin-d", 0.5), ("bin-b", 0.25)]]}
    status, body, _ = await served.get(f"/v1/sinks/{served.sink('workflow_states')}/rows",
                                       params=[("where", "status=failed"),
                                               ("columns", "tenant_id,workflow_id,error")])
    assert body["rows"] == [{"tenant_id": "tenant-1", "workflow_id": "wf-1", "error": "boom"},
                            {"tenant_id": "tenant-1", "workflow_id": "wf-3", "error": "boom"}]


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
async def test_pages_concatenate_to_the_whole_result(served: Served, limit: int) -> None:
    path = f"/v1/sinks/{served.sink('policies')}/rows"
    base = {"order_by": "avg_reward", "desc": "true"}
    _, whole, _ = await served.get(path, params=base)
    got, cursor, pages = [], None, 0
    while True:
        params = {**base, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        status, body, _ = await served.get(path, params=params)
        assert status == 200 and len(body["rows"]) <= limit
        got += body["rows"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert got == whole["rows"] and len(got) == len(POLICIES)
    assert pages == -(-len(POLICIES) // limit)


async def test_state_etag_and_304(served: Served) -> None:
    wf = served.sink("workflow_states")
    status, row, headers = await served.get(f"/v1/sinks/{wf}/state/tenant-1/wf-1")
    assert status == 200
    assert (row["tenant_id"], row["workflow_id"], row["status"], row["error"]) == (
        "tenant-1", "wf-1", "failed", "boom")
    tag = headers["ETag"]
    assert tag.startswith('"') and headers["Cache-Control"] == "private, no-cache"
    for given in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        status, body, again = await served.get(f"/v1/sinks/{wf}/state/tenant-1/wf-1",
                                               headers={"If-None-Match": given})
        assert (status, body, again["ETag"]) == (304, "", tag)
    status, _, _ = await served.get(f"/v1/sinks/{wf}/state/tenant-1/wf-1",
                                    headers={"If-None-Match": '"stale"'})
    assert status == 200
    status, _, other = await served.get(f"/v1/sinks/{wf}/state/tenant-1/wf-2")
    assert status == 200 and other["ETag"] != tag


async def test_history_and_missing_ids(served: Served) -> None:
    wf = served.sink("workflow_states")
    status, body, _ = await served.get(f"/v1/sinks/{wf}/state/tenant-1/wf-3/history")
    assert status == 200
    (version,) = body["rows"]
    assert (version["workflow_id"], version["version"], version["op"],
            version["parent_version"]) == ("wf-3", 1, "upsert", None)
    status, body, _ = await served.get(f"/v1/sinks/{wf}/state/tenant-1/nope")
    assert status == 404 and "no state for id (tenant-1, nope)" in body["error"]
    status, body, _ = await served.get(f"/v1/sinks/{wf}/state/tenant-1")
    assert status == 400 and "keyed by (tenant_id, workflow_id)" in body["error"]
    status, body, _ = await served.get(f"/v1/sinks/{served.sink('jobs')}/state/job-1")
    assert status == 200 and body["status"] == "running"
    status, body, _ = await served.get(
        f"/v1/sinks/{served.sink('experience_events')}/state/x/y")
    assert status == 400 and "this needs a state sink" in body["error"]


async def test_audit_trail_is_the_tokens_tenants(served: Served) -> None:
    audit = served.sink("audit_entries")
    for tenant in ("tenant-1", "tenant-2"):
        status, body, _ = await served.get(f"/v1/sinks/{audit}/audit", tenant)
        assert status == 200
        assert [e["action"] for e in body["rows"]] == [
            a["action"] for a in AUDITS if a["tenant_id"] == tenant]
        assert [e["chain_seq"] for e in body["rows"]] == list(
            range(1, len(body["rows"]) + 1))
    status, body, _ = await served.get(f"/v1/sinks/{audit}/audit",
                                       params={"actor": "agent-1"})
    assert [e["action"] for e in body["rows"]] == ["act-1", "act-4"]


async def test_errors_are_json_and_name_what_was_wrong(served: Served) -> None:
    rows = f"/v1/sinks/{served.sink('policies')}/rows"
    cases = [
        (rows, {"where": "nosuch=1"}, 400, "no column 'nosuch'"),
        (rows, {"where": "avg_reward>lots"}, 400, "'lots' is not a valid double precision"),
        (rows, {"order_by": "total_executions"}, 400, "cannot order"),
        (rows, {"limit": "10001"}, 400, "above the cap of 10,000"),
        (rows, {"limit": "x"}, 400, "limit must be an integer"),
        (rows, {"desc": "maybe"}, 400, "desc must be true or false"),
        (rows, {"cursor": "garbage"}, 400, "the cursor is damaged"),
        (rows, {"colums": "a"}, 400, "unknown parameter 'colums'"),
        (rows, {"columns": "state_bin_id,secret"}, 400, "no column 'secret'"),
        ("/v1/sinks/nosuch/rows", None, 404, "no sink 'nosuch'"),
        ("/v2/whatever", None, 404, "no route"),
    ]
    for path, params, status, text in cases:
        got, body, headers = await served.get(path, params=params)
        assert (got, headers["Content-Type"]) == (status, "application/json"), (
            path, params, body)
        assert text in body["error"], (path, params, body)


async def test_tokens_are_needed_but_for_healthz(served: Served) -> None:
    assert (await served.get("/healthz", None))[:2] == (200, {"status": "ok"})
    for headers in ({}, {"Authorization": "Bearer sft_made-up"}, {"Authorization": "sft_x"},
                    {"Authorization": f"Basic {served.tokens['tenant-1']}"}):
        for path in ("/v1/sinks", "/openapi.json", "/metrics",
                     f"/v1/sinks/{served.sink('policies')}/rows"):
            status, body, got = await served.get(path, None, headers=headers)
            assert status == 401, (path, headers)
            assert "Authorization: Bearer" in body["error"]
            assert got["WWW-Authenticate"] == 'Bearer realm="sinkfleet"'
    async with pg(served.seeded.settings) as conn:
        token, token_id = await create_token(conn, "tenant-1", "tests")
        ok = {"Authorization": f"Bearer {token}"}
        assert (await served.get("/v1/sinks", None, headers=ok))[0] == 200
        assert await revoke_token(conn, token_id)
        assert not await revoke_token(conn, token_id)  # once
    assert (await served.get("/v1/sinks", None, headers=ok))[0] == 401  # ttl 0 here


async def test_metrics_have_per_route_latency_histograms(served: Served) -> None:
    for _ in range(3):
        await served.get(f"/v1/sinks/{served.sink('policies')}/rows")
    status, text, _ = await served.get("/metrics")
    assert status == 200
    lines = [line for line in text.splitlines() if line.startswith(
        'sinkfleet_http_request_duration_seconds_count{method="GET",'
        'route="/v1/sinks/{sink}/rows",status="200"}')]
    assert len(lines) == 1 and float(lines[0].rsplit(" ", 1)[1]) >= 3
    assert 'le="0.005"' in text and "sinkfleet_http_requests_in_flight" in text


async def test_openapi_document_is_served(served: Served) -> None:
    status, doc, _ = await served.get("/openapi.json")
    assert status == 200 and doc["openapi"] == "3.0.3"
    assert set(doc["paths"]) == {
        "/healthz", "/openapi.json", "/metrics", "/v1/sinks", "/v1/sinks/{sink}/rows",
        "/v1/sinks/{sink}/state/{id}", "/v1/sinks/{sink}/state/{id}/history",
        "/v1/sinks/{sink}/audit", "/v1/sinks/{sink}/stream", "/v1/sinks/{sink}/windows"}
    rows = doc["paths"]["/v1/sinks/{sink}/rows"]["get"]
    assert [p["name"] for p in rows["parameters"]] == [
        "sink", "where", "order_by", "desc", "limit", "cursor", "columns"]
    assert rows["parameters"][0]["schema"]["enum"] == sorted(served.seeded.catalogue.sinks)


# --- tenants kept apart, over HTTP --------------------------------------------------------
async def test_a_token_never_reads_another_tenant(served: Served) -> None:
    wf, mem = served.sink("workflow_states"), served.sink("memory_entries")
    audit, tasks = served.sink("audit_entries"), served.sink("task_states")
    for crafted in (["tenant_id=tenant-2"], ["tenant_id!=tenant-1"],
                    ["tenant_id in tenant-1,tenant-2"], ["tenant_id is not null"]):
        for sink in (wf, mem, audit):
            status, body, _ = await served.get(f"/v1/sinks/{sink}/rows",
                                               params=[("where", w) for w in crafted])
            assert status == 200
            assert {r["tenant_id"] for r in body["rows"]} <= {"tenant-1"}, (sink, crafted)
    for path in (f"/v1/sinks/{wf}/state/tenant-2/wf-1", f"/v1/sinks/{wf}/state/tenant-2/wf-9",
                 f"/v1/sinks/{tasks}/state/tenant-2/wf-1/task-1"):
        status, body, _ = await served.get(path)
        assert status == 404, path
    for path in (f"/v1/sinks/{wf}/state/tenant-2/wf-1/history",
                 f"/v1/sinks/{tasks}/state/tenant-2/wf-1/task-1/history"):
        assert (await served.get(path))[:2] == (200, {"rows": []}), path
    status, body, _ = await served.get(f"/v1/sinks/{mem}/rows",
                                       params={"where": "tags contains secret"})
    assert body == {"rows": [], "next_cursor": None}
    # tenant-2's cursor, replayed by tenant-1
    _, page, _ = await served.get(f"/v1/sinks/{wf}/rows", "tenant-2", params={"limit": "1"})
    assert page["rows"][0]["tenant_id"] == "tenant-2" and page["next_cursor"]
    status, body, _ = await served.get(f"/v1/sinks/{wf}/rows",
                                       params={"limit": "1", "cursor": page["next_cursor"]})
    assert status == 400 and "belongs to another query" in body["error"]
    # whole sinks: each token sees exactly its tenant's rows
    for tenant in ("tenant-1", "tenant-2"):
        _, body, _ = await served.get(f"/v1/sinks/{mem}/rows", tenant)
        assert sorted(r["entry_id"] for r in body["rows"]) == sorted(
            m["entry_id"] for m in MEMORIES if m["tenant_id"] == tenant)


# --- the stream -------------------------------------------------------------------------
async def read_events(resp: aiohttp.ClientResponse, n: int, timeout: float
                      ) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    event: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        while len(out) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if not line:
                if "data" in event:
                    out.append(event)
                event = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            event[key] = value.removeprefix(" ")
    return out


async def store(served: Served, records: list[dict[str, Any]]) -> None:
    """Publish memory entries and run the catalogue's worker until they are stored."""
    seeded = served.seeded
    async with Publisher(seeded.settings, catalogue=seeded.catalogue) as pub:
        for record in records:
            await pub.publish("memory_entry", record)
    worker = Worker(seeded.settings, seeded.catalogue, seeded.catalogue.worker("w"))
    task = asyncio.create_task(worker.run())
    ids = [uuid.UUID(r["entry_id"]) for r in records]
    try:
        async def stored() -> bool:
            async with pg(seeded.settings) as conn:
                return int(await conn.fetchval(
                    f"SELECT count(*) FROM {served.sink('memory_entries')}"
                    " WHERE entry_id = ANY($1)", ids)) == len(ids)

        await async_wait_for(stored, 90, "the new memory entries stored")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def test_the_stream_delivers_rows_stored_after_it_opened(served: Served) -> None:
    mem = served.sink("memory_entries")
    url = f"{served.url}/v1/sinks/{mem}/stream"
    auth = {"Authorization": f"Bearer {served.tokens['tenant-1']}"}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fresh = [memory("tenant-2", 900, ["secret"]), memory("tenant-1", 901, ["new"]),
             memory("tenant-1", 902, ["new"])]
    for i, record in enumerate(fresh):
        record["ts"] = now + dt.timedelta(seconds=i)
    params = {"columns": "entry_id,tenant_id,tags"}
    async with served.session.get(url, headers=auth, params=params) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        await asyncio.sleep(1)  # the stream is open (its start is the newest row now)
        await store(served, fresh)
        events = await read_events(resp, 2, 30)
        assert [e["event"] for e in events] == ["row", "row"]
        assert [json.loads(e["data"]) for e in events] == [
            {"entry_id": r["entry_id"], "tenant_id": "tenant-1", "tags": ["new"]}
            for r in fresh[1:]]
        with pytest.raises(TimeoutError):  # tenant-2's row never comes
            await read_events(resp, 1, 2)
    # reconnecting after the first event gives exactly the second
    resume = {**auth, "Last-Event-ID": events[0]["id"]}
    async with served.session.get(url, headers=resume, params=params) as resp:
        (again,) = await read_events(resp, 1, 10)
        assert again["id"] == events[1]["id"] and again["data"] == events[1]["data"]
    # tenant-2's stream from the same point sees its own row only
    auth2 = {"Authorization": f"Bearer {served.tokens['tenant-2']}"}
    async with served.session.get(url, headers={**auth2, "Last-Event-ID": events[0]["id"]},
                                  params=params) as resp:
        assert resp.status == 400  # tenant-1's cursor is not tenant-2's stream
        assert "belongs to another query" in (await resp.json())["error"]


# --- the commands -------------------------------------------------------------------------
async def sinkfleet(served: Served, *args: str, env: dict[str, str] | None = None
                    ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sinkfleet", *args, cwd=ROOT,
        env=env or catalogue_env(served.seeded.root, served.seeded.settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_token_commands_and_the_serve_command(served: Served) -> None:
    code, out, err = await sinkfleet(served, "serve", "token", "create", "--tenant",
                                     "tenant-2", "--note", "tests")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("sft_") and len(token) == 47 and token not in err
    token_id = re.search(r"token (\w{12}) for tenant 'tenant-2'", err).group(1)  # type: ignore[union-attr]
    code, out, _ = await sinkfleet(served, "serve", "token", "list", "--json")
    listed = {t["token_id"]: t for t in json.loads(out)}
    assert listed[token_id]["tenant"] == "tenant-2" and listed[token_id]["revoked_at"] is None
    assert token not in out
    # `sinkfleet serve` as a process, logged in as the service's login
    env = catalogue_env(served.seeded.root, served.seeded.settings)
    login = served.service.settings
    assert login.pg_password is not None
    env.update(SINKFLEET_PG_USER=login.pg_user,
               SINKFLEET_PG_PASSWORD=login.pg_password.get_secret_value())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sinkfleet", "serve", "--port", "0", cwd=ROOT, env=env,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+) ", line).group(1))  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/v1/sinks/{served.sink('workflow_states')}/rows"
        auth = {"Authorization": f"Bearer {token}"}
        async with served.session.get(url, headers=auth) as resp:
            body = await resp.json()
        assert resp.status == 200
        assert [r["workflow_id"] for r in body["rows"]] == ["wf-1", "wf-9"]  # tenant-2's
        code, out, err = await sinkfleet(served, "serve", "token", "revoke", token_id)
        assert (code, out.strip()) == (0, "revoked"), err
        code, _, err = await sinkfleet(served, "serve", "token", "revoke", token_id)
        assert code == 2 and "no live token matches" in err
        async def refused() -> bool:  # the process caches tokens 5 s
            async with served.session.get(url, headers=auth) as resp:
                return resp.status == 401

        await async_wait_for(refused, 15, "the revoked token refused")
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0  # SIGTERM: a clean stop


async def test_a_login_without_the_token_grant_says_so(served: Served) -> None:
    """Run as a plain reader login (not a member of sinkfleet_serve), the service cannot
    read the token table: a 500 saying which login to use, never a token accepted."""
    from sinkfleet.read.serve import ReadService

    service = ReadService(served.seeded.reader, served.seeded.catalogue)
    port = await service.start("127.0.0.1", 0)
    try:
        auth = {"Authorization": f"Bearer {served.tokens['tenant-1']}"}
        async with served.session.get(f"http://127.0.0.1:{port}/v1/sinks",
                                      headers=auth) as resp:
            assert resp.status == 500
            assert "log in as sinkfleet_serve_login" in (await resp.json())["error"]
    finally:
        await service.close()


async def test_rows_stored_out_of_time_order_are_all_streamed_in_order(served: Served
                                                                      ) -> None:
    """Two workers' batches land out of time order: a row stamped later is stored first.
    A keyset past the newest stored row would skip the earlier one; the stream holds
    rows back until they settle (2 s behind the clock) and sends both, oldest first."""
    mem = served.sink("memory_entries")
    url = f"{served.url}/v1/sinks/{mem}/stream"
    auth = {"Authorization": f"Bearer {served.tokens['tenant-1']}"}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    later, earlier = memory("tenant-1", 911, ["late"]), memory("tenant-1", 910, ["late"])
    later["ts"], earlier["ts"] = now + dt.timedelta(seconds=14), now + dt.timedelta(seconds=12)
    params = {"columns": "entry_id", "where": "tags contains late"}
    async with served.session.get(url, headers=auth, params=params) as resp:
        assert resp.status == 200
        await store(served, [later])
        await store(served, [earlier])
        events = await read_events(resp, 2, 40)
    assert [json.loads(e["data"])["entry_id"] for e in events] == [
        earlier["entry_id"], later["entry_id"]]


async def test_a_revoked_token_ends_its_open_stream(served: Served) -> None:
    async with pg(served.seeded.settings) as conn:
        token, token_id = await create_token(conn, "tenant-1", "tests")
    url = f"{served.url}/v1/sinks/{served.sink('memory_entries')}/stream"
    async with served.session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        async with pg(served.seeded.settings) as conn:
            assert await revoke_token(conn, token_id)
        (event,) = await read_events(resp, 1, 10)  # the fixture's token cache: ttl 0
        assert event["event"] == "error"
        assert json.loads(event["data"]) == {"error": "the token was revoked"}
        async with asyncio.timeout(5):
            assert await resp.content.read() == b""  # and the stream ends
