"""sinkfleet/dev/netproxy.py against real sockets: relay, cut (refuse or black-hole),
heal, and the proxies of a ProxyThread driven from another event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sinkfleet.dev.netproxy import ProxyThread, TcpProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_relays_both_ways_on_the_port_asked_for(echo: int) -> None:
    port = _free_port()
    proxy = TcpProxy("127.0.0.1", echo, listen_port=port)
    assert await proxy.start() == port
    try:
        payload = bytes(range(256)) * 1024  # 256 KiB: several reads and writes
        assert await _roundtrip(port, payload) == payload
        assert await _roundtrip(port, b"again") == b"again"
        assert proxy.relayed == 2
    finally:
        await proxy.stop()


async def test_cut_drops_live_connections_and_refuses_new_ones_until_healed(echo: int
                                                                            ) -> None:
    proxy = TcpProxy("127.0.0.1", echo)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"live")
        assert await reader.readexactly(4) == b"live"
        assert proxy.connections == 1
        proxy.cut()
        assert proxy.connections == 0
        # the live connection is reset mid-stream
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            writer.write(b"more")
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(4), 5)
        writer.close()
        # a new one is reset at once: no byte ever comes back
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(proxy.port, b"refused")
        assert (proxy.refused, proxy.relayed) == (1, 1)
        proxy.heal()
        assert await _roundtrip(proxy.port, b"healed") == b"healed"
        assert proxy.relayed == 2
    finally:
        await proxy.stop()


async def test_a_black_hole_answers_nothing_and_heal_closes_what_it_held(echo: int
                                                                        ) -> None:
    proxy = TcpProxy("127.0.0.1", echo)
    await proxy.start()
    try:
        proxy.cut(blackhole=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"lost")
        await writer.drain()
        with pytest.raises(TimeoutError):  # accepted, but nothing ever comes back
            await asyncio.wait_for(reader.read(1), 0.5)
        assert (proxy.refused, proxy.relayed) == (1, 0)
        proxy.heal()
        # the held connection is closed (its client reconnects), new ones relay
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        writer.close()
        assert await _roundtrip(proxy.port, b"back") == b"back"
    finally:
        await proxy.stop()


async def test_a_proxy_thread_outlives_the_loop_that_drives_it(echo: int) -> None:
    with ProxyThread() as proxies:
        a = proxies.add("a", ("127.0.0.1", echo))
        b = proxies.add("b", ("127.0.0.1", echo))
        with pytest.raises(ValueError, match="exists already"):
            proxies.add("a", ("127.0.0.1", echo))
        assert await _roundtrip(a, b"a") == b"a"
        proxies.cut(["a"])
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(a, b"a")
        assert await _roundtrip(b, b"b") == b"b"  # only the named proxies are cut
        proxies.heal()
        assert await _roundtrip(a, b"a") == b"a"
        assert [(p.name, p.relayed, p.refused) for p in proxies.proxies.values()] == [
            ("a", 2, 1), ("b", 1, 0)]
    with pytest.raises(OSError):  # closed: nothing listens any more
        await _roundtrip(a, b"a")
