"""Scratch databases and a two-family catalogue (experience events, append; workflow
state, state with history) filled through a real worker, for the backup, restore and
stats tests. Every name is unique per test (databases: tests/ops/scratch.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.produce import produce_mixed, synthetic_load
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.sink.postgres.offsets import stored_offsets
from sinkfleet.worker.loop import Worker
from tests.support.catalogue import TestCatalogue, copy_family, edit_spec, make_catalogue
from tests.support.kafka import end_offsets
from tests.support.waiting import async_wait_for
from tests.support.worker import publish


@dataclass
class Scenario:
    events: TestCatalogue  # the experience-event half (its topic, table, publish helper)
    state_topic: str
    state_table: str
    root: Path
    catalogue: Catalogue
    settings: Settings  # pointed at the scratch database
    db: str

    @property
    def group(self) -> str:
        return self.events.group

    @property
    def topics(self) -> list[str]:
        return [self.events.topic, self.state_topic]

    def on(self, database: str) -> Settings:
        return load_settings(home=self.root, state_dir=self.settings.state,
                             pg_database=database)


async def make_scenario(tmp: Path, stack: Settings, db: str) -> Scenario:
    tc = make_catalogue(tmp, stack, partitions=3, max_records=500, max_age_ms=100)
    state_topic, state_table = copy_family(tc.root, "workflow_state", tc.suffix, 3)
    edit_spec(tc.root / "workers" / "events.yaml", {"sinks": [tc.table, state_table]})
    settings = load_settings(home=tc.root, state_dir=stack.state, pg_database=db)
    cat = load_catalogue(tc.root)
    await apply_topics(settings, cat, say=lambda m: None)
    await migrate(settings, cat, lambda m: None)
    return Scenario(tc, state_topic, state_table, tc.root, cat, settings, db)


async def publish_events(sc: Scenario, n: int, seed: int) -> list[dict[str, Any]]:
    return await publish(sc.events, n, seed)


async def publish_states(sc: Scenario, n: int, seed: int) -> None:
    load = synthetic_load(sc.catalogue, ["workflow_state"], n, seed=seed, agents=8)
    await produce_mixed(sc.settings, sc.catalogue, load.items, load.total)


async def log_end_total(sc: Scenario) -> int:
    return sum((await end_offsets(sc.settings, sc.topics)).values())


async def stored_total(settings: Settings, group: str) -> int:
    async with pg(settings) as conn:
        return sum(o.next_offset for o in await stored_offsets(conn) if o.group == group)


async def drain(sc: Scenario, settings: Settings | None = None, timeout: float = 90) -> None:
    """Run one worker of the scenario's group on ``settings``' database until it stored
    everything the topics hold, then stop it cleanly."""
    settings = settings or sc.settings
    worker = Worker(settings, sc.catalogue, sc.catalogue.worker("events"), metrics_port=0)
    task = asyncio.create_task(worker.run())
    try:
        end = await log_end_total(sc)

        async def done() -> bool:
            if task.done():
                task.result()  # a crashed worker fails the test with its error
            return await stored_total(settings, sc.group) >= end

        await async_wait_for(done, timeout, f"{end} offsets stored by {sc.group}")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def contents(settings: Settings, sc: Scenario) -> dict[str, list[dict[str, Any]]]:
    """Every row of the scenario's tables and its group's offsets, in key order."""
    queries = {
        "events": f'SELECT * FROM "{sc.events.table}" ORDER BY event_id, ts',
        "state": f'SELECT * FROM "{sc.state_table}" ORDER BY tenant_id, workflow_id',
        "history": f'SELECT * FROM "{sc.state_table}_history"'
                   " ORDER BY kafka_partition, kafka_offset",
        "offsets": "SELECT * FROM sinkfleet.consumer_offsets"
                   " ORDER BY group_id, topic, partition",
    }
    async with pg(settings) as conn:
        return {k: [dict(r) for r in await conn.fetch(q)] for k, q in queries.items()}


async def drop_scenario(sc: Scenario) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from sinkfleet.cache.store import forget_sink, redis_client

    client = redis_client(sc.settings)
    try:
        for table in (sc.events.table, sc.state_table):
            await forget_sink(client, table)
    finally:
        await client.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=sc.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([n for t in sc.topics for n in (t, f"{t}.dlq")])
    finally:
        await admin.close()
