"""TCP fault proxies: network faults without privileges (no iptables, no namespaces).

A :class:`TcpProxy` listens on one port and relays every connection to one target.
``cut()`` drops every relayed connection mid-stream; until ``heal()``, new connections
are refused (accepted and reset at once: the client sees a reset, as from a closed
port) or, with ``blackhole=True``, accepted and left hanging with nothing relayed (the
client waits out its own timeouts, as behind a dropped route). ``heal()`` relays new
connections again and closes the black-holed ones, so their clients reconnect.

A :class:`ProxyThread` runs many proxies on an event loop of its own thread, for faults
that must outlive the caller's event loop (the proxies between the brokers of a test
cluster live as long as the cluster, across pytest's per-test event loops).

Used by the chaos suite (tests/chaos/): PostgreSQL and Redis cut under the workers, a
worker cut off from Kafka, one broker isolated from the others (docs/local-stack.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class TcpProxy:
    """One listening port relayed to ``target``.

    With ``hold_eof`` the server's end of a connection is not passed on: the client
    reads the server's last bytes but keeps an open socket (the window between
    asyncio's ``data_received`` and ``connection_lost``, held open) until `cut()` or
    `stop()`."""

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0,
                 listen_host: str = "127.0.0.1", hold_eof: bool = False, name: str = ""
                 ) -> None:
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.hold_eof = hold_eof
        self.name = name or f"{listen_host}:{listen_port}->{target_host}:{target_port}"
        self.down = False
        self.blackhole = False
        self.port = listen_port
        self.relayed = 0  # connections relayed since start
        self.refused = 0  # connections refused or black-holed while cut
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()  # black-holed, closed on heal

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        if self.down:
            self.refused += 1
            if self.blackhole:
                self._held.add(writer)  # read nothing, answer nothing
            else:
                writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self.down:  # cut while connecting
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self.relayed += 1
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer),
                             self._pipe(up_reader, writer, hold=self.hold_eof))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    hold: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not hold:  # held: the other side stays open until cut() or stop()
                self._writers.discard(writer)
                writer.transport.abort()

    @property
    def connections(self) -> int:
        """Relayed connections open now (each has two sockets)."""
        return len(self._writers) // 2

    def cut(self, *, blackhole: bool = False) -> None:
        """Drop every relayed connection mid-stream; refuse (or black-hole) new ones."""
        self.down, self.blackhole = True, blackhole
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        """Relay new connections again; close the black-holed ones."""
        self.down = self.blackhole = False
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()

    async def stop(self) -> None:
        self.cut()
        self.heal()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


class ProxyThread:
    """Named proxies on a private event loop in a daemon thread; every method is called
    from any other thread (or event loop) and returns once done."""

    def __init__(self) -> None:
        self.proxies: dict[str, TcpProxy] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netproxy",
                                        daemon=True)
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def add(self, name: str, target: tuple[str, int], listen_port: int = 0) -> int:
        """Start a proxy ``name`` on ``listen_port`` (0: any free port) to ``target``;
        return its port."""
        if name in self.proxies:
            raise ValueError(f"proxy {name!r} exists already")
        proxy = TcpProxy(*target, listen_port=listen_port, name=name)
        port = self._call(proxy.start())
        self.proxies[name] = proxy
        return port

    async def _each(self, names: Iterable[str], action: str, **kwargs: Any) -> None:
        for name in names:
            getattr(self.proxies[name], action)(**kwargs)

    def cut(self, names: Iterable[str], *, blackhole: bool = False) -> None:
        self._call(self._each(list(names), "cut", blackhole=blackhole))

    def heal(self, names: Iterable[str] | None = None) -> None:
        self._call(self._each(list(self.proxies if names is None else names), "heal"))

    def close(self) -> None:
        """Stop every proxy and the thread."""
        async def stop_all() -> None:
            await asyncio.gather(*(p.stop() for p in self.proxies.values()))

        if self._loop.is_running():
            self._call(stop_all())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ProxyThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
