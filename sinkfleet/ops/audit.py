"""`sinkfleet audit verify`: walk every tenant's hash chain and name the first broken link.

Each row is checked three ways (docs/sink-modes.md): its content hash is recomputed
from the stored columns (someone edited the row), its ``prev_hash`` must be the
previous entry's ``chain_hash`` and its ``chain_seq`` the previous one plus one
(someone removed or inserted a row), and its ``chain_hash`` must be
SHA-256(prev_hash ‖ content_hash) (someone rewrote the links).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError
from sinkfleet.sink.audit import (
    ZERO_HASH,
    CanonicalError,
    chain_hash,
    content_hash,
    hash_field,
    named_types,
)
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.ddl import quote_ident


@dataclass(frozen=True)
class BrokenLink:
    sink: str
    tenant: str
    sequence: int  # chain_seq of the first row that does not verify
    what: str  # content_hash | prev_hash | chain_hash | sequence
    expected: str
    found: str
    entry_id: str


@dataclass
class Verification:
    sinks: list[str] = field(default_factory=list)
    tenants: int = 0
    entries: int = 0
    broken: list[BrokenLink] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "sinks": self.sinks, "tenants": self.tenants,
                "entries": self.entries, "broken": [asdict(b) for b in self.broken]}


def audit_sinks(catalogue: Catalogue, name: str | None = None) -> list[Sink]:
    sinks = [s for s in catalogue.sinks.values() if s.spec.audit is not None]
    if name is not None:
        sinks = [s for s in sinks if s.spec.name == name]
        if not sinks:
            known = ", ".join(s.spec.name for s in audit_sinks(catalogue)) or "none"
            raise ConfigError(f"no audit sink {name!r} in sinks/ (audit sinks: {known})")
    return sinks


class _Rebuild:
    """The hashed record of an audit sink, rebuilt from a stored row."""

    def __init__(self, sink: Sink) -> None:
        self.schema = sink.schema
        self.field = hash_field(sink)
        self.names = named_types(sink.schema)
        self.fields = []  # (record field, column, parse jsonb text)
        for col in sink.columns:
            if col.source is None or col.source.path[0] == self.field:
                continue
            avro = col.source.avro_type
            is_string = avro == "string" or (isinstance(avro, dict)
                                             and avro.get("type") == "string")
            self.fields.append((col.source.path[0], col.name,
                                col.pg_type == "jsonb" and not is_string))

    def content_hash(self, row: asyncpg.Record) -> bytes:
        record: dict[str, Any] = {}
        for name, column, parse in self.fields:
            value = row[column]
            record[name] = json.loads(value) if parse and value is not None else value
        return content_hash(record, self.schema, self.field, self.names)


async def _verify_sink(conn: asyncpg.Connection, sink: Sink, tenant: str | None,
                       result: Verification, say: Callable[[str], None]) -> None:
    spec = sink.spec
    assert spec.audit is not None
    rebuild = _Rebuild(sink)
    q = quote_ident
    tcol = q(spec.audit.tenant)
    ident = " || ':' || ".join(f"{q(c)}::text" for c in spec.id)
    where, args = ("", []) if tenant is None else (f" WHERE {tcol} = $1", [tenant])
    sql = (f"SELECT *, {tcol}::text AS _tenant, {ident} AS _entry FROM {spec.qualified_table}"
           f"{where} ORDER BY {tcol}, chain_seq")
    current: Any = object()
    seq, prev, broken = 0, ZERO_HASH, False
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for row in conn.cursor(sql, *args, prefetch=2000):
            if row[spec.audit.tenant] != current:
                current, seq, prev, broken = row[spec.audit.tenant], 0, ZERO_HASH, False
                result.tenants += 1
            result.entries += 1
            if broken:
                continue  # report the first broken link of each chain only

            def fail(what: str, expected: str, found: str, row: Any = row) -> None:
                nonlocal broken
                broken = True
                result.broken.append(BrokenLink(spec.name, row["_tenant"], row["chain_seq"],
                                                what, expected, found, row["_entry"]))

            stored = bytes(row[spec.audit.hash])
            try:
                recomputed = rebuild.content_hash(row)
            except (CanonicalError, ValueError, TypeError) as exc:
                fail("content_hash", "a row with a canonical form", str(exc))
                continue
            if row["chain_seq"] != seq + 1:
                fail("sequence", str(seq + 1), str(row["chain_seq"]))
            elif recomputed != stored:
                fail("content_hash", recomputed.hex(), stored.hex())
            elif bytes(row["prev_hash"]) != prev:
                fail("prev_hash", prev.hex(), bytes(row["prev_hash"]).hex())
            elif bytes(row["chain_hash"]) != chain_hash(prev, stored):
                fail("chain_hash", chain_hash(prev, stored).hex(),
                     bytes(row["chain_hash"]).hex())
            seq, prev = row["chain_seq"], bytes(row["chain_hash"])
    say(f"{spec.name}: {result.entries} entries checked so far")


async def verify(settings: Settings, catalogue: Catalogue, *, sink: str | None = None,
                 tenant: str | None = None, say: Callable[[str], None] = lambda m: None
                 ) -> Verification:
    """Verify every chain of the audit sinks (or one sink / one tenant)."""
    sinks = audit_sinks(catalogue, sink)
    if not sinks:
        raise ConfigError("the catalogue has no audit sink (mode: audit) to verify")
    result = Verification([s.spec.name for s in sinks])
    conn = await connect(settings)
    try:
        for s in sinks:
            await _verify_sink(conn, s, tenant, result, say)
    finally:
        await conn.close()
    return result
