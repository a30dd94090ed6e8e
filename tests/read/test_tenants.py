"""Tenants kept apart by the database: a reader login (a member of sinkfleet_reader)
reading as tenant-1 tries to reach tenant-2's rows through every path — crafted filters
on tenant_id, cursors made under tenant-2, tenant-2's ids (cache and PostgreSQL), audit
trails with a `where` — and gets nothing; raw SQL shows the database does it."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from sinkfleet import Reader
from sinkfleet.errors import ConfigError
from sinkfleet.read.query import Filter, QueryError
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.tenancy import SET_TENANT_SQL, tenant_view
from tests.read.query_support import AUDITS, MEMORIES, WORKFLOWS, Seeded, json_rows, seeded

__all__ = ["seeded"]
pytestmark = pytest.mark.integration

TENANT_SINKS = ("workflow_states", "task_states", "memory_entries", "audit_entries")


def tenants(rows: list[dict[str, Any]]) -> set[str]:
    return {row["tenant_id"] for row in rows}


async def test_the_reader_role_sees_a_tenant_sink_only_through_its_tenant_view(
        seeded: Seeded) -> None:
    conn = await connect(seeded.reader)
    try:
        for name in TENANT_SINKS:
            sink = seeded.catalogue.sinks[seeded.names[name]]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {sink.spec.qualified_table}")
            view = tenant_view(sink)
            # no setting → no rows
            assert await conn.fetchval(f"SELECT count(*) FROM {view}") == 0
            async with conn.transaction():
                await conn.execute(SET_TENANT_SQL, "tenant-1")
                rows = [dict(r) for r in await conn.fetch(f"SELECT * FROM {view}")]
                # a crafted WHERE cannot widen the view
                crafted = await conn.fetch(
                    f"SELECT * FROM {view} WHERE tenant_id = 'tenant-2' OR true")
            assert rows and tenants(rows) == {"tenant-1"}
            assert tenants([dict(r) for r in crafted]) == {"tenant-1"}
            # the setting was local to that transaction
            assert await conn.fetchval(f"SELECT count(*) FROM {view}") == 0
        expected = sum(w["tenant_id"] == "tenant-1" for w in WORKFLOWS)
        async with conn.transaction():
            await conn.execute(SET_TENANT_SQL, "tenant-1")
            sink = seeded.catalogue.sinks[seeded.names["workflow_states"]]
            assert await conn.fetchval(f"SELECT count(*) FROM {tenant_view(sink)}") == expected
    finally:
        await conn.close()


@pytest.mark.parametrize("crafted", [
    ["tenant_id=tenant-2"], ["tenant_id!=tenant-1"], ["tenant_id in tenant-2,tenant-3"],
    ["tenant_id>tenant-1"], ["tenant_id is null"], ["tenant_id between tenant-2,tenant-9"],
    ["status=failed", "tenant_id=tenant-2"],
], ids=str)
async def test_crafted_tenant_filters_reach_nothing(seeded: Seeded, crafted: list[str]
                                                    ) -> None:
    async with Reader(seeded.reader, seeded.catalogue, tenant="tenant-1") as r:
        for name in TENANT_SINKS:
            sink = seeded.catalogue.sinks[seeded.names[name]]
            if any(f.split("=")[0] not in {c.name for c in sink.columns} for f in crafted
                   if f.startswith("status")):
                continue  # memory and audit entries have no status
            page = await r.query(seeded.names[name], crafted)
            assert page.rows == [] and page.next_cursor is None, name


async def test_a_tenant_reads_only_its_own_rows_whatever_the_path(seeded: Seeded) -> None:
    wf = seeded.names["workflow_states"]
    async with Reader(seeded.reader, seeded.catalogue, tenant="tenant-1") as r:
        everything = await r.query(wf, ["tenant_id in tenant-1,tenant-2"], limit=100)
        assert [w["workflow_id"] for w in everything.rows] == ["wf-1", "wf-2", "wf-3", "wf-4"]
        # another tenant's ids: latest state (cache first, then PostgreSQL) and history
        assert await r.state(wf, "tenant-2", "wf-1") is None
        assert await r.state(wf, "tenant-2", "wf-9") is None
        assert await r.state_history(wf, "tenant-2", "wf-1") == []
        assert await r.state_history(seeded.names["task_states"], "tenant-2", "wf-1",
                                     "task-1") == []
        own = await r.state(wf, "tenant-1", "wf-1")
        assert own is not None and own["tenant_id"] == "tenant-1"
        # tags only tenant-2 uses
        mem = seeded.names["memory_entries"]
        assert (await r.query(mem, ["tags contains secret"])).rows == []
        for m in MEMORIES:  # another tenant's ids, as filters
            mine = m["tenant_id"] == "tenant-1"
            got = (await r.query(mem, [f"entry_id={m['entry_id']}"])).rows
            assert [str(e["entry_id"]) for e in got] == ([m["entry_id"]] if mine else [])
        for a in AUDITS:
            got = (await r.query(seeded.names["audit_entries"],
                                 [f"entry_id={a['entry_id']}"])).rows
            assert len(got) == (a["tenant_id"] == "tenant-1")
        assert (await r.query(mem, ["tags overlaps secret,important"])).rows == [
            row for row in (await r.query(mem, ["tags contains important"])).rows]
        assert tenants((await r.query(mem, limit=100)).rows) == {"tenant-1"}
        assert len((await r.query(mem, limit=100)).rows) == sum(
            m["tenant_id"] == "tenant-1" for m in MEMORIES)
        # audit trails: another tenant's, or this one's with a `where` naming another
        audit = seeded.names["audit_entries"]
        assert await r.audit_trail(audit, tenant="tenant-2") == []
        assert await r.audit_trail(audit, tenant="tenant-1",
                                   where={"tenant_id": "tenant-2"}) == []
        trail = await r.audit_trail(audit, tenant="tenant-1")
        assert [e["action"] for e in trail] == [
            a["action"] for a in AUDITS if a["tenant_id"] == "tenant-1"]


async def test_the_cache_never_serves_another_tenants_state(seeded: Seeded) -> None:
    wf = seeded.names["workflow_states"]
    async with Reader(seeded.settings, seeded.catalogue) as owner:
        assert await owner.state(wf, "tenant-2", "wf-1") is not None
        assert owner.cache_stats.hits == 1  # it is cached: the tenant reader hits it too
    async with Reader(seeded.reader, seeded.catalogue, tenant="tenant-1") as r:
        assert await r.state(wf, "tenant-2", "wf-1") is None
        assert r.cache_stats.hits == 1


async def test_cursors_made_under_another_tenant_are_refused(seeded: Seeded) -> None:
    wf = seeded.names["workflow_states"]
    async with Reader(seeded.reader, seeded.catalogue, tenant="tenant-2") as r2:
        page = await r2.query(wf, limit=1)
    assert page.rows[0]["tenant_id"] == "tenant-2" and page.next_cursor is not None
    async with Reader(seeded.reader, seeded.catalogue, tenant="tenant-1") as r1:
        with pytest.raises(QueryError, match="belongs to another query"):
            await r1.query(wf, limit=1, cursor=page.next_cursor)


async def test_without_a_tenant_the_reader_login_cannot_read_tenant_sinks(seeded: Seeded
                                                                         ) -> None:
    async with Reader(seeded.reader, seeded.catalogue) as r:
        with pytest.raises(ConfigError, match="give the tenant"):
            await r.query(seeded.names["workflow_states"])
        # shared sinks (no tenant column) stay readable
        assert len((await r.query(seeded.names["policies"])).rows) == 7


async def test_the_owner_reading_as_a_tenant_gets_the_same_rows(seeded: Seeded) -> None:
    """The view filters whoever reads it: a tenant Reader is kept apart even when its
    login could read the tables."""
    wf = seeded.names["workflow_states"]
    async with Reader(seeded.settings, seeded.catalogue, tenant="tenant-2") as r:
        page = await r.query(wf, [Filter("tenant_id", "=", "tenant-1")])
        assert page.rows == []
        assert [w["workflow_id"] for w in (await r.query(wf)).rows] == ["wf-1", "wf-9"]


def test_the_cli_reads_as_a_tenant(seeded: Seeded) -> None:
    wf = seeded.names["workflow_states"]
    out = json_rows(seeded.cli("rows", "--sink", wf, "--tenant", "tenant-1", "--where",
                               "tenant_id=tenant-2", "--json", as_reader=True))
    assert out == {"rows": [], "next_cursor": None}
    state = seeded.cli("state", "--sink", wf, "tenant-2", "wf-1", "--tenant", "tenant-1",
                       "--json", as_reader=True)
    assert state.returncode == 0, state.stderr
    assert state.stdout.strip() == "[]"
    denied = seeded.cli("rows", "--sink", wf, as_reader=True)
    assert denied.returncode == 2
    assert denied.stderr.startswith("error: ") and "Traceback" not in denied.stderr
    assert "give the tenant" in denied.stderr
