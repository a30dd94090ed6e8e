"""`sinkfleet audit verify`: walk every tenant's hash chain and name every broken link.

Each row is checked three ways (docs/sink-modes.md): its content hash is recomputed
from the stored columns (someone edited the row), its ``prev_hash`` must be the
previous entry's ``chain_hash`` and its ``chain_seq`` the previous one plus one
(someone removed or inserted a row), and its ``chain_hash`` must be
SHA-256(prev_hash ‖ content_hash) (someone rewrote the links). Whoever can recompute
all of that (the table owner) is caught by the latest signed checkpoint instead: its
heads must still be in the chains (docs/audit-anchoring.md); `checkpoint` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from sinkfleet.avro.hashing import (
    HASH_VERSION,
    LEGACY_HASH_VERSION,
    ZERO_HASH,
    Canonical,
    CanonicalError,
    chain_hash,
    content_hash,
    named_types,
)
from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.catalogue.audit import hash_field
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError
from sinkfleet.ops.audit.checkpoint import (
    Anchor,
    Checkpoint,
    CheckpointError,
    CheckpointProblem,
    Head,
    load_anchor,
    write_checkpoint,
)
from sinkfleet.ops.signing import matching_keys, verify_key
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import quote_ident

_REASONS = {
    "content_hash": "the row's content does not hash to its stored content_hash: the row"
                    " was edited",
    "sequence": "chain_seq does not follow the previous entry: an entry was removed or"
                " inserted before this one",
    "prev_hash": "prev_hash is not the previous entry's chain_hash: the previous entry's"
                 " link was rewritten, or an entry was removed or inserted",
    "chain_hash": "chain_hash is not SHA-256(prev_hash || content_hash): this entry's"
                  " link was rewritten",
    "canonical": "the row has no canonical form (its values cannot be hashed)",
    "checkpoint_hash": "chain_hash differs from the signed checkpoint's at this sequence:"
                       " the chain was rewritten and recomputed",
    "truncated": "the chain ends before the signed checkpoint's head: entries at its end"
                 " were deleted",
    "tenant_missing": "the signed checkpoint holds this tenant's chain but the table has no"
                      " entry of it: the tenant's entries were deleted",
}


@dataclass(frozen=True)
class BrokenLink:
    sink: str
    tenant: str
    sequence: int  # chain_seq of the row that does not verify
    what: str  # content_hash | sequence | prev_hash | chain_hash | canonical | checkpoint_hash
    #            | truncated | tenant_missing (the last three against the signed checkpoint)
    expected: str
    found: str
    entry_id: str

    @property
    def reason(self) -> str:
        return _REASONS[self.what]


@dataclass
class Verification:
    sinks: list[str] = field(default_factory=list)
    tenants: int = 0
    entries: int = 0
    legacy: int = 0  # entries whose content hash is the v1 definition (stored before v2)
    broken: list[BrokenLink] = field(default_factory=list)
    anchor: Anchor | None = None  # None: no checkpoint directory was consulted
    # (sink, tenant) -> (chain_seq, chain_hash) of the last row walked: what
    # `audit checkpoint` signs
    heads: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)

    @property
    def anchored(self) -> bool:
        return self.anchor is not None and self.anchor.latest is not None

    @property
    def ok(self) -> bool:
        return not self.broken and not (self.anchor and self.anchor.problems)

    @property
    def broken_tenants(self) -> int:
        return len({(b.sink, b.tenant) for b in self.broken})

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "sinks": self.sinks, "tenants": self.tenants,
                "entries": self.entries, "legacy_v1_entries": self.legacy,
                "broken_count": len(self.broken), "broken_tenants": self.broken_tenants,
                "broken": [{**asdict(b), "reason": b.reason} for b in self.broken],
                "anchored": self.anchored,
                "checkpoint": (self.anchor.latest.summary()
                               if self.anchor and self.anchor.latest else None),
                "checkpoint_problems": [asdict(p) for p in self.anchor.problems]
                if self.anchor else []}


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

    def content_hash(self, row: asyncpg.Record, version: int = HASH_VERSION) -> bytes:
        record: dict[str, Any] = {}
        for name, column, parse in self.fields:
            value = row[column]
            if parse and value is not None:
                if version >= 2:  # stored as its canonical value; jsonb kept the numbers
                    value = Canonical(json.loads(value, parse_float=Decimal))
                else:  # v1 read floats, as it did when those rows were hashed
                    value = json.loads(value)
            record[name] = value
        return content_hash(record, self.schema, self.field, self.names, version)

    def matches(self, row: asyncpg.Record, stored: bytes) -> tuple[bool, bytes | None, str]:
        """(verifies, the v2 hash or None, why not canonical)."""
        try:
            current = self.content_hash(row)
        except (CanonicalError, ValueError, TypeError) as exc:
            current, problem = None, str(exc)
        else:
            if current == stored:
                return True, current, ""
            problem = ""
        try:  # a row stored before v2 carries a v1 hash
            if self.content_hash(row, LEGACY_HASH_VERSION) == stored:
                return True, None, ""
        except (CanonicalError, ValueError, TypeError):
            pass
        return False, current, problem


async def _verify_sink(conn: asyncpg.Connection, sink: Sink, tenant: str | None,
                       result: Verification, say: Callable[[str], None],
                       anchored: dict[str, Head]) -> None:
    """Check every row on its own (content, sequence, both links), so each broken link
    of every chain is reported and one break hides nothing after it; then each chain
    against its signed head in ``anchored`` (tenant -> head)."""
    spec = sink.spec
    assert spec.audit is not None
    if await conn.fetchval("SELECT to_regclass($1)", spec.qualified_table) is None:
        if not anchored:
            raise ConfigError(f"audit sink {spec.name}: table {spec.qualified_table} does"
                              " not exist; run `sinkfleet db migrate`")
    else:
        await _walk(conn, sink, tenant, result, anchored)
    for name, head in anchored.items():  # what the checkpoint holds that the table lost
        last = result.heads.get((spec.name, name))
        if last is None:
            result.broken.append(BrokenLink(spec.name, name, head.chain_seq, "tenant_missing",
                                            head.chain_hash, "no entries", ""))
        elif last[0] < head.chain_seq:
            result.broken.append(BrokenLink(spec.name, name, head.chain_seq, "truncated",
                                            f"chain_seq {head.chain_seq}",
                                            f"chain ends at chain_seq {last[0]}", ""))
    say(f"{spec.name}: {result.entries} entries checked so far")


async def _walk(conn: asyncpg.Connection, sink: Sink, tenant: str | None,
                result: Verification, anchored: dict[str, Head]) -> None:
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
    seq, prev = 0, ZERO_HASH
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for row in conn.cursor(sql, *args, prefetch=2000):
            if row[spec.audit.tenant] != current:
                current, seq, prev = row[spec.audit.tenant], 0, ZERO_HASH
                result.tenants += 1
            result.entries += 1

            def fail(what: str, expected: str, found: str, row: Any = row) -> None:
                result.broken.append(BrokenLink(spec.name, row["_tenant"], row["chain_seq"],
                                                what, expected, found, row["_entry"]))

            stored = bytes(row[spec.audit.hash])
            ok, recomputed, problem = rebuild.matches(row, stored)
            if problem:
                fail("canonical", "a row with a canonical form", problem)
            elif not ok:
                assert recomputed is not None
                fail("content_hash", recomputed.hex(), stored.hex())
            elif recomputed is None:
                result.legacy += 1
            row_prev, row_link = bytes(row["prev_hash"]), bytes(row["chain_hash"])
            if row["chain_seq"] != seq + 1:  # a gap also breaks prev_hash: one report
                fail("sequence", str(seq + 1), str(row["chain_seq"]))
            elif row_prev != prev:
                fail("prev_hash", prev.hex(), row_prev.hex())
            if row_link != chain_hash(row_prev, stored):
                fail("chain_hash", chain_hash(row_prev, stored).hex(), row_link.hex())
            head = anchored.get(row["_tenant"])
            if head is not None and head.chain_seq == row["chain_seq"] \
                    and head.chain_hash != row_link.hex():
                fail("checkpoint_hash", head.chain_hash, row_link.hex())
            seq, prev = row["chain_seq"], row_link
            result.heads[(spec.name, row["_tenant"])] = (seq, row_link)


async def verify(settings: Settings, catalogue: Catalogue, *, sink: str | None = None,
                 tenant: str | None = None, say: Callable[[str], None] = lambda m: None,
                 anchor: Anchor | None = None, max_age: float | None = None
                 ) -> Verification:
    """Verify every chain of the audit sinks (or one sink / one tenant), and against the
    latest signed checkpoint of ``settings.audit_checkpoints`` (or ``anchor``) if any;
    with ``max_age`` (seconds), a latest checkpoint older than that is a problem."""
    sinks = audit_sinks(catalogue, sink)
    if not sinks:
        raise ConfigError("the catalogue has no audit sink (mode: audit) to verify")
    if anchor is None:
        anchor = load_anchor(settings.audit_checkpoints, verify_key(settings))
    if max_age is not None:
        _check_age(anchor, max_age)
    result = Verification([s.spec.name for s in sinks], anchor=anchor)
    heads = anchor.latest.heads if anchor.latest else []
    if anchor.latest is not None and anchor.latest.database != settings.pg_database:
        anchor.problems.append(CheckpointProblem(
            str(anchor.latest.path), "database", f"the checkpoint is of database"
            f" {anchor.latest.database!r}, not {settings.pg_database!r}: its heads were not"
            " compared; give each database its own SINKFLEET_AUDIT_CHECKPOINT_DIR"))
        heads = []
    async with pg(settings) as conn:
        for s in sinks:
            anchored = {h.tenant: h for h in heads if h.sink == s.spec.name
                        and (tenant is None or h.tenant == tenant)}
            await _verify_sink(conn, s, tenant, result, say, anchored)
    return result


def _check_age(anchor: Anchor, max_age: float) -> None:
    """Checkpoints run on a schedule: one much older than the schedule means they
    stopped, or that the newest were deleted (which the files alone cannot show)."""
    latest = anchor.latest
    if latest is None:
        anchor.problems.append(CheckpointProblem(
            str(anchor.directory), "stale", "no valid checkpoint, but --max-age asks for"
            " one: run `sinkfleet audit checkpoint` on a schedule"))
        return
    age = (datetime.now(UTC) - datetime.fromisoformat(latest.created_at)).total_seconds()
    if age > max_age:
        anchor.problems.append(CheckpointProblem(
            str(latest.path), "stale", f"the latest valid checkpoint (#{latest.seq} of"
            f" {latest.created_at}) is {age:.0f} s old, more than --max-age {max_age:g}:"
            " checkpoints stopped, or newer ones were deleted"))


@dataclass
class CheckpointResult:
    checkpoint: Checkpoint
    verification: Verification
    carried: list[Head]  # the previous checkpoint's heads kept: chain broken or unchecked


async def checkpoint(settings: Settings, catalogue: Catalogue,
                     say: Callable[[str], None] = lambda m: None) -> CheckpointResult:
    """Verify every chain, then sign the heads of those that verify as the next
    checkpoint. A broken or vanished chain keeps the head the previous checkpoint
    signed, so a checkpoint never forgets what an earlier one attested."""
    key = matching_keys(settings, create=True)
    anchor = load_anchor(settings.audit_checkpoints, key.public)
    if anchor.problems:
        raise CheckpointError(
            f"{anchor.directory}: refusing to sign on top of a damaged checkpoint history ("
            + "; ".join(f"{Path(p.file).name}: {p.detail}" for p in anchor.problems)
            + "); investigate (`sinkfleet audit verify`), then move the bad files aside")
    if anchor.latest is not None and anchor.latest.database != settings.pg_database:
        raise CheckpointError(f"{anchor.directory} holds checkpoints of database"
                              f" {anchor.latest.database!r}, not {settings.pg_database!r}:"
                              " give each database its own SINKFLEET_AUDIT_CHECKPOINT_DIR")
    result = await verify(settings, catalogue, say=say, anchor=anchor)
    broken = {(b.sink, b.tenant) for b in result.broken}
    heads = [Head(name, tenant, seq, link.hex())
             for (name, tenant), (seq, link) in result.heads.items()
             if (name, tenant) not in broken]
    previous = anchor.latest.heads if anchor.latest else []
    carried = [h for h in previous
               if (h.sink, h.tenant) in broken or h.sink not in result.sinks]
    written = write_checkpoint(settings.audit_checkpoints, key, anchor, settings.pg_database,
                               datetime.now(UTC).isoformat(), [*heads, *carried])
    return CheckpointResult(written, result, carried)
