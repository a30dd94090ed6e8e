"""Several sinks of the project catalogue together, under unique names (their topics,
tables and references renamed alike), with one worker spec carrying them all: the
families as shipped, for tests that need more than one (references, causal graphs)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.kafka.positions import KafkaPositions
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.migrate import migrate
from tests.support.catalogue import ROOT, forget
from tests.support.waiting import async_wait_for


@dataclass
class Fleet:
    root: Path
    settings: Settings
    catalogue: Catalogue
    names: dict[str, str]  # project sink name -> its name (and table) here
    topics: list[str]
    group: str
    families: dict[str, str]  # project family -> its name here (the schema registry's key)

    def sink(self, name: str) -> str:
        return self.names[name]

    def family(self, name: str) -> str:
        return self.families[name]

    def items(self, items: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        """``(family, item)`` pairs of a load, with this fleet's family names."""
        return ((self.families[f], item) for f, item in items)

    async def publish(self, family: str, *records: dict[str, Any]) -> None:
        async with Publisher(self.settings, catalogue=self.catalogue) as pub:
            for record in records:
                await pub.publish(self.families[family], record)

    async def delete(self, family: str, *key: Any) -> None:
        async with Publisher(self.settings, catalogue=self.catalogue) as pub:
            await pub.delete(self.families[family], *key)

    async def drain(self, timeout: float = 60) -> None:
        """Wait until the group stored everything published to its topics so far."""
        async with KafkaPositions(self.settings) as kafka:
            end = sum(e for _, e in (await kafka.bounds(self.topics)).values())

        async def done() -> bool:
            conn = await connect(self.settings)
            try:
                stored = await conn.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM sinkfleet.consumer_offsets"
                    " WHERE group_id = $1", self.group)
            finally:
                await conn.close()
            return int(stored) >= end

        await async_wait_for(done, timeout, f"{end} offsets stored by {self.group}")

    async def drop(self) -> None:
        await forget(self.settings, tables=list(self.names.values()), groups=[self.group],
                     topics=self.topics)
        conn = await connect(self.settings)
        try:
            await conn.execute("DELETE FROM sinkfleet.schema_versions WHERE family ="
                               " ANY($1::text[])", list(self.families.values()))
        finally:
            await conn.close()


async def project_sinks(tmp: Path, stack: Settings, names: list[str]) -> Fleet:
    """The project's sinks ``names`` (and their topics and families) under a unique
    suffix — families too, as the schema registry is shared by every test; references
    to sinks outside ``names`` are dropped."""
    suffix = uuid.uuid4().hex[:8]
    root = tmp / f"fleet-{suffix}"
    for sub in ("schemas", "topics", "sinks", "workers"):
        (root / sub).mkdir(parents=True)
    renamed = {n: f"{n}_{suffix}" for n in names}
    topics_by_name = {t["name"]: t for p in (ROOT / "topics").glob("*.yaml")
                      if (t := yaml.safe_load(p.read_text()))}
    topics, families = [], {}
    for name in names:
        sink = yaml.safe_load((ROOT / "sinks" / f"{name}.yaml").read_text())
        topic = dict(topics_by_name[sink["topic"]])
        topic["name"] = f"test.{topic['name']}-{suffix}"
        topics.append(topic["name"])
        schema = json.loads((ROOT / "schemas" / f"{topic['schema']}.avsc").read_text())
        families[topic["schema"]] = topic["schema"] = f"{topic['schema']}_{suffix}"
        schema["name"] = topic["schema"]  # a family's own schema (fingerprint) in the registry
        (root / "schemas" / f"{topic['schema']}.avsc").write_text(json.dumps(schema))
        (root / "topics" / f"{name}.yaml").write_text(yaml.safe_dump(topic))
        sink.update(name=renamed[name], table=renamed[name], topic=topic["name"])
        sink["references"] = [{**r, "sink": renamed[r["sink"]]}
                              for r in sink.get("references", []) if r["sink"] in renamed]
        (root / "sinks" / f"{name}.yaml").write_text(yaml.safe_dump(sink))
    group = f"t-{suffix}"
    (root / "workers" / "w.yaml").write_text(yaml.safe_dump(
        {"name": "w", "group": group, "sinks": list(renamed.values()),
         "batch": {"max_records": 500, "max_age_ms": 100}}))
    settings = load_settings(home=root, state_dir=stack.state)
    fleet = Fleet(root, settings, load_catalogue(root), renamed, topics, group, families)
    await apply_topics(settings, fleet.catalogue, say=lambda m: None)
    await migrate(settings, fleet.catalogue, lambda m: None)
    return fleet
