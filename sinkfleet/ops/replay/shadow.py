"""Shadow replay: consume a topic range into a separate PostgreSQL schema, then compare
it with the live tables (docs/replay.md) — the way to try a new sink version on real
data before cutting over.

``replay shadow`` copies the sinks' specs into the shadow schema, creates their tables
there, and runs an ordinary worker (same decoding, same writers) with a fresh group
whose PostgreSQL offsets start at the range's start; it stops at the range's end
(the log end when it started, unless given). Dead letters are counted, not sent: the
live dead-letter topic stays the live fleet's. Redis is not touched.

``replay verify`` joins each shadow table with its live table on the sink's id and
reports rows that differ (naming the columns), rows missing from the live table, and
live rows in the shadow's time window that the shadow does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.catalogue.models import IDENT_RE, WorkerSpec
from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError
from sinkfleet.ops.replay.plan import ReplayError, Target, plan_replay, stored_positions
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.ddl import AUDIT_CHAIN_COLUMNS, quote_ident
from sinkfleet.sink.postgres.migrate import ensure_partitions, sink_migrations
from sinkfleet.sink.postgres.offsets import forget_offsets, move_offsets
from sinkfleet.worker.batching import DeadLetter
from sinkfleet.worker.dlq import DeadLetterQueue
from sinkfleet.worker.loop import Worker

DEFAULT_SCHEMA = "sinkfleet_shadow"
SHADOW_MARK = "sinkfleet replay shadow"  # the comment on schemas this tool made
SAMPLES = 20  # differing rows shown per sink


def shadow_catalogue(catalogue: Catalogue, sink_names: list[str], schema: str) -> Catalogue:
    """The named sinks with their tables moved to ``schema`` (nothing else changes)."""
    if not IDENT_RE.fullmatch(schema):
        raise ConfigError(f"--into {schema!r} is not a valid schema name")
    live = {catalogue.sinks[n].spec.db_schema for n in catalogue.sinks}
    if schema in live:
        raise ConfigError(f"--into {schema!r} holds live sink tables; use a schema of its own")
    out = Catalogue(catalogue.root, dict(catalogue.schemas), dict(catalogue.topics))
    for name in sink_names:
        sink = catalogue.sinks[name]
        spec = sink.spec.model_copy(update={"db_schema": schema})
        out.sinks[name] = Sink(spec, sink.topic, sink.schema, sink.columns)
    return out


class ShadowWorker(Worker):
    """A worker bounded to ``stop_at`` that keeps dead letters to itself."""

    def __init__(self, settings: Settings, catalogue: Catalogue, spec: WorkerSpec,
                 stop_at: dict[TopicPartition, int]) -> None:
        super().__init__(settings, catalogue, spec, worker_id=f"{spec.group}-shadow")
        self.cache = None  # the live caches are the live fleet's
        self.stop_at = stop_at
        self.dead: list[DeadLetter] = []
        self.dead_letters = self.store.dead_letters = _Kept(self)

    def _add_to_batch(self, data: dict[TopicPartition, list[Any]]) -> None:
        bounded = {}
        for tp, messages in data.items():
            end = self.stop_at.get(tp, 0)
            kept = [m for m in messages if m.offset < end]
            if kept:
                bounded[tp] = kept
        if bounded:
            super()._add_to_batch(bounded)



class _Kept(DeadLetterQueue):
    """A shadow run's dead letters stay with it (reported, never sent)."""

    def __init__(self, worker: ShadowWorker) -> None:
        super().__init__(worker.settings, {}, worker.worker_id, worker.health,
                         worker.metrics, worker.spec.group)
        self.worker = worker

    async def send(self, dead: list[DeadLetter]) -> None:
        self.worker.dead += dead


@dataclass
class ShadowRun:
    group: str
    schema: str
    sinks: list[str]
    records: int = 0
    stored: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    dead_samples: list[str] = field(default_factory=list)


async def _prepare_schema(settings: Settings, shadow: Catalogue, schema: str, group: str,
                          start: dict[TopicPartition, int]) -> None:
    async with pg(settings) as conn:
        async with conn.transaction():
            # Only a schema this tool made (marked by its comment) is ever dropped: a
            # typo in --into must not destroy another application's schema.
            exists, comment = await conn.fetchrow(
                "SELECT count(*) > 0, max(obj_description(oid, 'pg_namespace'))"
                " FROM pg_namespace WHERE nspname = $1", schema)
            if exists and comment != SHADOW_MARK:
                raise ConfigError(
                    f"schema {schema} exists and was not made by `replay shadow` (no"
                    f" {SHADOW_MARK!r} comment): it is never dropped; use another --into,"
                    " or drop it yourself if it is really yours to lose")
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
            await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
            await conn.execute(f"COMMENT ON SCHEMA {quote_ident(schema)} IS '{SHADOW_MARK}'")
            for name in sorted(shadow.sinks):
                for migration in sink_migrations(shadow.sinks[name]):
                    await conn.execute(migration.sql)
            await forget_offsets(conn, group)
            await move_offsets(conn, group, start)
        for name in sorted(shadow.sinks):
            await ensure_partitions(conn, shadow.sinks[name])


async def run_shadow(settings: Settings, catalogue: Catalogue, sink_names: list[str], *,
                     start: Target, schema: str = DEFAULT_SCHEMA,
                     say: Callable[[str], None] = lambda m: None,
                     timeout: float = 3600.0) -> ShadowRun:
    """Consume the sinks' topics from ``start`` to the current log end into ``schema``."""
    for name in sink_names:
        if name not in catalogue.sinks:
            known = ", ".join(sorted(catalogue.sinks))
            raise ConfigError(f"no sink {name!r} in sinks/ (sinks: {known})")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    group = f"sinkfleet.shadow.{schema}.{stamp}"
    topics = sorted({catalogue.sinks[n].topic.name for n in sink_names})
    plan = await plan_replay(settings, catalogue, group, topics, start)
    begin = {TopicPartition(p.topic, p.partition): p.target for p in plan.partitions}
    end = {TopicPartition(p.topic, p.partition): p.log_end for p in plan.partitions}
    shadow = shadow_catalogue(catalogue, sink_names, schema)
    spec = WorkerSpec(name="shadow", group=group, sinks=sink_names)
    shadow.workers["shadow"] = spec
    await _prepare_schema(settings, shadow, schema, group, begin)
    result = ShadowRun(group, schema, sink_names, records=sum(end[tp] - begin[tp] for tp in end))
    say(f"shadow replay of {', '.join(topics)} into schema {schema}: {result.records:,}"
        f" record(s), group {group}")
    worker = ShadowWorker(settings, shadow, spec, end)
    started = time.monotonic()
    task = asyncio.create_task(worker.run())
    try:
        while True:
            done = await stored_positions(settings, group, list(end))
            if all(done.get(tp, begin[tp]) >= end[tp] for tp in end):
                break
            if task.done():
                task.result()
                raise ReplayError("the shadow worker stopped before the end of the range")
            if time.monotonic() - started > timeout:
                raise ReplayError(f"shadow replay did not finish within {timeout:.0f}s")
            say(f"stored {sum(done.get(tp, begin[tp]) - begin[tp] for tp in end):,} of"
                f" {result.records:,}")
            await asyncio.sleep(1.0)
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
    result.seconds = time.monotonic() - started
    result.stored = worker.stats.stored
    result.dead_lettered = len(worker.dead)
    result.dead_samples = [f"{d.topic}[{d.partition}]@{d.offset} {d.stage}: {d.error}"
                           for d in worker.dead[:SAMPLES]]
    await _forget_group(settings, group)
    return result


async def _forget_group(settings: Settings, group: str) -> None:
    async with pg(settings) as conn:
        await forget_offsets(conn, group)
        await conn.execute("DELETE FROM sinkfleet.workers WHERE group_id = $1", group)


# --- verify -------------------------------------------------------------------------------
@dataclass
class SinkDiff:
    sink: str
    shadow_rows: int
    identical: int
    different: int
    missing_live: int  # in the shadow, not in the live table
    only_live: int  # live rows in the shadow's time window the shadow does not have
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.different or self.missing_live or self.only_live)


def _compared(sink: Sink) -> list[str]:
    """Columns whose values must agree: everything but defaults filled at insert time and
    the audit chain (a shadow that starts mid-chain numbers its own)."""
    skip = set(AUDIT_CHAIN_COLUMNS) if sink.spec.audit is not None else set()
    return [c.name for c in sink.columns if c.source is not None and c.name not in skip]


async def verify_shadow(settings: Settings, catalogue: Catalogue, sink_names: list[str], *,
                        schema: str = DEFAULT_SCHEMA) -> list[SinkDiff]:
    shadow = shadow_catalogue(catalogue, sink_names, schema)
    diffs = []
    async with pg(settings) as conn:
        for name in sink_names:
            live, shade = catalogue.sinks[name], shadow.sinks[name]
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                       f"{schema}.{shade.spec.table}"):
                raise ConfigError(f"no shadow table for {name} in schema {schema}: run"
                                  " `sinkfleet replay shadow` first")
            diffs.append(await _diff(conn, live, shade))
    return diffs


async def _diff(conn: Any, live: Sink, shade: Sink) -> SinkDiff:
    q = quote_ident
    ids = live.spec.id
    cols = [c for c in _compared(live) if c not in ids]
    on = " AND ".join(f"l.{q(c)} = s.{q(c)}" for c in ids)
    differs = " OR ".join(f"l.{q(c)} IS DISTINCT FROM s.{q(c)}" for c in cols) or "false"
    flags = ", ".join(f"l.{q(c)} IS DISTINCT FROM s.{q(c)} AS {q('d_' + c)}" for c in cols)
    id_cols = ", ".join(f"s.{q(c)}::text AS {q('id_' + c)}" for c in ids)
    lt, st = live.spec.qualified_table, shade.spec.qualified_table
    counts = await conn.fetchrow(
        f"SELECT count(*) AS shadow_rows,"
        f" count(*) FILTER (WHERE l.{q(ids[0])} IS NULL) AS missing_live,"
        f" count(*) FILTER (WHERE l.{q(ids[0])} IS NOT NULL AND ({differs})) AS different"
        f" FROM {st} s LEFT JOIN {lt} l ON {on}")
    samples = [dict(r) for r in await conn.fetch(
        f"SELECT {id_cols}, l.{q(ids[0])} IS NULL AS missing_live"
        f"{', ' + flags if flags else ''} FROM {st} s LEFT JOIN {lt} l ON {on}"
        f" WHERE l.{q(ids[0])} IS NULL OR ({differs}) LIMIT {SAMPLES}")]
    only_live = 0
    time_col = live.spec.time_column
    if time_col is not None:
        window = await conn.fetchrow(f"SELECT min({q(time_col)}) AS lo, max({q(time_col)})"
                                     f" AS hi FROM {st}")
        if window["lo"] is not None:
            only_live = int(await conn.fetchval(
                f"SELECT count(*) FROM {lt} l WHERE l.{q(time_col)} BETWEEN $1 AND $2"
                f" AND NOT EXISTS (SELECT 1 FROM {st} s WHERE {on})",
                window["lo"], window["hi"]))
    shown = []
    for row in samples:
        what: dict[str, Any] = {"id": {k[3:]: v for k, v in row.items() if k.startswith("id_")}}
        if row["missing_live"]:
            what["problem"] = "missing in live"
        else:
            what["problem"] = "different"
            what["columns"] = [k[2:] for k, v in row.items() if k.startswith("d_") and v]
        shown.append(what)
    total = int(counts["shadow_rows"])
    return SinkDiff(live.spec.name, total,
                    total - int(counts["missing_live"]) - int(counts["different"]),
                    int(counts["different"]), int(counts["missing_live"]), only_live, shown)
