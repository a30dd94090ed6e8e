"""Isolated catalogues for one family (schema, topic, sink, worker) and an in-process
worker, for the sink-mode tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.worker.loop import Worker
from tests.support.catalogue import forget
from tests.support.kafka import end_offsets
from tests.support.waiting import async_wait_for


@dataclass
class Family:
    root: Path
    settings: Settings
    catalogue: Catalogue
    family: str
    topic: str
    table: str
    group: str

    @property
    def sink(self) -> Any:
        return self.catalogue.sinks[self.table]


async def make_family(tmp: Path, stack: Settings, schema: dict[str, Any],
                      topic: dict[str, Any], sink: dict[str, Any], *, partitions: int = 3,
                      max_records: int = 500) -> Family:
    """A catalogue holding only ``schema`` with a unique topic, table and group."""
    suffix = uuid.uuid4().hex[:10]
    root = tmp / f"fam-{suffix}"
    for sub in ("schemas", "topics", "sinks", "workers"):
        (root / sub).mkdir(parents=True)
    family = schema["name"]
    topic_name, table, group = f"test.{family}-{suffix}", f"{family}_{suffix}", f"t-{suffix}"
    (root / "schemas" / f"{family}.avsc").write_text(json.dumps(schema))
    (root / "topics" / "t.yaml").write_text(yaml.safe_dump(
        {"name": topic_name, "schema": family, "partitions": partitions, **topic}))
    (root / "sinks" / "s.yaml").write_text(yaml.safe_dump(
        {"name": table, "topic": topic_name, "table": table, **sink}))
    (root / "workers" / "w.yaml").write_text(yaml.safe_dump(
        {"name": "w", "group": group, "sinks": [table],
         "batch": {"max_records": max_records, "max_age_ms": 100}}))
    settings = load_settings(home=root, state_dir=stack.state)
    fam = Family(root, settings, load_catalogue(root), family, topic_name, table, group)
    await apply_topics(settings, fam.catalogue, say=lambda m: None)
    await migrate(settings, fam.catalogue, lambda m: None)
    return fam


async def drop_family(fam: Family) -> None:
    await forget(fam.settings, tables=[fam.table], groups=[fam.group], topics=[fam.topic])


async def stored_total(fam: Family) -> int:
    async with pg(fam.settings) as conn:
        return int(await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM sinkfleet.consumer_offsets"
            " WHERE group_id = $1 AND topic = $2", fam.group, fam.topic))


async def log_end_total(fam: Family) -> int:
    return sum((await end_offsets(fam.settings, [fam.topic])).values())


@contextlib.asynccontextmanager
async def running_worker(fam: Family, instance_id: str | None = None
                         ) -> AsyncIterator[Worker]:
    worker = Worker(fam.settings, fam.catalogue, fam.catalogue.worker("w"),
                    instance_id=instance_id)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def drain(fam: Family, worker: Worker, timeout: float = 60) -> None:
    """Wait until the worker has stored everything published to the topic so far."""
    end = await log_end_total(fam)

    async def done() -> bool:
        return await stored_total(fam) >= end

    await async_wait_for(done, timeout, f"{end} offsets stored by {fam.group}")


async def rows(fam: Family, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with pg(fam.settings) as conn:
        return [dict(r) for r in await conn.fetch(sql, *args)]


async def rewind(fam: Family) -> None:
    """Replay everything: the group's PostgreSQL offsets (its position) back to 0."""
    async with pg(fam.settings) as conn:
        await conn.execute("UPDATE sinkfleet.consumer_offsets SET next_offset = 0"
                           " WHERE group_id = $1", fam.group)
