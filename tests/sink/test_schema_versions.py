"""The schema registry in PostgreSQL: `db migrate` and `schemas register` record new
versions after the compatibility check, and refuse incompatible ones naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import load_catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import CatalogueError, SchemaIncompatible
from sinkfleet.ops.schemas.registry import check_against_db, list_versions, register
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.sink.postgres.schema_versions import registered_versions
from tests.support.evolution import EXTRA, NOTE, Evo, forget, new_evo

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def evo(stack: Settings, tmp_path: Path) -> AsyncIterator[Evo]:
    made = new_evo(tmp_path, stack)
    yield made
    await forget(made)


async def versions(evo: Evo) -> list[int]:
    async with pg(evo.stack) as conn:
        return [r.version for r in await registered_versions(conn, [evo.family])]


async def test_migrate_registers_versions_and_accepts_compatible_evolution(evo: Evo) -> None:
    said: list[str] = []
    for schema in (evo.schema(), evo.schema(NOTE), evo.schema(NOTE, EXTRA)):
        settings, cat = evo.version(schema)
        await migrate(settings, cat, said.append)
    fingerprints = [Codec(s, SchemaStore()).fingerprint
                    for s in (evo.schema(), evo.schema(NOTE), evo.schema(NOTE, EXTRA))]
    assert [m for m in said if m.startswith("registered")] == [
        f"registered {evo.family} version {n} (fingerprint {fp.hex()})"
        for n, fp in enumerate(fingerprints, 1)]
    rows = await list_versions(settings, [evo.family])
    assert [(r.version, r.fingerprint) for r in rows] == list(enumerate(fingerprints, 1))
    # the exact text of the .avsc file is kept
    assert rows[-1].schema == (cat.root / "schemas" / f"{evo.family}.avsc").read_text()
    said.clear()
    await migrate(settings, cat, said.append)  # unchanged: nothing new
    assert not [m for m in said if m.startswith("registered")]
    [status] = await check_against_db(settings, cat, [evo.family])
    assert status.summary() == f"{evo.family}: unchanged (version 3)"


@pytest.mark.parametrize("field, message", [
    ({"name": "foo", "type": "string"},
     "field 'foo' was added without a default: records written with version 1 cannot be read"),
    ({"name": "n", "type": "string"},
     "field 'n': the new type string cannot read int: records written with version 1 cannot"
     " be read"),
], ids=["added-without-default", "type-changed"])
async def test_an_incompatible_change_is_refused_and_nothing_changes(
        evo: Evo, field: dict, message: str) -> None:
    settings, cat = evo.version(evo.schema())
    await migrate(settings, cat, lambda m: None)
    new = evo.schema()
    new["fields"] = [f for f in new["fields"] if f["name"] != field["name"]] + [field]
    settings, cat = evo.version(new)
    # a second sink in the same deploy: `db migrate` must not create it either
    (cat.root / "sinks" / "more.yaml").write_text(yaml.safe_dump(
        {"name": f"{evo.table}_more", "topic": evo.topic, "table": f"{evo.table}_more",
         "mode": "append", "id": ["id"], "columns": [{"name": "id", "from": "id"}]}))
    cat = load_catalogue(cat.root)
    for attempt in (register(settings, cat, lambda m: None),
                    migrate(settings, cat, lambda m: None)):
        with pytest.raises(SchemaIncompatible) as caught:
            await attempt
        assert str(caught.value).splitlines()[0] == f"{evo.family}: {message}"
    assert await versions(evo) == [1]
    async with pg(settings) as conn:
        assert await conn.fetchval("SELECT to_regclass($1)", f"{evo.table}_more") is None


async def test_a_topic_override_none_accepts_the_change(evo: Evo) -> None:
    settings, cat = evo.version(evo.schema())
    await migrate(settings, cat, lambda m: None)
    settings, cat = evo.version(evo.schema({"name": "foo", "type": "string"}),
                                compatibility="NONE")
    said: list[str] = []
    await register(settings, cat, said.append)
    assert said == [f"registered {evo.family} version 2 (fingerprint"
                    f" {Codec(cat.schemas[evo.family], SchemaStore()).fingerprint.hex()})"]
    assert await versions(evo) == [1, 2]


async def test_two_families_cannot_share_one_schema(evo: Evo, stack: Settings,
                                                    tmp_path: Path) -> None:
    settings, cat = evo.version(evo.schema())
    await migrate(settings, cat, lambda m: None)
    twin = Evo(tmp_path / "twin", stack, f"{evo.suffix[:-1]}x")
    (tmp_path / "twin").mkdir()
    settings, cat = twin.version(evo.schema())  # the same record, another family
    try:
        with pytest.raises(CatalogueError, match=f"its schema is {evo.family} version 1"):
            await register(settings, cat, lambda m: None)
    finally:
        await forget(twin)


async def test_workers_may_read_versions_but_not_register_them(stack: Settings) -> None:
    async with pg(stack) as conn:
        row = await conn.fetchrow(
            "SELECT has_table_privilege('sinkfleet_worker', 'sinkfleet.schema_versions',"
            " 'SELECT') AS s, has_table_privilege('sinkfleet_worker',"
            " 'sinkfleet.schema_versions', 'INSERT') AS i")
    assert (row["s"], row["i"]) == (True, False)
