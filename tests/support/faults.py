"""A TCP fault proxy (as in asyncpg's test base): relays to a server, and on `cut()`
drops every connection and refuses new ones until `heal()`.

With ``hold_eof`` the server's end of a connection is not passed on: the client reads
the server's last bytes but keeps an open socket (the window between asyncio's
``data_received`` and ``connection_lost``, held open) until `cut()` or `stop()`."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, hold_eof: bool = False
                 ) -> None:
        self.target = (target_host, target_port)
        self.hold_eof = hold_eof
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
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

    def cut(self) -> None:
        """Drop every relayed connection mid-stream and refuse new ones."""
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.down = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
