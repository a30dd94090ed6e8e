"""Catalogues of a throw-away record family for the schema-evolution tests.

Each test gets its own family name and record namespace (registered versions are
global in PostgreSQL, and fingerprints are unique across families), and successive
catalogue roots of the same family stand for successive deploys of its schema.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings

NOTE = {"name": "note", "type": "string", "default": "n/a"}  # v2: added with a default
EXTRA = {"name": "extra", "type": "int", "default": 0}  # v3: another one


@dataclass
class Evo:
    """One family: ``version(schema)`` writes a catalogue root deploying ``schema``."""

    tmp: Path
    stack: Settings
    suffix: str

    @property
    def family(self) -> str:
        return f"evo_{self.suffix}"

    @property
    def topic(self) -> str:
        return f"test.evo-{self.suffix}"

    @property
    def table(self) -> str:
        return f"evo_{self.suffix}"

    @property
    def group(self) -> str:
        return f"test-evo-{self.suffix}"

    def schema(self, *extra: dict[str, Any]) -> dict[str, Any]:
        """v1 (``id``, ``ts``, ``n``, an optional nested ``meta``) plus ``extra`` fields."""
        return {"type": "record", "name": "Evo", "namespace": f"test.evo{self.suffix}",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                    {"name": "n", "type": "int"},
                    {"name": "meta", "default": None, "type": ["null", {
                        "type": "record", "name": "Meta", "fields": [
                            {"name": "source", "type": "string"}]}]},
                    *copy.deepcopy(list(extra))]}

    def version(self, schema: dict[str, Any], *, compatibility: str | None = None,
                store: tuple[str, ...] = ("id", "ts", "n"), name: str | None = None
                ) -> tuple[Settings, Catalogue]:
        """A catalogue root deploying ``schema``: its topic, an append sink storing the
        fields ``store`` (the same columns across versions: the sink's migration must not
        change), and worker spec ``w``."""
        root = self.tmp / f"evo-{self.suffix}-{name or uuid.uuid4().hex[:6]}"
        for sub in ("schemas", "topics", "sinks", "workers"):
            (root / sub).mkdir(parents=True)
        (root / "schemas" / f"{self.family}.avsc").write_text(json.dumps(schema, indent=2))
        topic: dict[str, Any] = {"name": self.topic, "schema": self.family, "partitions": 2,
                                 "key": ["id"]}
        if compatibility is not None:
            topic["compatibility"] = compatibility
        (root / "topics" / "evo.yaml").write_text(yaml.safe_dump(topic))
        columns = [{"name": n, "from": n} for n in store]
        (root / "sinks" / "evo.yaml").write_text(yaml.safe_dump(
            {"name": self.table, "topic": self.topic, "table": self.table, "mode": "append",
             "id": ["id"], "columns": columns}))
        (root / "workers" / "w.yaml").write_text(yaml.safe_dump(
            {"name": "w", "group": self.group, "sinks": [self.table],
             "batch": {"max_records": 100, "max_age_ms": 50}}))
        settings = load_settings(home=root, state_dir=self.stack.state)
        return settings, load_catalogue(root)


def new_evo(tmp: Path, stack: Settings) -> Evo:
    return Evo(tmp, stack, uuid.uuid4().hex[:10])


async def forget(evo: Evo) -> None:
    """Drop what a test registered, created and consumed for ``evo``."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from sinkfleet.sink.postgres.connect import pg

    async with pg(evo.stack) as conn:
        await conn.execute(f'DROP TABLE IF EXISTS "{evo.table}"')
        await conn.execute("DELETE FROM sinkfleet.schema_versions WHERE family = $1",
                           evo.family)
        await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                           f"sink:{evo.table}:%")
        await conn.execute("DELETE FROM sinkfleet.consumer_offsets WHERE group_id = $1",
                           evo.group)
        await conn.execute("DELETE FROM sinkfleet.workers WHERE group_id = $1", evo.group)
    admin = AIOKafkaAdminClient(bootstrap_servers=evo.stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([evo.topic, f"{evo.topic}.dlq"])
    except KafkaError:
        pass  # never created (a test without Kafka)
    finally:
        await admin.close()
