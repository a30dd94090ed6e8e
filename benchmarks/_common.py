"""Helpers shared by the benchmarks (run as scripts: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import fcntl
import os
import platform
import pstats
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Sink
from sinkfleet.catalogue.isolate import IsolatedCatalogue
from sinkfleet.config import Settings, load_settings
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
    """User + system CPU seconds a process has used (``/proc/<pid>/stat`` utime + stime,
    all its threads); this process when ``pid`` is None."""
    stat = Path(f"/proc/{pid or 'self'}/stat").read_text()
    fields = stat.rsplit(") ", 1)[1].split()  # after "pid (comm) ": comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process, bytes; this process when ``pid`` is None."""
    statm = Path(f"/proc/{pid or 'self'}/statm").read_text()
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stop_child(proc: Any, grace: float) -> None:
    """Stop a ``multiprocessing`` child: SIGTERM (it stops cleanly), SIGKILL after ``grace``
    seconds."""
    if proc.is_alive():
        proc.terminate()
        proc.join(grace)
    if proc.is_alive():
        proc.kill()
        proc.join(10)


# --- Kafka clean-up -----------------------------------------------------------------------
@contextlib.asynccontextmanager
async def kafka_admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=30_000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def delete_topics(settings: Settings, names: Iterable[str]) -> list[str]:
    """Delete those of ``names`` that exist; return them."""
    async with kafka_admin(settings) as admin:
        doomed = sorted(set(names) & set(await admin.list_topics()))
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=30_000)
        return doomed


async def delete_groups(settings: Settings, groups: list[str]) -> dict[str, int]:
    """DeleteGroups (API 42) to each group's coordinator: aiokafka's admin client has no
    ``delete_consumer_groups``. Returns the error code per group (0 = deleted; a group
    that never committed does not exist)."""
    if not groups:
        return {}
    async with kafka_admin(settings) as admin:
        by_node: dict[int, list[str]] = {}
        for g in groups:
            by_node.setdefault(await admin.find_coordinator(g), []).append(g)
        codes: dict[str, int] = {}
        for node, names in by_node.items():
            response = await admin._send_request(DeleteGroupsRequest(names), node)
            codes.update(dict(response.results))
        return codes


async def leftovers(settings: Settings, prefix: str) -> tuple[list[str], list[str]]:
    """Topics and groups named ``prefix…`` (an interrupted earlier run's)."""
    async with kafka_admin(settings) as admin:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix)]
    return topics, groups


# --- start and reporting ------------------------------------------------------------------
def start(console: Console) -> tuple[Settings, tuple[float, float, float]]:
    """The settings (the project's catalogue unless SINKFLEET_HOME says otherwise) and the
    load average before the run, noted when the machine is busy already."""
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        console.print(f"[yellow]note:[/] load average {load_before[0]:.2f} before the run;"
                      " numbers may be noisy")
    home = {} if "SINKFLEET_HOME" in os.environ else {"home": Path(ROOT)}
    return load_settings(**home), load_before


@contextlib.contextmanager
def one_run_at_a_time(settings: Settings, script: str, what: str) -> Iterator[None]:
    """Hold ``<state dir>/run/bench-<script>.lock`` while the block runs. A run that
    resets shared names (``what``) would clobber another run of the same script on the
    same stack: the second one exits 2 at once, saying which pid holds the lock."""
    path = settings.state / "run" / f"bench-{script}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            print(f"error: another {script}.py run (pid {holder}) uses {what} on this stack;"
                  f" wait for it to finish (lock: {path})", file=sys.stderr)
            raise SystemExit(2) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield  # the lock goes with the file, however the run ends


def report_console() -> Console:
    """The console of a benchmark's report: the terminal's, or in logs and CI one wide
    enough for its tables."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def progress_bar(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    refresh_per_second=4)


def print_profile(console: Console, path: Path, title: str, lines: int = 15) -> None:
    console.rule(f"profile: {title} ({path})")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(lines)


def environment(load_before: tuple[float, float, float], packages: Iterable[str],
                versions: dict[str, str] | None = None) -> dict[str, Any]:
    """The machine, its load before and after, and the versions of ``packages`` (plus
    ``versions`` of things that are not Python packages)."""
    found = {p: metadata.version(p) for p in packages} | (versions or {})
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "versions": found}


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


def dump_yaml(path: Path, data: dict[str, Any]) -> None:
    """Write a catalogue spec the benchmark made (keys in the order given)."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))


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


async def disable_autovacuum(settings: Settings, schema: str, prefix: str = "") -> None:
    """Keep autovacuum of one stage's table from landing in a later stage's timing: every
    table of ``schema`` (named ``prefix…``, with its partitions, when given)."""
    like = prefix.replace("_", "\\_") + "%"
    async with pg(settings) as conn:
        leaves = await conn.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname LIKE $2", schema, like)
        for leaf in leaves:
            await conn.execute(f"ALTER TABLE {leaf['name']} SET (autovacuum_enabled = off)")
