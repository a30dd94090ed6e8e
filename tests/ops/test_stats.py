"""`sinkfleet stats` against a catalogue with data stored by a real worker (PostgreSQL,
Kafka and the Redis caches it writes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.ops.stats.report import collect_stats
from sinkfleet.sink.postgres.connect import pg
from tests.ops.backup_support import (
    Scenario,
    drain,
    drop_scenario,
    make_scenario,
    publish_events,
    publish_states,
)

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def filled(stack: Settings, tmp_path: Path, scratch_db: Callable[[], Awaitable[str]]
                 ) -> AsyncIterator[tuple[Scenario, list[dict[str, Any]]]]:
    """1,500 experience events and 300 workflow-state updates, stored by a worker."""
    sc = await make_scenario(tmp_path, stack, await scratch_db())
    events = await publish_events(sc, 1500, seed=11)
    await publish_states(sc, 300, seed=11)
    await drain(sc)
    yield sc, events
    await drop_scenario(sc)


def micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


async def facts(sc: Scenario) -> dict[str, object]:
    ev, st = f'"{sc.events.table}"', f'"{sc.state_table}"'
    async with pg(sc.settings) as conn:
        await conn.execute(f"ANALYZE {ev}; ANALYZE {st}; ANALYZE \"{sc.state_table}_history\"")
        return {
            "states": await conn.fetchval(f"SELECT count(*) FROM {st}"),
            "history": await conn.fetchval(f'SELECT count(*) FROM "{sc.state_table}_history"'),
            "recorded": tuple(await conn.fetchrow(
                f'SELECT min(recorded_at), max(recorded_at) FROM "{sc.state_table}_history"')),
            "episodes": await conn.fetchval(
                f"SELECT count(*) FROM (SELECT DISTINCT agent_id, episode_id FROM {ev}) k"),
            "partitions": await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", ev),
            "bytes": await conn.fetchval(
                "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree($1)", ev),
            "state_bytes": await conn.fetchval("SELECT pg_total_relation_size($1)", st),
        }


async def test_stats_per_sink_group_and_cache(
        filled: tuple[Scenario, list[dict[str, Any]]]) -> None:
    sc, published = filled
    known = await facts(sc)
    report = await collect_stats(sc.settings, sc.catalogue, exact=True)
    by_sink = {s.sink: s for s in report.sinks}
    ev, st = by_sink[sc.events.table], by_sink[sc.state_table]

    assert (ev.main.rows, ev.main.exact, ev.mode) == (1500, True, "append")
    assert ev.main.partitions == known["partitions"] > 1
    assert ev.main.bytes == known["bytes"] > 0
    assert ev.main.bytes_per_row == pytest.approx(int(str(known["bytes"])) / 1500)
    stamps = [p["timestamp"] for p in published]
    assert ev.time_column == "ts"
    assert (ev.oldest, ev.newest) == (micros(min(stamps)), micros(max(stamps)))

    assert st.main.rows == known["states"] and st.history is not None
    assert st.history.rows == known["history"] and st.main.partitions == 0
    assert st.main.bytes == known["state_bytes"] and st.history.bytes
    assert st.time_column == f"{sc.state_table}_history.recorded_at"
    assert (st.oldest, st.newest) == known["recorded"]

    [group] = report.groups
    assert group.group == sc.group and len(group.partitions) == 6
    assert group.lag == 0 and group.stored == group.log_end == 1800 and group.unstored == 0

    redis = report.redis
    assert redis.available and redis.hit_rate is not None and redis.hit_rate.scope == "instance"
    assert redis.sinks[sc.events.table].by_cache == {"recent": known["episodes"]}
    assert redis.sinks[sc.state_table].by_cache == {"latest": known["states"]}
    assert all(redis.sinks[n].memory_bytes > 0 for n in (sc.events.table, sc.state_table))

    # Estimates (after ANALYZE, exact for tables this small) and the same totals.
    estimated = await collect_stats(sc.settings, sc.catalogue, sink=sc.events.table)
    [only] = estimated.sinks
    assert only.main.exact is False and only.main.rows == 1500
    assert [g.group for g in estimated.groups] == [sc.group]


def test_stats_cli_json_and_table(filled: tuple[Scenario, list[dict[str, Any]]]) -> None:
    sc, _ = filled
    env = {**os.environ, "SINKFLEET_HOME": str(sc.root), "COLUMNS": "250",
           "SINKFLEET_STATE_DIR": str(sc.settings.state), "SINKFLEET_PG_DATABASE": sc.db}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sinkfleet", "stats", *args], env=env,
                              capture_output=True, text=True, timeout=120, cwd=sc.root)

    out = run("--json", "--exact")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    sinks = {s["sink"]: s for s in data["sinks"]}
    assert sinks[sc.events.table]["rows"] == 1500 and sinks[sc.events.table]["rows_exact"]
    assert sinks[sc.state_table]["history"]["rows"] > 0
    assert data["groups"][0]["lag"] == 0 and data["redis"]["hit_rate"]["scope"] == "instance"
    table = run()
    assert table.returncode == 0, table.stderr
    for text in (sc.events.table, sc.state_table, sc.group, "cache hit rate", "~"):
        assert text in table.stdout, text
    wrong = run("--sink", "nope")
    assert wrong.returncode == 2 and "no sink 'nope'" in wrong.stderr
