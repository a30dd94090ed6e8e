"""Attacks on the HTTP endpoints, against real servers on 127.0.0.1: a worker's routes
served in a process of their own (tests/hostile/http_target.py, a 2.5 MB /metrics) and the
lag exporter against the local stack.

* slow-loris: clients sending their request one byte a second are cut once the request
  timeout passes, while other clients are served all along;
* never-reading clients: 40 connections ask for /metrics and never read; only the
  connection cap's worth are served, each dropped after the write timeout, and the
  server's peak memory grows by at most the cap's worth of pages;
* DNS rebinding: a Host header naming another site is refused (421);
* the exporter's optional bearer token: missing or wrong → 401, right → 200 (also as
  the password of HTTP Basic, which a browser prompts for); /healthz stays open.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from sinkfleet.ops.lag.exporter import LagExporter
from tests.support.catalogue import ROOT, TestCatalogue

pytestmark = pytest.mark.integration

CAP, REQUEST_TIMEOUT, WRITE_TIMEOUT = 8, 2.0, 3.0
PAGE = 2_400_000  # about the size of the target's /metrics (2.5 MB)


@pytest.fixture
def target() -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = dict(os.environ, SINKFLEET_HTTP_MAX_CONNECTIONS=str(CAP),
               SINKFLEET_HTTP_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
               SINKFLEET_HTTP_WRITE_TIMEOUT=str(WRITE_TIMEOUT))
    proc = subprocess.Popen([sys.executable, "-m", "tests.hostile.http_target"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def get(port: int, path: str, headers: dict[str, str] | None = None,
        timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed (EOF or reset), without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionError:
        return True


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def queued_by_server(port: int) -> int:
    """Bytes the kernel holds for the server's side of its connections (sent, not yet
    acknowledged by a client that does not read): memory pinned outside the process."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                total += int(fields[4].split(":")[0], 16)
    return total


def test_slow_loris_is_cut_after_the_request_timeout_while_others_are_served(
        target: tuple[subprocess.Popen[str], int]) -> None:
    _, port = target
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    lorises = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    started = time.monotonic()
    cut_after: dict[int, float] = {}
    served = 0
    try:
        for i in range(len(request)):
            for n, sock in enumerate(lorises):
                if n in cut_after:
                    continue
                if closed_by_server(sock):
                    cut_after[n] = time.monotonic() - started
                    continue
                try:
                    sock.send(request[i:i + 1])
                except ConnectionError:
                    cut_after[n] = time.monotonic() - started
            if len(cut_after) == len(lorises) or time.monotonic() - started > 8:
                break
            # other clients are served meanwhile
            assert get(port, "/healthz", timeout=2) == (200, b"ok")
            served += 1
            time.sleep(1)  # one byte a second
    finally:
        for sock in lorises:
            sock.close()
    assert len(cut_after) == 4, f"slow clients still connected after 8 s: {cut_after}"
    for n, seconds in cut_after.items():
        assert REQUEST_TIMEOUT <= seconds <= REQUEST_TIMEOUT + 1.5, (n, seconds)
    assert served >= 2


def test_never_reading_clients_do_not_pin_memory(
        target: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = target
    status, body = get(port, "/metrics")  # warm up: one page built and sent
    assert status == 200 and len(body) >= PAGE
    before = peak_rss(proc.pid)
    socks = []
    for _ in range(40):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # read nothing, hold little
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        socks.append(sock)
    try:
        time.sleep(3)  # every page that will be built is built and stuck
        grown, queued = peak_rss(proc.pid) - before, queued_by_server(port)
        print(f"never-reading clients pin {grown / 1e6:.1f} MB in the process (peak growth)"
              f" and {queued / 1e6:.1f} MB in its socket buffers")
        assert grown + queued <= (CAP + 2) * PAGE, (grown, queued)
        firsts = []
        for sock in socks:
            sock.settimeout(5)
            firsts.append(sock.recv(12))
        assert firsts.count(b"HTTP/1.1 200") == CAP, firsts
        assert firsts.count(b"HTTP/1.1 503") == 40 - CAP, firsts
        # the served ones are dropped after the write timeout, their pages unfinished
        time.sleep(WRITE_TIMEOUT + 1)
        for sock in socks:
            got = 0
            try:
                while chunk := sock.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            except TimeoutError:
                pytest.fail("a never-reading client is still connected after the timeout")
            assert got < PAGE
        assert queued_by_server(port) == 0
    finally:
        for sock in socks:
            sock.close()
    status, body = get(port, "/metrics")  # and the endpoint serves again
    assert status == 200 and len(body) >= PAGE


async def _exporter(tc: TestCatalogue, **settings: Any) -> tuple[LagExporter, asyncio.Task[None],
                                                                 int]:
    exporter = LagExporter(tc.settings.model_copy(update=settings), interval=0.5,
                           groups=[tc.group])
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run("127.0.0.1", 0, on_bound=bound.set_result))
    return exporter, task, await asyncio.wait_for(bound, 30)


async def test_exporter_refuses_foreign_hosts_and_missing_tokens(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    token = "s3cret-token-for-tests"
    exporter, task, port = await _exporter(
        tc, exporter_token=SecretStr(token), http_allowed_hosts="lag.example.org")
    bearer = {"Authorization": f"Bearer {token}"}

    def call(path: str, **headers: str) -> int:
        return get(port, path, headers)[0]

    try:
        # DNS rebinding: the browser sends the attacker's name as Host
        for host in ("evil.example", "evil.example:80", "lag.example.org.evil.example"):
            assert await asyncio.to_thread(call, "/api/workers", Host=host, **bearer) == 421
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "lag.example.org",
                     f"LAG.example.org:{port}", "[::1]:9400", "10.1.2.3:9400"):
            assert await asyncio.to_thread(call, "/api/events", Host=host, **bearer) == 200
        for path in ("/", "/api/lag", "/api/workers", "/api/events", "/api/history?group=g",
                     "/metrics"):
            assert await asyncio.to_thread(call, path) == 401, path
            assert await asyncio.to_thread(call, path, Authorization="Bearer wrong") == 401
            assert await asyncio.to_thread(call, path, Authorization=f"Bearer {token}x") == 401
            assert await asyncio.to_thread(call, path, Authorization=token) == 401
            assert await asyncio.to_thread(call, path, **bearer) == 200, path
        basic = base64.b64encode(f"any:{token}".encode()).decode()
        assert await asyncio.to_thread(call, "/", Authorization=f"Basic {basic}") == 200
        wrong = base64.b64encode(b"any:nope").decode()
        assert await asyncio.to_thread(call, "/", Authorization=f"Basic {wrong}") == 401
        status = await asyncio.to_thread(call, "/healthz")  # probes carry no token
        assert status in (200, 503)
        # a browser is asked for the token (Basic), a client told to send a bearer
        def challenges() -> tuple[int, list[str]]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/api/lag")
                resp = conn.getresponse()
                return resp.status, resp.headers.get_all("WWW-Authenticate") or []
            finally:
                conn.close()

        assert await asyncio.to_thread(challenges) == (
            401, ['Bearer realm="sinkfleet"', 'Basic realm="sinkfleet"'])
    finally:
        exporter.stop()
        await asyncio.wait_for(task, 30)


async def test_exporter_without_a_token_still_checks_the_host(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    exporter, task, port = await _exporter(tc)
    try:
        assert await asyncio.to_thread(lambda: get(port, "/api/workers")[0]) == 200
        assert await asyncio.to_thread(
            lambda: get(port, "/api/workers", {"Host": "rebind.example:9400"})[0]) == 421
    finally:
        exporter.stop()
        await asyncio.wait_for(task, 30)
