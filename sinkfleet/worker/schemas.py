"""The writer schemas a worker knows, kept in step with the registry in PostgreSQL.

At start the worker adds every registered version of its families
(``sinkfleet.schema_versions``) to its ``SchemaStore``, so records written with any of
them resolve into the current reader schema. Before a fetched chunk is decoded,
``prepare`` looks for writer schemas the store lacks:

* unknown single-object fingerprints are looked up in PostgreSQL (one indexed query per
  chunk, on a connection of its own: the store path's may be busy with a batch), so a
  version registered after the worker started is decoded, not dead-lettered. A
  fingerprint still unknown is not looked up again for ``retry_after`` seconds; its
  records are dead letters (``UnknownWriterSchema``) — replay them once it is registered;
* unknown Confluent schema ids are fetched from the Confluent registry concurrently
  with aiohttp (``SchemaStore.look_up``: ``registry_concurrency`` requests at once, each
  within ``registry_timeout`` seconds, at most ``registry_max_ids`` ids and ``registry_deadline``
  seconds per chunk), so neither the event loop nor the worker's lock waits long. An id
  the registry refuses (404, an unusable schema) is remembered: its records are dead
  letters ("schema id N unknown: …"). An id it cannot answer for now (timeout, refused,
  5xx) is an outage, not a bad record: that partition's records from the first such
  one on are held back — the consumer seeks back to it, so nothing is lost and order is
  kept — and fetched again later; the worker stays in its group and its health says
  ``degraded: schema-registry: unreachable …``. Ids left over by the per-chunk bounds are
  held back the same way and looked up with the next fetch.

Looking up *before* decoding keeps each partition's order: records are decoded and
batched in offset order, as audit chains and state history need; re-decoding dead
letters after the chunk would append them out of order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection
from typing import Any

import asyncpg

from sinkfleet.avro.codec import SchemaStore
from sinkfleet.avro.framing import CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC, SOE_HEADER_LEN
from sinkfleet.config import Settings
from sinkfleet.errors import DecodeError, RegistryUnavailable
from sinkfleet.http import Health
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, connect
from sinkfleet.sink.postgres.schema_versions import (
    RegisteredSchema,
    registered_versions,
    versions_by_fingerprint,
)

log = logging.getLogger("sinkfleet.worker")
_MISSING_REGISTRY = (asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError)


class WriterSchemas:
    """Registered versions of ``families`` in ``store``; see the module docstring."""

    def __init__(self, settings: Settings, store: SchemaStore, families: Collection[str], *,
                 retry_after: float = 5.0, timeout: float = 5.0,
                 registry_concurrency: int = 8, registry_max_ids: int = 256,
                 registry_timeout: float = 2.0,
                 registry_deadline: float = 5.0, registry_backoff: float = 0.5) -> None:
        self.settings = settings
        self.store = store
        self.families = sorted(families)
        self.retry_after = retry_after
        self.timeout = timeout
        self.lookups = 0  # queries for unknown fingerprints (tests, logs)
        self._asked: dict[bytes, float] = {}  # unknown fingerprint -> last looked up
        self._conn: asyncpg.Connection | None = None
        self._registry = True  # False: this database has no sinkfleet.schema_versions
        store.inline_lookups = False  # ids are looked up here, ahead: decode never blocks
        self.registry_concurrency = registry_concurrency
        self.registry_max_ids = registry_max_ids
        self.registry_timeout = registry_timeout
        self.registry_deadline = registry_deadline
        self.registry_backoff = registry_backoff
        self._consumer: Any = None  # see attach()
        self._health: Health | None = None
        self._down = False  # the Confluent registry was unreachable at the last lookup

    async def load(self, conn: asyncpg.Connection) -> int:
        """Add every registered version of the families; the number added."""
        try:
            rows = await registered_versions(conn, self.families)
        except _MISSING_REGISTRY as exc:
            self._registry = False
            log.warning("no schema registry in PostgreSQL (%s): run `sinkfleet db migrate`;"
                        " only the catalogue's schemas can be decoded", exc)
            return 0
        return self._add(rows)

    def _add(self, rows: list[RegisteredSchema]) -> int:
        added = 0
        for row in rows:
            if self.store.knows(row.fingerprint):
                continue
            try:
                self.store.add(json.loads(row.schema))
            except (DecodeError, ValueError) as exc:
                log.warning("registered schema %s version %d cannot be used: %s",
                            row.family, row.version, exc)
                continue
            added += 1
            log.info("writer schema %s version %d (fingerprint %s) is known",
                     row.family, row.version, row.fingerprint.hex())
        return added

    async def prepare(self, data: dict[Any, list[Any]]) -> None:
        """Learn the writer schemas of a fetched chunk that the store lacks, if it can.

        Records whose Confluent schema id cannot be resolved yet are removed from
        ``data`` (their partitions are sought back to them): decode what is left."""
        unknown: set[bytes] = set()
        ids: dict[int, None] = {}  # in order of appearance: the bounds keep the first
        knows, known = self.store.knows, b""
        for messages in data.values():
            for msg in messages:
                value = msg.value
                if not value:
                    continue
                if value[0] == 0xC3:
                    if len(value) >= SOE_HEADER_LEN and value[1] == 0x01:
                        fp = value[2:SOE_HEADER_LEN]
                        if fp != known:  # a chunk is mostly one writer schema
                            if knows(fp):
                                known = fp
                            else:
                                unknown.add(fp)
                elif value[0] == CONFLUENT_MAGIC and len(value) >= CONFLUENT_HEADER_LEN:
                    ids[int.from_bytes(value[1:CONFLUENT_HEADER_LEN], "big")] = None
        if unknown:
            await self._look_up(unknown)
        if ids:
            await self._resolve_ids(data, list(ids))

    def attach(self, consumer: Any, health: Health) -> None:
        """The consumer whose partitions ``prepare`` seeks back when it holds records
        back, and the health it marks degraded while the registry is unreachable."""
        self._consumer, self._health = consumer, health

    async def _resolve_ids(self, data: dict[Any, list[Any]], ids: list[int]) -> None:
        store = self.store
        due = [i for i in ids if store.needs_lookup(i)][:self.registry_max_ids]
        if due:
            await store.look_up(due, concurrency=self.registry_concurrency,
                                timeout=self.registry_timeout, deadline=self.registry_deadline)
        waiting = {i for i in ids if not store.settled(i)}
        if not waiting:
            self._registry_ok()
            return
        held = self._hold_back(data, waiting)
        down = sorted(i for i in waiting if store.unreachable(i))
        if not down:
            return  # only ids past this chunk's bounds: the next fetch looks them up
        if self._health is not None:
            self._health.degrade("schema-registry", f"unreachable for {len(down)} schema"
                                 f" id(s) (e.g. {down[0]}); {held} record(s) held back")
        if not self._down:
            log.warning("schema registry unreachable for %d schema id(s) (e.g. %s): holding"
                        " back %d record(s) and retrying; nothing is dead-lettered for it",
                        len(down), down[0], held)
        self._down = True
        if not data:  # nothing else to do: do not refetch the same records in a tight loop
            await asyncio.sleep(self.registry_backoff)

    def _registry_ok(self) -> None:
        if self._down:
            self._down = False
            log.info("schema registry answers again")
            if self._health is not None:
                self._health.recover("schema-registry")

    def _hold_back(self, data: dict[Any, list[Any]], waiting: set[int]) -> int:
        """Cut each partition's messages at its first record whose schema id is
        ``waiting`` and seek the consumer back there; the number held back."""
        held = 0
        for tp in list(data):
            messages = data[tp]
            n = _first_waiting(messages, waiting)
            if n is None:
                continue
            if self._consumer is None:
                raise RegistryUnavailable("schema registry lookups did not finish and no"
                                          " consumer is attached to hold the records back")
            self._consumer.seek(tp, messages[n].offset)
            held += len(messages) - n
            if n:
                data[tp] = messages[:n]
            else:
                del data[tp]
        return held

    async def _look_up(self, unknown: set[bytes]) -> None:
        now = time.monotonic()
        due = [fp for fp in unknown
               if now - self._asked.get(fp, -self.retry_after) >= self.retry_after]
        if not due or not self._registry:
            return
        if len(self._asked) > 10_000:  # hostile input naming random fingerprints
            self._asked.clear()
        self._asked.update(dict.fromkeys(due, now))
        self.lookups += 1
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect(self.settings, timeout=self.timeout)
            rows = await asyncio.wait_for(
                versions_by_fingerprint(self._conn, self.families, due), self.timeout)
        except _MISSING_REGISTRY as exc:
            self._registry = False
            log.warning("cannot look up writer schemas (%s): run `sinkfleet db migrate`", exc)
            return
        except (*RETRIABLE_STORAGE, asyncpg.PostgresError) as exc:
            await self.close()
            log.warning("could not look up %d unknown writer schema(s) in PostgreSQL (%s:"
                        " %s); their records become dead letters", len(due),
                        type(exc).__name__, exc)
            return
        if not self._add(rows):
            log.info("writer schema(s) %s are not registered for %s",
                     ", ".join(sorted(fp.hex() for fp in due)), ", ".join(self.families))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


def _first_waiting(messages: list[Any], waiting: set[int]) -> int | None:
    """The index of the first Confluent-framed message whose schema id is ``waiting``."""
    for n, msg in enumerate(messages):
        value = msg.value
        if (value and value[0] == CONFLUENT_MAGIC and len(value) >= CONFLUENT_HEADER_LEN
                and int.from_bytes(value[1:CONFLUENT_HEADER_LEN], "big") in waiting):
            return n
    return None
