"""`sinkfleet stats --bytes`: each sink's bytes by component, per row (real PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sinkfleet.ops.stats.pg import table_stats
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.worker.rows import RowBuilder
from tests.sink.test_storage_layout import rows_of

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_bytes_by_component_in_the_cli(catalogue_factory: Any) -> None:
    tc = await catalogue_factory()
    sink = tc.catalogue.sinks[tc.table]
    async with pg(tc.settings) as conn:
        await conn.copy_records_to_table(
            tc.table, records=rows_of(sink, 1000, datetime.now(UTC) - timedelta(minutes=5)),
            columns=RowBuilder(sink).names)
        await conn.execute(f"VACUUM {sink.spec.qualified_table}")
        stats = await table_stats(conn, "public", tc.table, exact=True)
    assert stats.parts is not None and stats.bytes is not None
    env = {**os.environ, "SINKFLEET_HOME": str(tc.root), "COLUMNS": "250",
           "SINKFLEET_STATE_DIR": str(tc.settings.state)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sinkfleet", "stats", "--sink", tc.table,
                               "--exact", *args], env=env, capture_output=True, text=True,
                              timeout=120, cwd=tc.root)

    out = run("--json")
    assert out.returncode == 0, out.stderr
    [found] = json.loads(out.stdout)["sinks"]
    assert found["components"] == [
        {"name": p.name, "bytes": p.bytes, "bytes_per_row": round(p.bytes / 1000, 1)}
        for p in stats.parts]
    table = run("--bytes")
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if tc.table in line]
    for part in stats.parts:
        assert any(part.name in line and f" {part.bytes / 1000:,.1f} " in line
                   for line in lines), (part.name, table.stdout)
    assert any("total" in line and f" {stats.bytes / 1000:,.1f} " in line for line in lines)
    assert "bytes by component" in table.stdout
    assert "bytes by component" not in run().stdout  # only when asked
