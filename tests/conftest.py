"""Shared fixtures: the real local stack (started once), and factories for isolated
catalogues, topics and tables so tests never see each other's data.

Set SINKFLEET_TEST_BACKEND=testcontainers to run the services in Docker instead
(needs a Docker engine and the `testcontainers` extra); the default is the
project's own local stack, which needs none.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition",
             interval: float = 0.2) -> Any:
    """Poll ``predicate`` until truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def async_wait_for(predicate: Callable[[], Any], timeout: float = 60,
                         what: str = "condition", interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real services. Started if needed (never skipped); stopped only if we started them."""
    os.environ.setdefault("SINKFLEET_STATE_DIR", str(ROOT / ".sinkfleet"))
    if os.environ.get("SINKFLEET_TEST_BACKEND") == "testcontainers":  # pragma: no cover
        # Docker instead (sinkfleet/dev/stack/containers.py): the same services and
        # settings, the state directory's generated passwords; stopped at session end.
        from sinkfleet.dev.stack.containers import DockerStack, docker_host

        docker = DockerStack(load_settings(home=ROOT), host=docker_host(),
                             say=lambda m: print(f"[testcontainers] {m}"))
        os.environ.update(docker.start())
        try:
            yield load_settings(home=ROOT)
        finally:
            docker.stop()
        return
    from sinkfleet.dev.stack import manager

    started = asyncio.run(manager.up(load_settings(home=ROOT), None,
                                     lambda m: print(f"[stack] {m}")))
    settings = load_settings(home=ROOT)  # again: `up` may have generated the secrets
    yield settings
    if started and os.environ.get("SINKFLEET_TEST_KEEP_STACK") != "1":
        manager.down(settings, started, lambda m: print(f"[stack] {m}"))


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


def _copy_family(root: Path, family: str, suffix: str, partitions: int) -> tuple[str, str]:
    """Copy ``family``'s schema, topic and sink from the project catalogue under a unique
    topic and table name; return (topic, table)."""
    shutil.copy(ROOT / "schemas" / f"{family}.avsc", root / "schemas")
    topic, table = f"test.{family.replace('_', '-')}-{suffix}", f"{family[:20]}_{suffix}"
    topics = {}
    for path in sorted((ROOT / "topics").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if spec["schema"] == family:
            topics[spec["name"]] = spec
            (root / "topics" / "t.yaml").write_text(yaml.safe_dump(
                {**spec, "name": topic, "partitions": partitions}))
    for path in sorted((ROOT / "sinks").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if spec["topic"] in topics:
            (root / "sinks" / "s.yaml").write_text(yaml.safe_dump(
                {**spec, "name": table, "topic": topic, "table": table}))
    return topic, table


def make_catalogue(tmp: Path, stack_settings: Settings, *, partitions: int = 6,
                   max_records: int = 5000, max_age_ms: int = 200,
                   family: str = "experience_event") -> TestCatalogue:
    """A catalogue of one family (by default experience_event) under unique names."""
    suffix = uuid.uuid4().hex[:10]
    root = tmp / f"cat-{suffix}"
    for sub in ("schemas", "topics", "sinks", "workers"):
        (root / sub).mkdir(parents=True)
    if family != "experience_event":
        topic, table = _copy_family(root, family, suffix, partitions)
        group = f"test-{suffix}"
        (root / "workers" / "events.yaml").write_text(
            f"name: events\ngroup: {group}\nsinks: [{table}]\n"
            f"batch: {{max_records: {max_records}, max_age_ms: {max_age_ms}}}\n")
        settings = load_settings(home=root, state_dir=stack_settings.state)
        return TestCatalogue(root, suffix, settings, load_catalogue(root), topic, table,
                             group, family=family)
    shutil.copy(ROOT / "schemas" / "experience_event.avsc", root / "schemas")
    topic, table, group = f"test.events-{suffix}", f"ev_{suffix}", f"test-{suffix}"
    text = (ROOT / "topics" / "experience_events.yaml").read_text()
    text = text.replace("name: agent.experience-events", f"name: {topic}")
    text = text.replace("partitions: 6", f"partitions: {partitions}")
    (root / "topics" / "events.yaml").write_text(text)
    sink = (ROOT / "sinks" / "experience_events.yaml").read_text()
    sink = sink.replace("name: experience_events", f"name: {table}")
    sink = sink.replace("topic: agent.experience-events", f"topic: {topic}")
    sink = sink.replace("table: experience_events", f"table: {table}")
    (root / "sinks" / "events.yaml").write_text(sink)
    (root / "workers" / "events.yaml").write_text(
        f"name: events\ngroup: {group}\nsinks: [{table}]\n"
        f"batch: {{max_records: {max_records}, max_age_ms: {max_age_ms}}}\n")
    settings = load_settings(home=root, state_dir=stack_settings.state)
    return TestCatalogue(root, suffix, settings, load_catalogue(root), topic, table, group)


@pytest_asyncio.fixture
async def catalogue_factory(stack: Settings, tmp_path: Path
                            ) -> AsyncIterator[Callable[..., Any]]:
    """Build isolated catalogues with their topics applied and tables migrated."""
    from sinkfleet.ops.setup.topics import apply_topics
    from sinkfleet.sink.postgres.migrate import migrate

    made: list[TestCatalogue] = []

    async def factory(**kwargs: Any) -> TestCatalogue:
        tc = make_catalogue(tmp_path, stack, **kwargs)
        await apply_topics(tc.settings, tc.catalogue, say=lambda m: None)
        await migrate(tc.settings, tc.catalogue, lambda m: None)
        made.append(tc)
        return tc

    yield factory
    await _cleanup(made)


async def forget(settings: Settings, *, tables: Iterable[str] = (),
                 groups: Iterable[str] = (), topics: Iterable[str] = ()) -> None:
    """Drop what a test or benchmark made: sink tables (with a state sink's history),
    their migration rows and Redis caches; groups' offsets and heartbeats; topics and
    their dead-letter topics (those that exist)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from sinkfleet.cache.store import forget_sink, redis_client
    from sinkfleet.sink.postgres.connect import connect
    from sinkfleet.sink.postgres.group_roles import forget_group

    tables, groups, topics = list(tables), list(groups), list(topics)
    conn = await connect(settings)
    try:
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
    finally:
        await conn.close()
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


async def _cleanup(made: list[TestCatalogue]) -> None:
    if made:
        await forget(made[0].settings, tables=[tc.table for tc in made],
                     groups=[tc.group for tc in made], topics=[tc.topic for tc in made])


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
