"""End to end on real Kafka and PostgreSQL: publish → worker processes → rows.

Every test checks exact counts, field-by-field equality and the offsets table.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.sink.postgres.connect import pg
from tests.support.catalogue import TestCatalogue
from tests.support.kafka import end_offsets
from tests.support.postgres import count_rows, stored_ids, stored_offsets
from tests.support.waiting import async_wait_for
from tests.support.worker import publish, stop, wait_all_stored

pytestmark = pytest.mark.integration


def assert_row_equals(row: Any, event: dict[str, Any]) -> None:
    ts = datetime.fromtimestamp(event["timestamp"] // 1_000_000, tz=UTC).replace(
        microsecond=event["timestamp"] % 1_000_000)
    assert bytes(row["event_id"]) == event["event_id"]
    assert row["ts"] == ts
    for name in ("agent_id", "episode_id", "step_number", "sequence_number", "event_type",
                 "flags", "policy_version_hash"):
        assert row[name] == event[name], name
    assert [row[f"state_l{i}"] for i in range(1, 9)] == event["state"]
    assert [row[f"action_l{i}"] for i in range(1, 9)] == event["action"]
    for part in ("homeostasis", "curiosity", "efficiency", "goal"):
        assert row[f"reward_{part}"] == event["reward"][part], part
    meta = event["action_metadata"]
    if meta is None:
        assert row["action_intent"] is row["action_executor"] is row["action_parameters"] is None
    else:
        assert row["action_intent"] == meta["intent_type"]
        assert row["action_executor"] == meta["executor_id"]
        assert json.loads(row["action_parameters"]) == json.loads(meta["parameters"])


async def test_every_published_event_is_stored_once_field_by_field(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    events = await publish(tc, 3000, seed=1)
    worker = tc.start_worker(tmp_path / "worker.log")
    try:
        await wait_all_stored(tc, 3000)
    finally:
        assert stop(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert await count_rows(tc) == (3000, 3000)
    async with pg(tc.settings) as conn:
        rows = {bytes(r["event_id"]): r for r in await conn.fetch(f'SELECT * FROM "{tc.table}"')}
    assert set(rows) == {e["event_id"] for e in events}
    for event in events:
        assert_row_equals(rows[event["event_id"]], event)
    # Offsets: PostgreSQL holds the log end of every partition, no more, no less.
    ends = await end_offsets(tc.settings, [tc.topic])
    assert await stored_offsets(tc) == {tp.partition: off for tp, off in ends.items() if off}


async def test_kill_9_mid_run_then_restart_loses_and_duplicates_nothing(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=300, max_age_ms=50)
    n = 20_000
    events = await publish(tc, n, seed=2)
    log = tmp_path / "worker.log"
    worker = tc.start_worker(log)

    async def some_stored() -> bool:
        return 0 < sum((await stored_offsets(tc)).values()) < n

    await async_wait_for(some_stored, 60, "the first batches", interval=0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    stored_at_kill = (await count_rows(tc))[0]
    assert 0 < stored_at_kill < n, "the kill must land mid-run"
    worker = tc.start_worker(log)
    try:
        await wait_all_stored(tc, n)
    finally:
        assert stop(worker) == 0
    assert await count_rows(tc) == (n, n)
    # The restarted worker resumed from PostgreSQL's offsets: nothing was re-inserted
    # beyond the batch in flight at the kill, and its log says where it resumed.
    assert re.search(r"resuming \d+ from PostgreSQL offsets", log.read_text())
    assert await stored_ids(tc) == {e["event_id"] for e in events}


async def test_a_static_member_killed_and_restarted_waits_for_no_session_expiry(
        catalogue_factory: Any, tmp_path: Path) -> None:
    """The session is 45 s: a dynamic member restarted after kill -9 would wait for the dead
    one to expire; a static member (same instance id) gets its partitions back at once."""
    tc: TestCatalogue = await catalogue_factory(max_records=300, max_age_ms=50)
    env = {"SINKFLEET_KAFKA_SESSION_TIMEOUT_MS": "45000",
           "SINKFLEET_WORKER_INSTANCE_ID": f"{tc.group}-slot-0"}
    log = tmp_path / "worker.log"
    first = await publish(tc, 2000, seed=4)
    worker = tc.start_worker(log, env)
    await wait_all_stored(tc, 2000)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    second = await publish(tc, 2000, seed=5)
    restarted = time.monotonic()
    worker = tc.start_worker(log, env)
    try:
        await wait_all_stored(tc, 4000)
        took = time.monotonic() - restarted
    finally:
        assert stop(worker) == 0
    assert took < 20, f"{took:.1f}s: the restarted static member waited out the session"
    assert await count_rows(tc) == (4000, 4000)
    assert await stored_ids(tc) == {e["event_id"] for e in first + second}


def _last_assignment(log: Path) -> set[str]:
    found = re.findall(r"assigned \d+ partition\(s\): (\S+)\[([\d,]*)\];", log.read_text())
    if not found:
        return set()
    topic, parts = found[-1]
    return {f"{topic}[{p}]" for p in parts.split(",") if p}


async def test_two_workers_split_the_partitions_and_store_exactly_n(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    workers = [tc.start_worker(logs[0])]
    await async_wait_for(lambda: _alen(_last_assignment(logs[0]) == _all(tc)), 60,
                         "the first worker to own every partition")
    workers.append(tc.start_worker(logs[1]))

    async def split() -> bool:
        a, b = _last_assignment(logs[0]), _last_assignment(logs[1])
        return bool(a) and bool(b) and not (a & b) and (a | b) == _all(tc)

    try:
        await async_wait_for(split, 90, "the two workers to share the partitions")
        events = await publish(tc, 6000, seed=3)
        await wait_all_stored(tc, 6000)
    finally:
        codes = [stop(w) for w in workers]
    tails = "\n".join(log.read_text()[-2000:] for log in logs)
    assert codes == [0, 0], tails
    # Both did real work, and together read every record exactly once: the second
    # worker resumed the first one's partitions from PostgreSQL's offsets.
    consumed = [int(re.findall(r"stopped cleanly: consumed=(\d+)", log.read_text())[-1])
                for log in logs]
    assert all(c > 0 for c in consumed) and sum(consumed) == 6000, tails
    assert await count_rows(tc) == (6000, 6000)
    assert len(events) == 6000


def _all(tc: TestCatalogue) -> set[str]:
    return {f"{tc.topic}[{p}]" for p in range(6)}


async def _alen(value: bool) -> bool:
    return value


async def test_replaying_everything_stores_nothing_twice(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=500)
    events = await publish(tc, 4000, seed=4)
    log = tmp_path / "w.log"
    worker = tc.start_worker(log)
    try:
        await wait_all_stored(tc, 4000)
    finally:
        assert stop(worker) == 0
    async with pg(tc.settings) as conn:
        before = await conn.fetch(f'SELECT * FROM "{tc.table}" ORDER BY event_id')
        # Rewind the group to the start: PostgreSQL's offsets are the source of truth.
        await conn.execute("UPDATE sinkfleet.consumer_offsets SET next_offset = 0"
                           " WHERE group_id = $1", tc.group)
    worker = tc.start_worker(log)
    try:
        await wait_all_stored(tc, 4000)
    finally:
        assert stop(worker) == 0
    last = log.read_text().strip().splitlines()[-1]
    assert "consumed=4000 stored=0 duplicates_skipped=4000" in last, last
    async with pg(tc.settings) as conn:
        after = await conn.fetch(f'SELECT * FROM "{tc.table}" ORDER BY event_id')
    assert [dict(r) for r in after] == [dict(r) for r in before]
    assert len(after) == len(events) == 4000
