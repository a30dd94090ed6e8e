"""Lag collection on real Kafka: exact records and seconds, statuses, the exporter."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from prometheus_client.parser import text_string_to_metric_families

from sinkfleet.ops.lag.collect import LagCollector
from sinkfleet.ops.lag.exporter import LagExporter
from tests.support.catalogue import ROOT, TestCatalogue
from tests.support.endpoints import free_port, get
from tests.support.kafka import end_offsets
from tests.support.waiting import async_wait_for, wait_for
from tests.support.worker import publish

pytestmark = pytest.mark.integration


async def commit(tc: TestCatalogue, offsets: dict[int, int], group: str | None = None
                 ) -> None:
    """Commit offsets for the test group as a consumer that then leaves (no live members)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=tc.settings.kafka_bootstrap,
                                group_id=group or tc.group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(tc.topic, p) for p in offsets]
        consumer.assign(tps)
        await consumer.commit({tp: offsets[tp.partition] for tp in tps})
    finally:
        await consumer.stop()


async def first_timestamps(tc: TestCatalogue, offsets: dict[int, int]) -> dict[int, float]:
    """The Kafka timestamp (s) of the record at ``offsets[p]`` of each partition: one
    assignment of them all, read until each gave its first record (re-assigning a consumer
    partition by partition once stalled past 10 s on a loaded CI machine)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=tc.settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {TopicPartition(tc.topic, p): off for p, off in offsets.items()}
        consumer.assign(list(tps))
        for tp, off in tps.items():
            consumer.seek(tp, off)
        out: dict[int, float] = {}
        deadline = asyncio.get_running_loop().time() + 60
        while len(out) < len(tps):
            assert asyncio.get_running_loop().time() < deadline, (
                f"no record at the given offset of partitions {sorted(set(offsets) - set(out))}")
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                if records and tp.partition not in out:
                    assert records[0].offset == tps[tp]
                    out[tp.partition] = records[0].timestamp / 1000
                    consumer.pause(tp)
        return out
    finally:
        await consumer.stop()


async def ends(tc: TestCatalogue) -> dict[int, int]:
    return {tp.partition: off for tp, off in (await end_offsets(tc.settings, [tc.topic])).items()}


async def test_lag_records_and_seconds_are_exact(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    await publish(tc, 600, seed=41)
    first = await ends(tc)
    await asyncio.sleep(1.5)  # let the first records age
    await publish(tc, 600, seed=42)
    end = await ends(tc)
    committed = {p: off // 2 for p, off in first.items()}  # half of the first batch
    await commit(tc, committed)
    truth = await first_timestamps(tc, committed)
    async with LagCollector(tc.settings, groups=[tc.group]) as collector:
        snap = await collector.collect()
    [group] = snap.groups
    assert group.group == tc.group and group.members == 0  # listed with no live members
    assert {p.partition for p in group.partitions} == set(range(6))
    for p in group.partitions:
        assert p.sample.committed == committed[p.partition]
        assert p.sample.log_end == end[p.partition]
        assert p.sample.lag_records == end[p.partition] - committed[p.partition]
        true_age = snap.at - truth[p.partition]
        assert p.sample.lag_seconds == pytest.approx(true_age, abs=0.001)
        if first[p.partition] > 0:
            assert true_age > 1.5
    assert group.lag_records == sum(end.values()) - sum(committed.values())


async def test_commit_below_the_log_start_lags_as_kafka_counts_with_expired_apart(
        catalogue_factory: Any) -> None:
    """Retention deleted records the group never read: lag is log end - committed, as
    `kafka-consumer-groups --describe` shows it, expired records are their own figure, and
    the age is that of the oldest record still in the log."""
    tc: TestCatalogue = await catalogue_factory()
    await publish(tc, 600, seed=43)
    end = await ends(tc)
    busy = [p for p, off in end.items() if off >= 20]
    committed = {p: 5 for p in busy}
    start = {p: end[p] // 2 for p in busy}  # retention took the first half
    await commit(tc, committed)
    admin = AIOKafkaAdminClient(bootstrap_servers=tc.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(tc.topic, p): RecordsToDelete(off)
                                    for p, off in start.items()})
    finally:
        await admin.close()
    truth = await first_timestamps(tc, start)
    async with LagCollector(tc.settings, groups=[tc.group]) as collector:
        snap = await collector.collect()
    [group] = snap.groups
    parts = {p.partition: p for p in group.partitions}
    assert set(parts) == set(busy)
    for p in busy:
        s = parts[p].sample
        assert (s.committed, s.log_start, s.log_end) == (5, start[p], end[p])
        assert s.lag_records == end[p] - 5
        assert s.expired_records == start[p] - 5
        assert s.lag_seconds == pytest.approx(snap.at - truth[p], abs=0.001)
        assert parts[p].status == "ERROR"  # the group lost records: out of range
    assert group.lag_records == sum(end[p] - 5 for p in busy)
    assert group.expired_records == sum(start[p] - 5 for p in busy)
    api = group.as_dict()
    assert api["expired_records"] == group.expired_records
    assert {q["partition"]: q["expired_records"] for q in api["partitions"]} == {
        p: start[p] - 5 for p in busy}


async def test_two_groups_at_different_offsets_of_one_partition(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    await publish(tc, 600, seed=45)
    end = await ends(tc)
    a = {p: off // 4 for p, off in end.items()}
    b = {p: off // 2 for p, off in end.items()}
    other = f"{tc.group}-b"
    await commit(tc, a)
    await commit(tc, b, group=other)
    truth_a = await first_timestamps(tc, {p: o for p, o in a.items() if o < end[p]})
    truth_b = await first_timestamps(tc, {p: o for p, o in b.items() if o < end[p]})
    async with LagCollector(tc.settings, groups=[tc.group, other]) as collector:
        snap = await collector.collect()
    by_group = {g.group: g for g in snap.groups}
    for group, truth, offsets in ((tc.group, truth_a, a), (other, truth_b, b)):
        for p in by_group[group].partitions:
            assert p.sample.committed == offsets[p.partition]
            if p.sample.lag_records:
                assert p.sample.lag_seconds == pytest.approx(snap.at - truth[p.partition],
                                                             abs=0.001)


async def test_rewind_and_stall_statuses(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    await publish(tc, 300, seed=43)
    end = await ends(tc)
    await commit(tc, {p: off // 2 for p, off in end.items()})
    async with LagCollector(tc.settings, groups=[tc.group], stall_seconds=1.0,
                            window_seconds=1.5) as collector:
        assert (await collector.collect()).groups[0].status == "OK"
        await asyncio.sleep(1.2)
        stalled = await collector.collect()
        assert stalled.groups[0].status == "STALL"
        assert {p.status for p in stalled.groups[0].partitions if p.sample.lag_records} == {
            "STALL"}
        await commit(tc, dict.fromkeys(end, 0))  # a replay rewinds the group
        rewound = await collector.collect()
        assert rewound.groups[0].status == "REWIND"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def test_exporter_serves_the_same_numbers_as_metrics_and_json(
        catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    await publish(tc, 300, seed=44)
    end = await ends(tc)
    committed = {p: off // 2 for p, off in end.items()}
    await commit(tc, committed)
    exporter = LagExporter(tc.settings, interval=0.5, groups=[tc.group])
    bound: list[int] = []
    task = asyncio.create_task(exporter.run("127.0.0.1", 0, bound.append))
    try:
        async def ready() -> bool:
            return bool(bound) and exporter.snapshot is not None

        await async_wait_for(ready, 30, "the exporter's first snapshot", interval=0.1)
        base = f"http://127.0.0.1:{bound[0]}"
        api = json.loads(await asyncio.to_thread(_get, base + "/api/lag"))
        metrics = await asyncio.to_thread(_get, base + "/metrics")
        health = await asyncio.to_thread(_get, base + "/healthz")
        workers = json.loads(await asyncio.to_thread(_get, base + "/api/workers"))
    finally:
        exporter.stop()
        await task
    [group] = api["groups"]
    values = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.labels.get("group") == tc.group:
                values[(s.name, s.labels.get("partition"), s.labels.get("status"))] = s.value
    for p in group["partitions"]:
        part = str(p["partition"])
        assert p["committed_offset"] == committed[p["partition"]]
        assert values[("sinkfleet_group_committed_offset", part, None)] == p["committed_offset"]
        assert values[("sinkfleet_group_log_end_offset", part, None)] == p["log_end_offset"]
        assert values[("sinkfleet_group_lag_records", part, None)] == p["lag_records"]
        assert ("sinkfleet_group_lag_seconds", part, None) in values
    assert values[("sinkfleet_group_status", None, "OK")] == 1
    assert values[("sinkfleet_group_status", None, "STALL")] == 0
    assert values[("sinkfleet_group_members", None, None)] == 0
    assert health == "ok"
    assert "error" not in workers and isinstance(workers["workers"], list)


def test_lag_exporter_command_serves_and_stops_cleanly(stack: Any, tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sinkfleet", "lag-exporter", "--port", str(port),
         "--interval", "1", "--group", "no-such-group"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "SINKFLEET_HOME": str(ROOT)})
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz") == (200, "ok"), 60,
                 "the exporter to answer /healthz")
        status, body = get(f"http://127.0.0.1:{port}/api/lag")
        assert status == 200 and json.loads(body)["groups"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
