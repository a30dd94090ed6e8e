"""`sinkfleet schemas check|register|list` against PostgreSQL (connections here; the
rules in ``sinkfleet.catalogue.evolution``, the SQL in ``sink/postgres/schema_versions``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sinkfleet.catalogue import Catalogue
from sinkfleet.catalogue.evolution import FamilyStatus
from sinkfleet.config import Settings
from sinkfleet.errors import MigrationError
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.schema_versions import (
    RegisteredSchema,
    assess_registered,
    register_catalogue,
    registered_versions,
    registry_exists,
)


def _no_registry(hint: str = "") -> MigrationError:
    return MigrationError("there is no schema registry yet (sinkfleet.schema_versions): run"
                          f" `sinkfleet db migrate` first{hint}")


async def check_against_db(settings: Settings, cat: Catalogue,
                           only: Sequence[str] | None = None) -> list[FamilyStatus]:
    async with pg(settings) as conn:
        if not await registry_exists(conn):
            raise _no_registry(", or check against files with --against DIR")
        return await assess_registered(conn, cat, only)


async def register(settings: Settings, cat: Catalogue, say: Callable[[str], None],
                   only: Sequence[str] | None = None) -> list[FamilyStatus]:
    async with pg(settings) as conn:
        if not await registry_exists(conn):
            raise _no_registry()
        return await register_catalogue(conn, cat, say, only)


async def list_versions(settings: Settings, only: Sequence[str] | None = None
                        ) -> list[RegisteredSchema]:
    async with pg(settings) as conn:
        if not await registry_exists(conn):
            raise _no_registry()
        return await registered_versions(conn, only or None)
