"""The HTTP read service against the Reader in-process, N concurrent clients each:

  rows   one page (--limit, default 100 rows) of a tenant sink (memory_entries, newest
         first, as one tenant): GET /v1/sinks/{sink}/rows vs Reader.query
  state  the current state of a random id of a tenant state sink (workflow_states):
         GET /v1/sinks/{sink}/state/{tenant}/{id} vs Reader.state (Redis is empty here,
         so both read PostgreSQL)

(h) is `sinkfleet serve` in a process of its own with N aiohttp clients in this one;
(r) the same call through `Reader(tenant=…)` in this process, N concurrent tasks.
Prints requests/s and p50/p99 of each and the ratios h/r. Usage:
  python benchmarks/http_reads.py [--rows 5000] [--limit 100] [--clients 1,10,50]
                                  [--seconds 5] [--profile serve.pstats]
Runs against the local stack (SINKFLEET_STATE_DIR); everything it creates is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from _common import cleanup  # benchmarks/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table

from sinkfleet.catalogue import load_catalogue
from sinkfleet.catalogue.isolate import isolated_copy
from sinkfleet.config import Settings, load_settings
from sinkfleet.read import Reader
from sinkfleet.read.serve.tokens import create_token
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
TENANT = "bench-1"


async def fill(settings: Settings, memories: str, workflows: str, rows: int) -> None:
    """``rows`` memory entries and workflows over two tenants."""
    async with pg(settings) as conn:
        await conn.execute(
            f"INSERT INTO {memories} (entry_id, tenant_id, ts, entry_type, content, task_id,"
            " tags) SELECT gen_random_uuid(), 'bench-' || (i % 2 + 1),"
            " now() - i * interval '1 second', 'note', jsonb_build_object('n', i),"
            " 'task-' || (i % 10), ARRAY['a', 'b'] FROM generate_series(1, $1) i", rows)
        await conn.execute(
            f"INSERT INTO {workflows} (tenant_id, workflow_id, version, workflow_name,"
            " status, current_step, metadata, started_at, updated_at) SELECT"
            " 'bench-' || (i % 2 + 1), 'wf-' || i, 1, 'triage', 'running', 'step-1',"
            " jsonb_build_object('n', i), now(), now() FROM generate_series(1, $1) i", rows)
        for table in (memories, workflows):
            await conn.execute(f"ANALYZE {table}")


async def load(call: Callable[[], Awaitable[None]], clients: int, seconds: float
               ) -> tuple[float, float, float]:
    """(calls/s, p50 ms, p99 ms) of ``clients`` loops calling ``call`` for ``seconds``."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return (len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000)


def table_of(title: str) -> Table:
    return Table("clients", "HTTP req/s", "HTTP p50 ms", "HTTP p99 ms", "Reader q/s",
                 "Reader p50 ms", "Reader p99 ms", "req/s ratio", "p99 ratio", title=title)


async def compare(table: Table, http: Callable[[], Awaitable[None]],
                  direct: Callable[[], Awaitable[None]], clients: list[int],
                  seconds: float) -> None:
    await load(http, 4, 1.0)  # warm both up
    await load(direct, 4, 1.0)
    for n in clients:
        h = await load(http, n, seconds)
        r = await load(direct, n, seconds)
        table.add_row(str(n), f"{h[0]:,.0f}", f"{h[1]:.1f}", f"{h[2]:.1f}", f"{r[0]:,.0f}",
                      f"{r[1]:.1f}", f"{r[2]:.1f}", f"{h[0] / r[0]:.2f}", f"{h[2] / r[2]:.2f}")


async def main(rows: int, limit: int, clients: list[int], seconds: float,
               profile: Path | None = None) -> None:
    base = load_settings()
    suffix = "h" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="http-reads-"))
    iso = isolated_copy(ROOT, tmp, suffix, sinks=["memory_entries", "workflow_states"])
    settings = load_settings(home=tmp, state_dir=base.state)
    catalogue = load_catalogue(tmp)
    mem, wf = iso.sink("memory_entries"), iso.sink("workflow_states")
    proc = None
    console = Console()
    try:
        await migrate(settings, catalogue, lambda m: None)
        await fill(settings, mem, wf, rows)
        async with pg(settings) as conn:
            token, token_id = await create_token(conn, TENANT, "benchmark")
        env = {**os.environ, "SINKFLEET_HOME": str(tmp), "SINKFLEET_STATE_DIR": str(base.state)}
        profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *profiler, "-m", "sinkfleet", "serve", "--port", "0",
            "--max-requests", "1000", "--max-connections", "1000", env=env, cwd=ROOT,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        line = (await proc.stderr.readline()).decode()
        port = int(re.search(r":(\d+) ", line).group(1))  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/v1/sinks"
        mine = [f"wf-{i}" for i in range(1, rows + 1) if i % 2 + 1 == 1]
        connector = aiohttp.TCPConnector(limit=max(clients))
        async with aiohttp.ClientSession(connector=connector, headers={
                "Authorization": f"Bearer {token}"}) as session, \
                Reader(settings, catalogue, tenant=TENANT, pool_size=8) as reader:
            async def get(path: str) -> None:
                async with session.get(url + path) as resp:
                    body = await resp.read()
                    assert resp.status == 200, body[:200]

            async def page() -> None:
                got = await reader.query(mem, newest_first=True, limit=limit)
                assert len(got.rows) == limit

            async def state() -> None:
                assert await reader.state(wf, TENANT, random.choice(mine)) is not None

            rows_table = table_of(f"{limit}-row page of {rows:,} memory entries, one tenant")
            await compare(rows_table, lambda: get(f"/{mem}/rows?desc=true&limit={limit}"),
                          page, clients, seconds)
            console.print(rows_table)
            state_table = table_of(f"current state of one of {rows:,} workflows, one tenant")
            await compare(state_table,
                          lambda: get(f"/{wf}/state/{TENANT}/{random.choice(mine)}"),
                          state, clients, seconds)
            console.print(state_table)
        async with pg(settings) as conn:
            await conn.execute("DELETE FROM sinkfleet.api_tokens WHERE token_id = $1",
                               token_id)
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        await cleanup(settings, iso)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, help="cProfile the service into this file")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.limit, [int(c) for c in args.clients.split(",")],
                     args.seconds, args.profile))
