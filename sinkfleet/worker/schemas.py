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
* Confluent schema ids are fetched from the Confluent registry in a thread, so the
  blocking HTTP lookup never stalls the event loop (the store caches the answer, or the
  failure, for the decode that follows).

Looking up *before* decoding keeps each partition's order: records are decoded and
batched in offset order, as audit chains and state history need; re-decoding dead
letters after the chunk would append them out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Collection
from typing import Any

import asyncpg

from sinkfleet.avro.codec import SchemaStore
from sinkfleet.avro.framing import CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC, SOE_HEADER_LEN
from sinkfleet.config import Settings
from sinkfleet.errors import DecodeError
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
                 retry_after: float = 5.0, timeout: float = 5.0) -> None:
        self.settings = settings
        self.store = store
        self.families = sorted(families)
        self.retry_after = retry_after
        self.timeout = timeout
        self.lookups = 0  # queries for unknown fingerprints (tests, logs)
        self._asked: dict[bytes, float] = {}  # unknown fingerprint -> last looked up
        self._conn: asyncpg.Connection | None = None
        self._registry = True  # False: this database has no sinkfleet.schema_versions

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
        """Learn the writer schemas of a fetched chunk that the store lacks, if it can."""
        unknown: set[bytes] = set()
        ids: set[int] = set()
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
                    ids.add(int.from_bytes(value[1:CONFLUENT_HEADER_LEN], "big"))
        if unknown:
            await self._look_up(unknown)
        for schema_id in ids:
            if self.store.needs_lookup(schema_id):
                with contextlib.suppress(DecodeError):  # remembered; the decode says why
                    await asyncio.to_thread(self.store.by_id, schema_id)

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
