"""New rows of a sink as Server-Sent Events, by polling the query model's keyset.

Every event is one row (``event: row``, ``data:`` its JSON) whose ``id:`` is the cursor
just after it, so a client reconnecting with ``Last-Event-ID`` resumes exactly there:
no row twice, none skipped. Why polling and not LISTEN/NOTIFY: docs/http-read-service.md.

In a time order, rows are stored out of order: a worker stores each partition's batch
when it is due, so a row of one partition can land after a later-stamped row of another.
A keyset past the newest row would skip it. So on a timestamp order the stream holds
back the last ``settle`` seconds: it sends a row once its time is at least ``settle``
behind the clock, and rows stored within that time still come in order. (A row stored
later than that after its own time — a clock far off, a worker stalled — is not streamed;
it is in ``/rows``.) Without ``Last-Event-ID``, the stream starts after the newest row
already settled when it opens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from sinkfleet.errors import SinkfleetError
from sinkfleet.read.query import Filter, Query, SinkQuery
from sinkfleet.read.reader import Reader
from sinkfleet.read.serve.replies import dumps
from sinkfleet.read.sql import find_sink

BATCH = 500  # rows a poll reads at most; a backlog is read in batches back to back


@dataclass(frozen=True)
class StreamOptions:
    poll_interval: float = 0.5  # seconds between polls when the stream has caught up
    heartbeat: float = 15.0  # a comment line this often keeps proxies from timing out
    max_seconds: float = 3600.0  # then the stream ends; clients reconnect (Last-Event-ID)
    write_timeout: float = 10.0  # to take one event, else the connection is dropped
    settle: float = 2.0  # on a timestamp order, rows newer than this are held back


@dataclass
class RowStream:
    """One client's stream: its query's shape, and the cursor after the last row sent."""

    reader: Reader
    sink: str
    filters: Sequence[Filter]
    order_by: str | None
    columns: Sequence[str] | None
    settle: float = 2.0

    def __post_init__(self) -> None:
        s = find_sink(self.reader.catalogue, self.sink)
        # plan once: refuses a bad filter, order or column before the stream starts
        _, _, self.keyset = SinkQuery(s, self.reader.tenant).plan(self.query(None))
        self.keys = self.keyset.keys
        self.order = self.keys[0]
        kind = next(c.pg_type for c in s.columns if c.name == self.order)
        self.timed = kind == "timestamptz" and self.settle > 0
        self.wanted = self.keyset.wanted
        self.fetched = [*self.wanted, *(k for k in self.keys if k not in self.wanted)]

    def query(self, cursor: str | None, *, newest: bool = False, limit: int = BATCH,
              columns: Sequence[str] | None = None) -> Query:
        return Query(self.sink, self.filters, order_by=self.order_by, newest_first=newest,
                     limit=limit, cursor=cursor,
                     columns=columns if columns is not None else self.columns)

    def check(self, cursor: str) -> None:
        """Refuse (QueryError) a Last-Event-ID that is not a cursor of this stream."""
        self.keyset.decode(cursor)

    def frontier(self) -> dt.datetime | None:
        """Rows at or before this time are settled (None: the order is not a time)."""
        if not self.timed:
            return None
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settle)

    async def start(self) -> str | None:
        """The cursor after the newest settled row now (None: no such row yet)."""
        filters = list(self.filters)
        frontier = self.frontier()
        if frontier is not None:
            filters.append(Filter(self.order, "<=", frontier))
        # its own query (one more filter); the cursor is encoded for the stream's query
        page = await self.reader.query(Query(self.sink, filters, order_by=self.order_by,
                                             newest_first=True, limit=1, columns=self.keys))
        return self.keyset.encode([page.rows[0][k] for k in self.keys]) if page.rows else None

    async def poll(self, cursor: str | None) -> tuple[list[tuple[str, bytes]], str | None, bool]:
        """(events, the new cursor, more waiting): each event is (its id, its data)."""
        frontier = self.frontier()
        page = await self.reader.query(self.query(cursor, columns=self.fetched))
        events: list[tuple[str, bytes]] = []
        for row in page.rows:
            if frontier is not None and (row[self.order] is None
                                         or row[self.order] > frontier):
                return events, cursor, False  # not settled yet: the next poll sends it
            cursor = self.keyset.encode([row[k] for k in self.keys])
            events.append((cursor, dumps({k: row[k] for k in self.wanted})))
        return events, cursor, page.next_cursor is not None


async def serve_stream(request: web.Request, stream: RowStream, cursor: str | None,
                       options: StreamOptions, still_allowed: Callable[[], Awaitable[bool]]
                       ) -> web.StreamResponse:
    """Send ``stream``'s new rows until the client leaves, the token is revoked or
    ``max_seconds`` pass. A PostgreSQL outage is an ``event: error`` and the stream waits
    and polls again."""
    if cursor is None:
        cursor = await stream.start()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)

    async def send(data: bytes) -> None:
        try:
            async with asyncio.timeout(options.write_timeout):
                await resp.write(data)
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()  # a client that does not read pins nothing
            raise ConnectionResetError("the client did not take the stream") from None

    ends = time.monotonic() + options.max_seconds
    beat = time.monotonic()
    try:
        await send(b"retry: 2000\n: new rows of " + stream.sink.encode() + b"\n\n")
        while time.monotonic() < ends:
            if not await still_allowed():
                await send(b'event: error\ndata: {"error": "the token was revoked"}\n\n')
                break
            try:
                events, cursor, more = await stream.poll(cursor)
            except SinkfleetError as exc:
                if not exc.retriable:
                    raise
                await send(b"event: error\ndata: " + dumps({"error": str(exc)}) + b"\n\n")
                await asyncio.sleep(max(options.poll_interval, 2.0))
                continue
            for event_id, data in events:
                await send(b"id: " + event_id.encode() + b"\nevent: row\ndata: " + data
                           + b"\n\n")
            if more:
                continue
            if time.monotonic() - beat >= options.heartbeat:
                await send(b": keep-alive\n\n")
                beat = time.monotonic()
            await asyncio.sleep(options.poll_interval)
    except ConnectionError:
        return resp  # the client went away (or the server stops)
    return resp

