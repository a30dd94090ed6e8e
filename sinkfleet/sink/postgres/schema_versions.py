"""``sinkfleet.schema_versions``: the registry of every family's schema versions.

Rows are added by ``sinkfleet schemas register`` and ``db migrate`` (after the
compatibility check in ``sinkfleet.catalogue.evolution``) and read by workers, which decode
records written with any registered version (docs/avro.md, "Schema evolution").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from sinkfleet.catalogue import Catalogue
from sinkfleet.catalogue.evolution import (
    FamilyStatus,
    Known,
    assess,
    families_of,
    refuse_incompatible,
)
from sinkfleet.errors import CatalogueError

# Serialises registrations (a transaction-level lock; `db migrate` holds its own too).
REGISTRY_LOCK_KEY = 0x51_4E_4B_53  # "SNKS"


@dataclass(frozen=True)
class RegisteredSchema:
    family: str
    version: int
    fingerprint: bytes  # CRC-64-AVRO, little-endian, as in single-object framing
    schema: str  # the exact JSON text registered
    registered_at: datetime


_COLUMNS = "family, version, fingerprint, schema, registered_at"


def _row(r: asyncpg.Record) -> RegisteredSchema:
    return RegisteredSchema(r["family"], r["version"], bytes(r["fingerprint"]), r["schema"],
                            r["registered_at"])


async def registry_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT to_regclass('sinkfleet.schema_versions') IS NOT NULL"))


async def registered_versions(conn: asyncpg.Connection,
                              families: Collection[str] | None = None
                              ) -> list[RegisteredSchema]:
    """Versions ordered by family, then version; all families if ``families`` is None."""
    if families is None:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM sinkfleet.schema_versions"
                                " ORDER BY family, version")
    else:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM sinkfleet.schema_versions"
                                " WHERE family = ANY($1::text[]) ORDER BY family, version",
                                list(families))
    return [_row(r) for r in rows]


async def versions_by_fingerprint(conn: asyncpg.Connection, families: Collection[str],
                                  fingerprints: Collection[bytes]) -> list[RegisteredSchema]:
    """The registered versions of ``families`` with these fingerprints (an index lookup)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM sinkfleet.schema_versions"
        " WHERE fingerprint = ANY($1::bytea[]) AND family = ANY($2::text[])",
        list(fingerprints), list(families))
    return [_row(r) for r in rows]


async def insert_version(conn: asyncpg.Connection, family: str, version: int,
                         fingerprint: bytes, schema: str) -> RegisteredSchema:
    row = await conn.fetchrow(
        "INSERT INTO sinkfleet.schema_versions (family, version, fingerprint, schema)"
        f" VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}", family, version, fingerprint, schema)
    assert row is not None
    return _row(row)


def _known(rows: Sequence[RegisteredSchema]) -> list[Known]:
    return [Known(f"version {r.version}", r.version, r.fingerprint, json.loads(r.schema))
            for r in rows]


async def assess_registered(conn: asyncpg.Connection, cat: Catalogue,
                            only: Sequence[str] | None = None) -> list[FamilyStatus]:
    rows = await registered_versions(conn)
    owner = {r.fingerprint: r for r in rows}
    statuses = []
    for family in families_of(cat, only):
        status = assess(cat, family, _known([r for r in rows if r.family == family]))
        other = owner.get(status.fingerprint)
        if other is not None and other.family != family:
            raise CatalogueError(
                f"{family}: its schema is {other.family} version {other.version} (the same"
                " fingerprint); two families cannot share one schema: give the record its"
                " own name or namespace")
        statuses.append(status)
    return statuses


async def register_catalogue(conn: asyncpg.Connection, cat: Catalogue,
                             say: Callable[[str], None],
                             only: Sequence[str] | None = None) -> list[FamilyStatus]:
    """Register each family's catalogue schema as a new version unless it is registered
    already; refuse (register nothing) if any is incompatible."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", REGISTRY_LOCK_KEY)
        statuses = await assess_registered(conn, cat, only)
        refuse_incompatible(statuses)
        for s in statuses:
            if s.is_new_version:
                row = await insert_version(conn, s.family, s.next_version, s.fingerprint,
                                           s.text)
                say(f"registered {s.family} version {row.version}"
                    f" (fingerprint {row.fingerprint.hex()})")
    return statuses


async def check_before_migrate(conn: asyncpg.Connection, cat: Catalogue) -> None:
    """`db migrate` refuses an incompatible schema change before changing anything."""
    if await registry_exists(conn):
        refuse_incompatible(await assess_registered(conn, cat))
