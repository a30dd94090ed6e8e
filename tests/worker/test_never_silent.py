"""A worker is either making progress or says why (BRIEF guarantee 7), and a part of it
that fails never crashes it nor skips a record: the dead-letter topic gone, a grant
missing at assignment, PostgreSQL down during a revoke, Kafka unreachable at start,
Redis down."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from tests.support.catalogue import TestCatalogue
from tests.support.deadletters import read_all
from tests.support.endpoints import free_port, get, samples
from tests.support.faults import TcpProxy
from tests.support.postgres import count_rows, stored_offsets
from tests.support.waiting import async_wait_for, wait_for
from tests.support.worker import publish, stop, wait_all_stored

pytestmark = pytest.mark.integration


def health_of(base: str) -> tuple[tuple[int, str], tuple[int, str]]:
    return get(base + "/healthz"), get(base + "/readyz")


async def test_an_unreachable_dead_letter_topic_pauses_and_degrades_never_crashes(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1, max_records=50, max_age_ms=50)
    dlq = f"{tc.topic}.dlq"
    admin = AIOKafkaAdminClient(bootstrap_servers=tc.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([dlq])  # the broker never auto-creates topics
        await asyncio.sleep(1)
        load = ExperienceLoad(seed=31, agents=2, agent_prefix=f"t{tc.suffix}")
        good = [next(load) for _ in range(200)]
        async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
            for i, event in enumerate(good):
                await pub.publish("experience_event", event)
                if i == 99:
                    await pub.send_raw(tc.topic, b"poison bytes", key=b"p")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        worker = tc.start_worker(tmp_path / "w.log",
                                 extra_env={"SINKFLEET_METRICS_PORT": str(port)})
        try:
            def degraded() -> bool:
                (code, body), (ready, _) = health_of(base)
                return code == 200 and "dead-letters: cannot send 1 dead letter" in body \
                    and ready == 503

            await asyncio.to_thread(wait_for, degraded, 60, "/healthz to name the DLQ")
            await asyncio.sleep(3)  # still alive, nothing stored past the poison record
            assert worker.poll() is None
            assert sum((await stored_offsets(tc)).values()) <= 100
            text = (await asyncio.to_thread(get, base + "/metrics"))[1]
            assert samples(text)[("sinkfleet_worker_degraded", (
                ("component", "dead-letters"), ("group", tc.group)))] == 1.0
            assert samples(text)[("sinkfleet_dead_letter_send_failures_total", (
                ("group", tc.group),))] >= 1

            await admin.create_topics([NewTopic(dlq, 1, 1)])  # the operator repairs it
            await wait_all_stored(tc, 200)
            await asyncio.to_thread(wait_for, lambda: health_of(base)[0] == (200, "ok"), 30,
                                    "/healthz to be ok again")
        finally:
            code = stop(worker)
        assert code == 0, (tmp_path / "w.log").read_text()[-3000:]
    finally:
        await admin.close()
    assert await count_rows(tc) == (200, 200)
    dead = await read_all(tc.settings, dlq, 1)
    assert [(m.value, m.key) for m in dead] == [(b"poison bytes", b"p")]
    assert dict(dead[0].headers)["sinkfleet.offset"] == b"100"


async def _limited_role(tc: TestCatalogue, grant_offsets: bool) -> tuple[str, str]:
    """A login role with what a worker needs to start, but (unless ``grant_offsets``)
    no access to the stored offsets nor the workers table."""
    role, password = f"t_{tc.suffix}", secrets.token_hex(12)
    async with pg(tc.settings) as conn:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await conn.execute(f"GRANT USAGE ON SCHEMA sinkfleet TO {role}")
        await conn.execute(f"GRANT SELECT ON sinkfleet.schema_versions TO {role}")
        await conn.execute(f'GRANT SELECT, INSERT ON "{tc.table}" TO {role}')
        await conn.execute(f"GRANT TEMPORARY ON DATABASE {tc.settings.pg_database} TO {role}")
        if grant_offsets:
            await conn.execute(f"GRANT SELECT, INSERT, UPDATE ON sinkfleet.consumer_offsets"
                               f" TO {role}")
    return role, password


async def _drop_role(tc: TestCatalogue, role: str) -> None:
    async with pg(tc.settings) as conn:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")


async def test_a_missing_grant_at_assignment_fails_loudly_instead_of_pausing_forever(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    await publish(tc, 50, seed=32)
    role, password = await _limited_role(tc, grant_offsets=False)
    port = free_port()
    log = tmp_path / "w.log"
    try:
        worker = tc.start_worker(log, extra_env={
            "SINKFLEET_PG_USER": role, "SINKFLEET_PG_PASSWORD": password,
            "SINKFLEET_METRICS_PORT": str(port)})
        try:
            code = await asyncio.to_thread(worker.wait, 60)
        finally:
            if worker.poll() is None:
                stop(worker)
    finally:
        await _drop_role(tc, role)
    text = log.read_text()
    assert code == 2, text[-3000:]
    assert "assigning partitions failed: InsufficientPrivilegeError: permission denied for" \
           " table consumer_offsets" in text, text[-3000:]
    assert "sinkfleet db migrate" in text
    assert "Traceback" not in text
    assert await count_rows(tc) == (0, 0)
    assert password not in text


async def test_a_heartbeat_without_its_grant_degrades_the_worker_and_keeps_beating(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    role, password = await _limited_role(tc, grant_offsets=True)  # workers table: no
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        worker = tc.start_worker(tmp_path / "w.log", extra_env={
            "SINKFLEET_PG_USER": role, "SINKFLEET_PG_PASSWORD": password,
            "SINKFLEET_METRICS_PORT": str(port)})
        try:
            def says_heartbeat() -> bool:
                (code, body), (ready, _) = health_of(base)
                return (code == 200 and "heartbeat: InsufficientPrivilegeError" in body
                        and ready == 200)

            await asyncio.to_thread(wait_for, says_heartbeat, 60, "/healthz to name it")
            await publish(tc, 300, seed=33)  # the data path still works
            await wait_all_stored(tc, 300)
            await asyncio.sleep(3)  # and the heartbeat task is still alive, still saying so
            assert await asyncio.to_thread(says_heartbeat)
        finally:
            code = stop(worker)
    finally:
        await _drop_role(tc, role)
    assert code == 0, (tmp_path / "w.log").read_text()[-3000:]  # a clean stop, exit 0
    assert await count_rows(tc) == (300, 300)


async def test_a_revoke_while_postgres_is_down_does_not_hold_up_the_group(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=4, max_records=100, max_age_ms=50)
    proxy = TcpProxy(tc.settings.pg_host, tc.settings.pg_port)
    await proxy.start()
    first = tc.start_worker(tmp_path / "a.log", extra_env={
        "SINKFLEET_PG_PORT": str(proxy.port)})
    second = None
    try:
        await publish(tc, 400, seed=34)
        await wait_all_stored(tc, 400)
        proxy.cut()  # the first worker's PostgreSQL is gone: it holds its batch
        await publish(tc, 600, seed=35)
        await asyncio.sleep(2)
        joined = time.monotonic()
        second = tc.start_worker(tmp_path / "b.log")  # a rebalance: the first must let go

        async def second_stores() -> bool:
            return sum((await stored_offsets(tc)).values()) > 400

        await async_wait_for(second_stores, 45, "the second worker to store", interval=0.2)
        took = time.monotonic() - joined
        proxy.heal()
        await wait_all_stored(tc, 1000)
    finally:
        codes = [stop(p) for p in (first, second) if p is not None]
        await proxy.stop()
    assert codes == [0, 0]
    assert await count_rows(tc) == (1000, 1000)
    assert took < 40  # the revoke gave up storing after ~6 s (session timeout)
    assert "could not store within" in (tmp_path / "a.log").read_text()


class _SlowToLetGo(ConsumerRebalanceListener):
    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await asyncio.sleep(12)  # the group waits for this member to rejoin

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


async def test_ready_only_once_the_group_was_joined(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    member = AIOKafkaConsumer(bootstrap_servers=tc.settings.kafka_bootstrap,
                              group_id=tc.group, enable_auto_commit=False)
    member.subscribe([tc.topic], listener=_SlowToLetGo())
    await member.start()

    async def poll() -> None:
        while True:
            await member.getmany(timeout_ms=200)

    polling = asyncio.create_task(poll())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = None
    try:
        await async_wait_for(lambda: _alen(member.assignment()), 30, "the first member")
        worker = tc.start_worker(tmp_path / "w.log",
                                 extra_env={"SINKFLEET_METRICS_PORT": str(port)})
        await asyncio.to_thread(wait_for, lambda: get(base + "/healthz") == (200, "joining"),
                                30, "/healthz to say joining")
        for _ in range(10):  # PostgreSQL answers, but the group has not assigned us yet
            assert (await asyncio.to_thread(get, base + "/readyz")) == (503, "joining")
            await asyncio.sleep(0.3)
        await asyncio.to_thread(wait_for, lambda: get(base + "/readyz") == (200, "ready"),
                                60, "ready once assigned")
    finally:
        polling.cancel()
        await member.stop()
        if worker is not None:
            assert stop(worker) == 0


async def _alen(items: Any) -> bool:
    return bool(items)


async def test_a_failing_cache_shows_on_healthz_while_storing_goes_on(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    assert tc.catalogue.sinks[tc.table].spec.cache is not None  # events keep a recent cache
    port, dead_redis = free_port(), free_port()  # nothing listens there
    base = f"http://127.0.0.1:{port}"
    worker = tc.start_worker(tmp_path / "w.log", extra_env={
        "SINKFLEET_REDIS_PORT": str(dead_redis), "SINKFLEET_METRICS_PORT": str(port)})
    try:
        await publish(tc, 200, seed=36)
        await wait_all_stored(tc, 200)

        def says_cache() -> bool:
            (code, body), (ready, _) = health_of(base)
            return code == 200 and body.startswith("degraded: cache:") and ready == 200

        await asyncio.to_thread(wait_for, says_cache, 30, "/healthz to name the cache")
    finally:
        code = stop(worker)
    assert code == 0
    assert await count_rows(tc) == (200, 200)
