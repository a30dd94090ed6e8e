"""Start ``sinkfleet rollups``: check what it needs, build the faust app, run its worker."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import faust

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Catalogue
from sinkfleet.catalogue.models import TopicSpec
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, DecodeError, MigrationError, SinkfleetError
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs
from sinkfleet.rollups.app import RollupOptions, TopicRollup, broker_settings
from sinkfleet.rollups.families import FAMILIES
from sinkfleet.rollups.ordering import keep_order
from sinkfleet.rollups.store import SummaryWriter
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.schema_versions import registered_versions
from sinkfleet.worker.schemas import WriterSchemas

log = logging.getLogger("sinkfleet.rollups")


def source_topics(catalogue: Catalogue, families: tuple[str, ...], explicit: bool
                  ) -> list[TopicSpec]:
    """The catalogue's topics carrying ``families`` (every one must have a topic when the
    families were named explicitly; by default, those the catalogue lacks are skipped)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"cannot roll up {', '.join(unknown)}: --family is one of"
                          f" {', '.join(FAMILIES)}")
    topics = []
    for family in families:
        found = [t for t in catalogue.topics.values() if t.schema_ == family]
        if not found and explicit:
            raise ConfigError(f"no topic in {catalogue.root / 'topics'} carries {family}")
        topics.extend(sorted(found, key=lambda t: t.name))
    if not topics:
        raise ConfigError(f"no topic in {catalogue.root / 'topics'} carries"
                          f" {' or '.join(families)}: nothing to roll up")
    return topics


async def preflight(settings: Settings, topics: list[TopicSpec]) -> list[Any]:
    """Refuse to start without the summary tables or the source topics; return the
    registered writer schemas (older versions decode into the current one)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async with pg(settings) as conn:
        for table in sorted({FAMILIES[t.schema_].table for t in topics}):
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                       f"sinkfleet.{table}"):
                raise MigrationError(f"table sinkfleet.{table} does not exist: run"
                                     " `sinkfleet db migrate` first")
        versions = await registered_versions(conn, sorted({t.schema_ for t in topics}))
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    try:
        await admin.start()
    except Exception as exc:  # KafkaConnectionError and friends: say why
        raise SinkfleetError(await explain_kafka_error(settings, exc)) from None
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    missing = [t.name for t in topics if t.name not in existing]
    if missing:
        raise ConfigError(f"topic {', '.join(missing)} does not exist in Kafka: run"
                          " `sinkfleet topics apply` first")
    return versions


def drain_before_commit(buffer: Any) -> None:
    """Make faust's ``producer.flush()`` — awaited before source offsets are committed —
    wait for every changelog record handed to the buffer.

    faust's ``ProducerBuffer.flush`` returns when no message was sent for 0.1 s, even if
    some are still queued, and a message taken from the queue is not yet in aiokafka's
    (whose ``flush`` follows). Offsets could then be committed before the changelog
    records of the state they stand for: a ``kill -9`` then loses those records for good.
    """
    send, flush_some = buffer._send_pending, buffer.flush_atmost
    in_flight = 0
    idle = asyncio.Event()

    async def tracked(fut: Any) -> None:
        nonlocal in_flight
        in_flight += 1
        idle.clear()
        try:
            await send(fut)
        finally:
            in_flight -= 1
            if not in_flight:
                idle.set()

    async def drain() -> None:
        while not buffer.should_stop:
            await flush_some(None)  # waits while messages leave the queue (0.1 s at most)
            if in_flight:
                await idle.wait()
            elif not buffer.size:
                return

    # Instance attributes, set before the buffer's sender task starts (it captures
    # _send_pending); setattr because mypy refuses assigning to a method.
    setattr(buffer, "_send_pending", tracked)  # noqa: B010
    setattr(buffer, "flush", drain)  # noqa: B010


def build_app(settings: Settings, catalogue: Catalogue, topics: list[TopicSpec],
              options: RollupOptions, versions: list[Any]) -> tuple[faust.App, list[TopicRollup]]:
    web: dict[str, Any] = {"web_enabled": False}
    if options.web_port is not None:
        web = {"web_enabled": True, "web_port": options.web_port,
               "web_bind": settings.metrics_host}
    app = faust.App(
        options.app_id, **broker_settings(settings), **web,
        store="memory://",  # the changelog is the durable copy; recovered at start
        processing_guarantee="at_least_once",  # exactly once in effect: docs/rollups.md
        autodiscover=False, datadir=str(settings.state / "rollups"),
        # changelogs replicated as their sources (by SINKFLEET_KAFKA_BROKERS, or the local
        # stack's recorded size; 1 when neither is known)
        topic_replication_factor=max(t.replication(settings.kafka_brokers or 1)[0]
                                     for t in topics),
        consumer_auto_offset_reset="earliest", producer_acks=-1,
        broker_commit_interval=options.commit_interval,
        consumer_group_instance_id=options.instance_id,
    )
    # Every record changes a few entries (a changelog record each); faust's default buffer
    # of 100 pending sends makes the stream stall and warn on every burst.
    app.producer.buffer.max_messages = 10_000
    drain_before_commit(app.producer.buffer)
    store = SchemaStore(settings.schema_registry_url)
    for row in versions:
        try:
            store.add(json.loads(row.schema))
        except (DecodeError, ValueError) as exc:
            log.warning("registered schema %s version %d cannot be used: %s",
                        row.family, row.version, exc)
    writer = SummaryWriter(settings)
    schemas = WriterSchemas(settings, store, {t.schema_ for t in topics})
    rollups = [
        TopicRollup(app, topic, FAMILIES[topic.schema_],
                    Codec(catalogue.schemas[topic.schema_], store,
                          max_message_bytes=settings.max_message_bytes,
                          max_depth=settings.avro_max_depth),
                    writer, schemas, int(options.grace_seconds * 1_000_000))
        for topic in topics]
    keep_order(app, [rollup.order for rollup in rollups])

    @app.timer(options.flush_interval, name="rollups-flush")
    async def flush() -> None:
        for rollup in rollups:
            await rollup.flush()

    @app.timer(options.stats_interval, name="rollups-stats")
    async def stats() -> None:
        for rollup in rollups:
            rollup.log_stats()

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        for rollup in rollups:
            await rollup.flush()
            rollup.log_stats()
        await writer.close()
        await schemas.close()

    return app, rollups


def run_rollups(settings: Settings, catalogue: Catalogue, options: RollupOptions, *,
                explicit: bool = False, log_level: str = "INFO") -> None:
    """Run the roll-up worker until SIGTERM/SIGINT (faust's worker exits the process)."""
    topics = source_topics(catalogue, options.families, explicit)
    versions = asyncio.run(preflight(settings, topics))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app, _ = build_app(settings, catalogue, topics, options, versions)

    @app.task
    async def started() -> None:  # logged once faust has set logging up
        log.info("rolling up %s as app %s (grace %gs)", ", ".join(
            f"{t.name} ({t.schema_}; windows: {', '.join(FAMILIES[t.schema_].grains)})"
            for t in topics), options.app_id, options.grace_seconds)

    worker = faust.Worker(app, loglevel=log_level.upper(), loop=loop, quiet=True,
                          redirect_stdouts=False, workdir=str(settings.state))
    worker.execute_from_commandline()
