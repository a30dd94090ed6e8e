"""Helpers shared by the benchmarks (run as scripts: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg
from rich.progress import Progress

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Sink
from sinkfleet.catalogue.isolate import IsolatedCatalogue
from sinkfleet.config import Settings
from sinkfleet.dev.synthetic.loads import synthetic_records
from sinkfleet.kafka.positions import KafkaPositions
from sinkfleet.sink.postgres.connect import connect, pg
from sinkfleet.worker.loop import Worker
from sinkfleet.worker.rows import RowBuilder


@contextlib.contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """cProfile the block into ``path`` (a .pstats file); a no-op when ``path`` is None."""
    if path is None:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(path)


class StoredOffsets:
    """The next offsets a group stored in PostgreSQL with its rows, summed (awaitable)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings, self.group = settings, group
        self._conn: asyncpg.Connection | None = None

    async def __call__(self) -> int:
        if self._conn is None:
            self._conn = await connect(self.settings)
        total = await self._conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM sinkfleet.consumer_offsets"
            " WHERE group_id = $1", self.group)
        return int(total)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


ROOT = str(Path(__file__).resolve().parents[1])
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process has used (``/proc/<pid>/stat`` utime + stime);
    this process when ``pid`` is None."""
    stat = Path(f"/proc/{pid or 'self'}/stat").read_text()
    fields = stat.rsplit(") ", 1)[1].split()  # after "pid (comm) ": comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


async def settle(settings: Settings) -> None:
    """Checkpoint PostgreSQL and write dirty pages out (Kafka's logs too), so one stage's
    writes are not the next stage's cost."""
    async with pg(settings) as conn:
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    await asyncio.to_thread(os.sync)
    await asyncio.sleep(1.0)


@dataclass
class Rate:
    records: int
    seconds: float
    stored: int = 0  # rows the workers inserted (re-read duplicates are not)

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


async def end_total(settings: Settings, topics: list[str]) -> int:
    async with KafkaPositions(settings) as kafka:
        return sum(end for _, end in (await kafka.bounds(topics)).values())


async def run_workers(iso: IsolatedCatalogue, settings: Settings, specs: list[str],
                      progress: Progress, label: str) -> Rate:
    """Run ``specs`` in this process until their groups stored every record of their
    topics. The rate counts from the first stored batch (joining the group, a few
    seconds whatever the load, is left out) to the last."""
    cat = iso.catalogue
    groups = [cat.worker(s).group for s in specs]
    topics = sorted({cat.sinks[n].topic.name for s in specs for n in cat.worker(s).sinks})
    target = await end_total(settings, topics)
    probes = [StoredOffsets(settings, g) for g in groups]
    start_total = sum([await p() for p in probes])
    workers = [Worker(settings, cat, cat.worker(s), worker_id=f"bench-{s}") for s in specs]
    task = progress.add_task(label, total=target - start_total)
    started = time.monotonic()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    first: tuple[float, int] | None = None
    try:
        while True:
            done = sum([await p() for p in probes])
            progress.update(task, completed=done - start_total)
            if first is None and done > start_total:
                first = (time.monotonic(), done)
            if done >= target:
                break
            for t in tasks:
                if t.done():
                    raise RuntimeError(f"a worker stopped early: {t.exception()}")
            await asyncio.sleep(0.05)
        assert first is not None
        if first[1] >= target:  # all stored in the first poll: count from the start
            first = (started, start_total)
        elapsed = time.monotonic() - first[0]
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in probes:
            await p.close()
    return Rate(target - first[1], elapsed, sum(w.stats.stored for w in workers))


async def cleanup(settings: Settings, iso: IsolatedCatalogue) -> None:
    """Drop the isolated catalogue's tables, caches, groups and topics."""
    if ROOT not in sys.path:  # the clean-up helper lives beside the tests
        sys.path.insert(0, ROOT)
    from tests.support.catalogue import forget

    await forget(settings, tables=list(iso.catalogue.sinks),
                 groups=[w.group for w in iso.catalogue.workers.values()],
                 topics=[t.name for t in iso.catalogue.topics.values()])


# --- the events benchmarks' records, rows and tables (e2e_events.py, connect_sink.py) ------
def make_records(count: int, seed: int, family: str = "experience_event"
                 ) -> list[dict[str, Any]]:
    return list(islice(synthetic_records(family, seed=seed), count))


def make_rows(sink: Sink, records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The tuples the worker builds: encode, decode, RowBuilder (as on the wire)."""
    codec = Codec(sink.schema, SchemaStore())
    build = RowBuilder(sink)
    return [build(codec.decode(codec.encode(r, validate=False))) for r in records]


async def copy_rows(settings: Settings, sink: Sink, rows: list[tuple[Any, ...]]) -> float:
    """The COPY ceiling: one ``copy_records_to_table`` of ``rows``; its seconds."""
    columns = RowBuilder(sink).names
    async with pg(settings) as conn:
        t0 = time.monotonic()
        await conn.copy_records_to_table(sink.spec.table, schema_name=sink.spec.db_schema,
                                         records=rows, columns=columns)
        return time.monotonic() - t0


async def disable_autovacuum(settings: Settings, schema: str) -> None:
    """Keep autovacuum of one stage's table from landing in a later stage's timing."""
    async with pg(settings) as conn:
        leaves = await conn.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r'", schema)
        for leaf in leaves:
            await conn.execute(f"ALTER TABLE {leaf['name']} SET (autovacuum_enabled = off)")
