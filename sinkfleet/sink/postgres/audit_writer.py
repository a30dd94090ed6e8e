"""Audit-mode writer: append-only, one hash chain per tenant (docs/sink-modes.md).

The content hash was already checked when the row was built (a mismatch is a
dead letter). Here each new entry is linked to its tenant's chain in offset order:
``chain_seq`` = head + 1, ``prev_hash`` = the head's ``chain_hash``,
``chain_hash`` = SHA-256(prev_hash ‖ content_hash). Heads are read inside the
batch's transaction — never cached — so a rolled-back savepoint or a rebalance
cannot leave a stale head behind. ``UNIQUE (tenant, chain_seq)`` refuses a fork;
if another writer got there first the whole batch is retried on fresh heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from sinkfleet.avro.hashing import ZERO_HASH, chain_hash
from sinkfleet.catalogue import Sink
from sinkfleet.errors import StorageUnavailable
from sinkfleet.sink.changes import Written
from sinkfleet.sink.postgres.ddl import AUDIT_CHAIN_COLUMNS, quote_ident


class ChainConflict(StorageUnavailable):
    """Another writer extended a chain (or stored an id) during this batch: retry."""


class AuditWriter:
    def __init__(self, sink: Sink, columns: Sequence[str]) -> None:
        spec = sink.spec
        assert spec.audit is not None
        self.sink = sink
        self.columns = list(columns)
        self._id_at = [self.columns.index(c) for c in spec.id]
        self._tenant_at = self.columns.index(spec.audit.tenant)
        self._hash_at = self.columns.index(spec.audit.hash)
        types = {c.name: c.pg_type for c in sink.columns}
        q = quote_ident
        table, tenant = spec.qualified_table, q(spec.audit.tenant)
        unnest = ", ".join(f"${i + 1}::{types[c]}[]" for i, c in enumerate(spec.id))
        names = ", ".join(f"c{i}" for i in range(len(spec.id)))
        match = " AND ".join(f"t.{q(c)} = d.c{i}" for i, c in enumerate(spec.id))
        self._existing = (f"SELECT {', '.join(f't.{q(c)}' for c in spec.id)} FROM {table} t"
                          f" JOIN unnest({unnest}) AS d({names}) ON {match}")
        self._heads = (
            f"SELECT d.tenant, h.chain_seq, h.chain_hash"
            f" FROM unnest($1::{types[spec.audit.tenant]}[]) AS d(tenant)"
            f" CROSS JOIN LATERAL (SELECT chain_seq, chain_hash FROM {table}"
            f" WHERE {tenant} = d.tenant ORDER BY chain_seq DESC LIMIT 1) h")
        self.copy_columns = [*self.columns, *AUDIT_CHAIN_COLUMNS]

    async def prepare(self, conn: asyncpg.Connection) -> None:
        return None

    async def write(self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                    sources: Sequence[Any] = ()) -> Written:
        """Chain and store the entries not stored yet; say how many were new (audit
        sinks have no cache)."""
        if not rows:
            return Written()
        ids = [tuple(row[i] for i in self._id_at) for row in rows]
        # Dedupe whole id tuples, then split them into one array per column: unnest zips
        # the arrays, so they must stay aligned (deduping each column alone paired a
        # tenant with another entry's id, and stored entries were chained again).
        columns = [list(c) for c in zip(*dict.fromkeys(ids), strict=True)]
        stored = {tuple(r) for r in await conn.fetch(self._existing, *columns)}
        fresh = []
        for row, key in zip(rows, ids, strict=True):
            if key not in stored:  # re-delivered entries are already in their chain
                stored.add(key)
                fresh.append(row)
        if not fresh:
            return Written()
        tenants = list({row[self._tenant_at] for row in fresh})
        heads = {r[0]: (r[1], bytes(r[2])) for r in await conn.fetch(self._heads, tenants)}
        chained = []
        for row in fresh:  # offset order: the chain follows the partition
            tenant = row[self._tenant_at]
            seq, prev = heads.get(tenant, (0, ZERO_HASH))
            link = chain_hash(prev, row[self._hash_at])
            heads[tenant] = (seq + 1, link)
            chained.append((*row, seq + 1, prev, link))
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    self.sink.spec.table, schema_name=self.sink.spec.db_schema,
                    records=chained, columns=self.copy_columns)
        except asyncpg.UniqueViolationError as exc:
            raise ChainConflict(f"audit sink {self.sink.spec.name}: another writer extended"
                                f" a chain or stored an entry meanwhile ({exc}); retrying"
                                " on fresh chain heads") from None
        return Written(len(chained))
