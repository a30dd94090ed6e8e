"""Publish a new version of one id of a state sink, with the version assigned here.

The steps (docs/config-cli.md):

1. Take a PostgreSQL advisory lock on (sink, id): writers using this module queue up
   instead of racing for a version (the lock dies with the session, so a killed writer
   frees it).
2. Read the newest version: the history's highest (deletions included), or higher
   where records of the id wait in Kafka, published but not stored yet (``pending``).
3. Publish version + 1 (acks=all), validated first as the worker will: the Avro schema,
   the sink's column rules, the topic's size limit. Nothing is sent if it fails.
4. Unless ``wait=False``: wait until a worker of the sink has stored past the record's
   offset, then read the history at that version. Its ``(kafka_partition,
   kafka_offset)`` is ours: confirmed. Another writer's (a producer not using this
   module got that version first, and won the same-version conflict; ours lies in
   ``sinkfleet.state_conflicts``): try again with the next version, up to ``retries``
   times, then fail saying so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, SinkfleetError, ValidationError
from sinkfleet.keys import join_key, record_key
from sinkfleet.ops.config.pending import pending_version
from sinkfleet.ops.config.store import SinkRows, groups_of, stored_through
from sinkfleet.producer.publisher import Publisher
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.worker.rows import RowBuilder

# content fields of the new version, from (the newest version, the current row or None)
Build = Callable[[int, dict[str, Any] | None], dict[str, Any]]
PROGRESS_EVERY = 5.0  # seconds between "still waiting" lines


class VersionTaken(SinkfleetError):
    """Other writers got the version this tool published, every time it tried."""

    retriable = True


class NotStored(SinkfleetError):
    """A version was published but no worker stored it (in time, or at all)."""

    retriable = True


@dataclass(frozen=True)
class Written:
    """One version published: where it went, and whether a worker stored it as ours."""

    sink: str
    ids: tuple[Any, ...]
    version: int
    partition: int
    offset: int
    confirmed: bool
    taken: tuple[int, ...] = ()  # versions other writers got first
    record: dict[str, Any] = field(default_factory=dict, compare=False)


class VersionedWriter:
    """Writes versions of ids of one state sink (see the module docstring).

    Example::

        writer = VersionedWriter(settings, catalogue, sink, say=print)
        done = await writer.write(["action_controller", "exploration_rate"],
                                  lambda current, row: {"config_value": "0.1", ...})
        done.version, done.confirmed
    """

    def __init__(self, settings: Settings, catalogue: Catalogue, sink: Sink, *,
                 say: Callable[[str], None] = lambda m: None, poll: float = 0.2) -> None:
        self.settings, self.catalogue, self.sink = settings, catalogue, sink
        self.rows = SinkRows(sink)
        self.groups = groups_of(catalogue, sink)
        self.say = say
        self.poll = poll
        self._family = sink.topic.schema_
        self._builder = RowBuilder(sink)
        self._codec = Codec(sink.schema, SchemaStore(settings.schema_registry_url))
        by_column = {c.name: c for c in sink.columns}
        # the schema fields behind the id and version columns
        self._id_fields = [_field_of(by_column[c], sink) for c in self.rows.ids]
        self._version_field = _field_of(by_column[self.rows.version], sink)
        limit = sink.topic.config.get("max.message.bytes")
        self._max_bytes = int(limit) if limit and limit.isdigit() else None

    def describe(self, ids: list[Any]) -> str:
        return f"{self.sink.spec.name} {join_key(ids).decode()!r}"

    async def write(self, id_parts: list[str], build: Build, *, wait: bool = True,
                    timeout: float = 30.0, retries: int = 3) -> Written:
        """Publish the next version of the id; see the module docstring."""
        ids = self.rows.id_values(id_parts)
        if wait and not self.groups:
            raise ConfigError(f"no worker spec in workers/ stores sink {self.sink.spec.name},"
                              " so nothing would store this write: add the sink to a"
                              " worker, or pass --no-wait")
        async with pg(self.settings) as conn, Publisher(
                self.settings, catalogue=self.catalogue, linger_ms=0) as pub:
            await self._lock(conn, ids, timeout)
            taken: list[int] = []
            while True:
                current = max(await self.rows.newest_version(conn, ids),
                              await self._pending(conn, ids))
                latest = await self.rows.latest(conn, ids)
                record = self._record(ids, current + 1,
                                      build(current, None if latest is None else dict(latest)))
                done = await self._publish(pub, ids, record, taken)
                if not wait:
                    return done
                await self._wait_stored(conn, done, timeout)
                if await self._ours(conn, done):
                    return replace(done, confirmed=True)
                taken.append(done.version)
                if len(taken) > retries:
                    raise VersionTaken(
                        f"{self.describe(ids)}: other writers got version"
                        f"{'s' if len(taken) > 1 else ''} {', '.join(map(str, taken))} first"
                        f" ({len(taken)} tries); this tool's content is in"
                        " sinkfleet.state_conflicts. Something else publishes versions of"
                        " this id: run again, or stop that writer")
                self.say(f"version {done.version} of {self.describe(ids)} was taken by"
                         " another writer; trying the next version")

    def _record(self, ids: list[Any], version: int, content: dict[str, Any]
                ) -> dict[str, Any]:
        record = dict(content)
        record.update(zip(self._id_fields, ids, strict=True))
        record[self._version_field] = version
        return record

    async def _publish(self, pub: Publisher, ids: list[Any], record: dict[str, Any],
                       taken: list[int]) -> Written:
        """Validate as a worker will, then publish (acks=all); nothing is sent on error."""
        _, _, value = pub.encode(self._family, record)  # Avro: ValidationError, none sent
        self._builder(self._codec.decode(value))  # the sink's column rules, as a worker
        if self._max_bytes is not None and len(value) > self._max_bytes:
            raise ValidationError(f"the record is {len(value):,} bytes; topic"
                                  f" {self.sink.topic.name} takes at most {self._max_bytes:,}"
                                  " (max.message.bytes): store less in one value")
        fut = await pub.send_raw(self.sink.topic.name, value, record_key(self.sink.topic,
                                                                        record))
        await pub.flush()
        meta = fut.result()
        return Written(self.sink.spec.name, tuple(ids), record[self._version_field],
                       meta.partition, meta.offset, False, tuple(taken), record)

    async def _lock(self, conn: asyncpg.Connection, ids: list[Any], timeout: float) -> None:
        """Hold the (sink, id) advisory lock for the session: writers through this module
        take versions one after the other."""
        name = f"sinkfleet.versioned:{self.sink.spec.name}:{join_key(ids).decode()}"
        if await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", name):
            return
        wait_s = timeout + 10  # the holder may wait `timeout` for its worker
        self.say(f"another writer of {self.describe(ids)} is at work; waiting for it"
                 f" (up to {wait_s:.0f}s) …")
        await conn.execute(f"SET lock_timeout = {int(wait_s * 1000)}")
        try:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", name)
        except asyncpg.LockNotAvailableError:
            raise NotStored(f"{self.describe(ids)}: another writer held it for {wait_s:.0f}s;"
                            " is one stuck waiting for a worker? Try again later") from None
        finally:
            await conn.execute("SET lock_timeout = 0")

    async def _pending(self, conn: asyncpg.Connection, ids: list[Any]) -> int:
        """The highest version of the id published but not stored yet (0: none)."""
        return await pending_version(self.settings, conn, self.sink, self.groups,
                                     join_key(ids), self._version_field, say=self.say)

    async def _wait_stored(self, conn: asyncpg.Connection, done: Written,
                           timeout: float) -> None:
        start = time.monotonic()
        next_note = start + PROGRESS_EVERY
        where = f"partition {done.partition}, offset {done.offset}"
        while True:
            stored = await stored_through(conn, self.groups, self.sink.topic.name,
                                          done.partition)
            if stored is not None and stored > done.offset:
                return
            now = time.monotonic()
            if now - start >= timeout:
                raise NotStored(
                    f"published {self.describe(list(done.ids))} as version {done.version}"
                    f" ({where} of {self.sink.topic.name}), not yet stored after"
                    f" {timeout:g}s — is a worker running for sink {self.sink.spec.name}"
                    f" (group {', '.join(self.groups)})? It is stored when one runs;"
                    " do not publish it again")
            if now >= next_note:
                self.say(f"waiting for a worker to store version {done.version} ({where}):"
                         f" {now - start:.0f}s …")
                next_note = now + PROGRESS_EVERY
            await asyncio.sleep(self.poll)

    async def _ours(self, conn: asyncpg.Connection, done: Written) -> bool:
        """Whether the stored version is the record we published (not another's)."""
        row = await self.rows.at(conn, list(done.ids), done.version)
        if row is None:
            raise NotStored(
                f"version {done.version} of {self.describe(list(done.ids))} was read by a"
                " worker but not stored: it was dead-lettered (see `sinkfleet dlq inspect"
                f" --topic {self.sink.topic.name}`) or a deletion covers it")
        return (row["kafka_partition"], row["kafka_offset"]) == (done.partition, done.offset)


def _field_of(column: Any, sink: Sink) -> str:
    """The top-level schema field a column stores (the tool sets it by name)."""
    source = column.source
    if source is None or len(source.path) != 1 or source.index is not None:
        raise ConfigError(f"sink {sink.spec.name}: column {column.name} is not a top-level"
                          " field of the record; the config tool cannot assign it")
    return str(source.path[0])
