"""Isolated test catalogues: a copy of the project catalogue under unique topic, table and
group names, its worker processes, and dropping what it made."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DELETE: Final = object()  # an override value: remove this key (or named list item)


def merged(base: Any, override: Any) -> Any:
    """``base`` with ``override`` merged in, as a catalogue variant is made: mappings key by
    key; a list of named mappings (columns, indexes) item by name, from a mapping of name →
    override; ``DELETE`` removes a key or item; a callable gets the old value and returns
    the new one; anything else replaces (a new key is added). Deleting a key, or naming a
    list item, that is not there fails: a variant never silently stops applying.

    >>> merged({"batch": {"max_records": 5000}, "sinks": ["a"]},
    ...        {"batch": {"max_records": 50}, "sinks": lambda s: [*s, "b"]})
    {'batch': {'max_records': 50}, 'sinks': ['a', 'b']}
    """
    if callable(override):
        return override(base)
    if isinstance(override, Mapping) and isinstance(base, Mapping):
        out = dict(base)
        for key, value in override.items():
            if value is DELETE:
                del out[key]
            else:
                out[key] = merged(out[key], value) if key in out else value
        return out
    if isinstance(override, Mapping) and isinstance(base, list):
        items = {item["name"]: item for item in base}
        assert set(override) <= set(items), f"no item named {set(override) - set(items)}"
        return [merged(item, override[item["name"]]) if item["name"] in override else item
                for item in base if override.get(item["name"]) is not DELETE]
    return override


def write_spec(path: Path, spec: Mapping[str, Any], *overrides: Mapping[str, Any]) -> None:
    """Write a catalogue spec as YAML (JSON for a ``.avsc``), ``overrides`` merged in order."""
    for override in overrides:
        spec = merged(spec, override)
    if path.suffix == ".avsc":
        path.write_text(json.dumps(spec, indent=2))
    else:
        path.write_text(yaml.safe_dump(dict(spec), sort_keys=False))


def edit_spec(path: Path, override: Mapping[str, Any]) -> None:
    """Rewrite a catalogue file with ``override`` merged into it (see ``merged``)."""
    text = path.read_text()
    write_spec(path, json.loads(text) if path.suffix == ".avsc" else yaml.safe_load(text),
               override)


def copy_catalogue(dest: Path) -> Path:
    """The whole project catalogue (schemas, topics, sinks, workers) copied under ``dest``."""
    for sub in ("schemas", "topics", "sinks", "workers"):
        shutil.copytree(ROOT / sub, dest / sub)
    return dest


def catalogue_env(root: Path, settings: Settings) -> dict[str, str]:
    """The environment of a sinkfleet process using the catalogue at ``root``."""
    return {**os.environ, "SINKFLEET_HOME": str(root),
            "SINKFLEET_STATE_DIR": str(settings.state)}


def start_worker_process(root: Path, settings: Settings, spec: str, log: Path,
                         extra_env: dict[str, str] | None = None
                         ) -> subprocess.Popen[bytes]:
    """`sinkfleet worker --spec SPEC` as a process, appending its output to ``log``."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "worker", "--spec", spec],
            stdout=fh, stderr=subprocess.STDOUT,
            env={**catalogue_env(root, settings), **(extra_env or {})}, cwd=root)


class RunsWorkers:
    """An isolated catalogue on disk whose worker spec runs as `sinkfleet worker`
    processes (mixed into the dataclasses that carry these attributes)."""

    root: Path
    settings: Settings
    worker_spec: str

    def env(self) -> dict[str, str]:
        return catalogue_env(self.root, self.settings)

    def start_worker(self, log: Path, extra_env: dict[str, str] | None = None
                     ) -> subprocess.Popen[bytes]:
        return start_worker_process(self.root, self.settings, self.worker_spec, log,
                                    extra_env)


@dataclass
class TestCatalogue(RunsWorkers):
    """An isolated copy of the catalogue: unique topic, table, group per test."""

    __test__ = False  # not a test class, despite the name

    root: Path
    suffix: str
    settings: Settings
    catalogue: Catalogue
    topic: str
    table: str
    group: str
    worker_spec: str = "events"
    family: str = "experience_event"


def copy_family(root: Path, family: str, suffix: str, partitions: int,
                overrides: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Copy ``family``'s schema, topic and sink from the project catalogue under a unique
    topic and table name, ``overrides`` (by folder: "topics", "sinks") merged into the specs;
    return (topic, table)."""
    overrides = overrides or {}
    shutil.copy(ROOT / "schemas" / f"{family}.avsc", root / "schemas")
    if family == "experience_event":  # the names (and file) every events test knows
        topic, table, stem = f"test.events-{suffix}", f"ev_{suffix}", "events"
    else:
        topic, table = f"test.{family.replace('_', '-')}-{suffix}", f"{family[:20]}_{suffix}"
        stem = family
    topics = set()
    for path in sorted((ROOT / "topics").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if spec["schema"] == family:
            topics.add(spec["name"])
            write_spec(root / "topics" / f"{stem}.yaml", spec,
                       {"name": topic, "partitions": partitions}, overrides.get("topics", {}))
    for path in sorted((ROOT / "sinks").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if spec["topic"] in topics:
            # a reference to a sink of another family cannot resolve in a one-family
            # catalogue (its own sink, renamed, can: an architecture's parent)
            refs = [{**r, "sink": table} for r in spec.pop("references", [])
                    if r["sink"] == spec["name"]]
            write_spec(root / "sinks" / f"{stem}.yaml", spec,
                       {"name": table, "topic": topic, "table": table,
                        **({"references": refs} if refs else {})},
                       overrides.get("sinks", {}))
    return topic, table


def make_catalogue(tmp: Path, stack_settings: Settings, *, partitions: int = 6,
                   max_records: int = 5000, max_age_ms: int = 200,
                   family: str = "experience_event",
                   overrides: Mapping[str, Any] | None = None) -> TestCatalogue:
    """A catalogue of one family (by default experience_event) under unique names, with one
    worker spec, ``events``. ``overrides`` by folder ("topics", "sinks", "workers") are
    merged into its specs (see ``merged``), e.g.
    ``overrides={"sinks": {"cache": DELETE}, "workers": {"concurrency": 2}}``."""
    suffix = uuid.uuid4().hex[:10]
    root = tmp / f"cat-{suffix}"
    for sub in ("schemas", "topics", "sinks", "workers"):
        (root / sub).mkdir(parents=True)
    overrides = overrides or {}
    topic, table = copy_family(root, family, suffix, partitions, overrides)
    group = f"test-{suffix}"
    write_spec(root / "workers" / "events.yaml",
               {"name": "events", "group": group, "sinks": [table],
                "batch": {"max_records": max_records, "max_age_ms": max_age_ms}},
               overrides.get("workers", {}))
    settings = load_settings(home=root, state_dir=stack_settings.state)
    return TestCatalogue(root, suffix, settings, load_catalogue(root), topic, table, group,
                         family=family)


async def forget(settings: Settings, *, tables: Iterable[str] = (),
                 groups: Iterable[str] = (), topics: Iterable[str] = ()) -> None:
    """Drop what a test or benchmark made: sink tables (with a state sink's history),
    their migration rows and Redis caches; groups' offsets and heartbeats; topics and
    their dead-letter topics (those that exist)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from sinkfleet.cache.store import forget_sink, redis_client
    from sinkfleet.sink.postgres.connect import pg
    from sinkfleet.sink.postgres.group_roles import forget_group

    tables, groups, topics = list(tables), list(groups), list(topics)
    async with pg(settings) as conn:
        for table in tables:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_history" CASCADE')
            await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                               f"sink:{table}:%")
        await conn.execute("DELETE FROM sinkfleet.consumer_offsets WHERE group_id ="
                           " ANY($1::text[])", groups)
        await conn.execute("DELETE FROM sinkfleet.workers WHERE group_id = ANY($1::text[])",
                           groups)
        for group in groups:  # its least-privilege role and login (docs/security.md)
            await forget_group(conn, settings, group)
    client = redis_client(settings)
    try:
        for table in tables:
            await forget_sink(client, table)
    finally:
        await client.aclose()
    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for topic in topics for t in (topic, f"{topic}.dlq") if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def drop_catalogues(settings: Settings, made: list[TestCatalogue]) -> None:
    """Drop the tables, caches and bookkeeping rows of test catalogues (not topics)."""
    await forget(settings, tables=[tc.table for tc in made], groups=[tc.group for tc in made])


KAFKA_LAYOUT_ENV = ("SINKFLEET_KAFKA_BOOTSTRAP", "SINKFLEET_KAFKA_CONTROLLER_PORT",
                    "SINKFLEET_KAFKA_BROKERS")


@contextlib.contextmanager
def without_kafka_layout_env() -> Iterator[None]:
    """Tests that lay out Kafka clusters of their own: a developer's (or a CI runner's)
    SINKFLEET_KAFKA_* settings must not steer them."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for name in KAFKA_LAYOUT_ENV:
            mp.delenv(name, raising=False)
        yield
