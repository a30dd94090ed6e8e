"""Retention and the cold archive: bytes per archived experience event, the time to
retire (archive, detach, drop) a partition of N rows, and what that costs ingest.

(1) retire   A fresh experience-events table (``tests.support.catalogue.make_catalogue``: the
             project's sink, keep 7d, archive) gets N rows (default 1,000,000) of
             ``ExperienceLoad`` (fixed seed), built as the worker builds them (Avro
             encode → decode → RowBuilder) and COPYed into the day partition of ten
             days ago. ``run_retention`` archives it (Avro, zstandard, verified),
             detaches and drops it: total time, archive time, bytes per event. Then
             ``archive restore`` brings it back (time, rows).
(2) codecs   The first ≤ 200,000 records of that archive re-encoded in memory: the
             container codecs and levels (bytes per event, encode time), and each
             column compressed on its own with zstd 19 (a columnar layout's floor),
             which shows where the bytes go.
(3) ingest   Two more tables, each with an old partition of N rows and a backlog of
             M experience events (default max(200k, 1.5 N)) in its own topic. Run A:
             one worker process (``python -m sinkfleet worker``) drains its backlog.
             Run B: the same, and one second after its first stored batch a
             ``sinkfleet retention run`` process retires the old partition. The
             worker's rate (stored offsets, polled every 0.1 s) during B's retention
             window is compared with A's rate over the same window after its first
             batch: ratio = B / A (goal ≥ 0.8). PostgreSQL is checkpointed before each
             run; autovacuum is off on these tables.

Usage::

    .venv/bin/python benchmarks/retention.py [--rows 1000000] [--backlog M]
        [--nice 10] [--skip-ingest] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import fastavro
from _common import StoredOffsets, settle  # benchmarks/ is on sys.path when run as a script
from aiokafka.admin import AIOKafkaAdminClient
from backports import zstd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sinkfleet.config import Settings, load_settings  # noqa: E402
from sinkfleet.dev.produce import produce  # noqa: E402
from sinkfleet.dev.synthetic.loads import ExperienceLoad  # noqa: E402
from sinkfleet.ops.lifecycle.archive.restore import restore_range  # noqa: E402
from sinkfleet.ops.lifecycle.retention.run import run_retention  # noqa: E402
from sinkfleet.ops.setup.topics import apply_topics  # noqa: E402
from sinkfleet.sink.postgres.connect import pg  # noqa: E402
from sinkfleet.sink.postgres.ddl import floor_time  # noqa: E402
from sinkfleet.sink.postgres.migrate import migrate  # noqa: E402
from tests.ops.retention_support import event_rows, insert_rows  # noqa: E402
from tests.support.catalogue import TestCatalogue, drop_catalogues, make_catalogue  # noqa: E402

console = Console()
CHUNK = 50_000
OLD_DAYS = 10
START_US = int(time.time() * 1_000_000)  # the backlogs' clock: both runs get the same


def old_day() -> datetime:
    return floor_time(datetime.now(UTC), "day") - timedelta(days=OLD_DAYS)


async def new_catalogue(tmp: Path, settings: Settings, made: list[TestCatalogue]
                        ) -> TestCatalogue:
    tc = make_catalogue(tmp, settings)
    tc.settings = load_settings(home=tc.root, state_dir=settings.state,
                                archive_dir=tmp / "archive")
    made.append(tc)
    await migrate(tc.settings, tc.catalogue, lambda _: None)
    async with pg(tc.settings) as conn:
        sink = tc.catalogue.sinks[tc.table]
        day = old_day()
        name = f"{tc.table}_p{day:%Y%m%d}"
        end = day + timedelta(days=1)
        await conn.execute(f'CREATE TABLE public."{name}" PARTITION OF public."{tc.table}"'
                           " FOR VALUES"
                           f" FROM ('{day.isoformat()}') TO ('{end.isoformat()}')")
        leaves = await conn.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c"
                                  " ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
                                  tc.table)
        for leaf in leaves:
            await conn.execute(f'ALTER TABLE public."{leaf[0]}" SET'
                               " (autovacuum_enabled = off)")
        assert sink.spec.retention is not None
    return tc


async def fill_old(tc: TestCatalogue, rows: int) -> float:
    """COPY ``rows`` events into the old partition, in chunks; return seconds."""
    sink = tc.catalogue.sinks[tc.table]
    async with pg(tc.settings) as conn:
        t0 = time.monotonic()
        start = old_day() + timedelta(hours=1)
        for i in range(0, rows, CHUNK):
            n = min(CHUNK, rows - i)
            names, chunk = event_rows(sink, start + timedelta(seconds=i // 200), n, seed=i)
            await insert_rows(conn, sink, names, chunk)
        await conn.execute(f'VACUUM ANALYZE public."{tc.table}_p{old_day():%Y%m%d}"')
    return time.monotonic() - t0




# --- (1) retire and restore ---------------------------------------------------------------
async def bench_retire(tc: TestCatalogue, rows: int) -> dict[str, Any]:
    fill_s = await fill_old(tc, rows)
    await settle(tc.settings)
    t0 = time.monotonic()
    report = await run_retention(tc.settings, tc.catalogue, sinks=[tc.table],
                                 say=lambda m: console.print(f"  {m}", highlight=False))
    total = time.monotonic() - t0
    done_ = [r for r in report.results if r.rows]
    assert len(done_) == 1, report.as_dict()
    (done,) = done_
    assert done.archive is not None and done.archive.rows == rows, done
    archive = done.archive
    day = old_day()
    t1 = time.monotonic()
    restored = await restore_range(tc.settings, tc.catalogue, tc.table, day,
                                   day + timedelta(days=1), say=lambda _: None)
    restore_s = time.monotonic() - t1
    assert sum(r.inserted for r in restored) == rows
    return {"rows": rows, "fill_s": fill_s, "retire_s": total, "archive_s": archive.seconds,
            "detach_drop_s": done.seconds - archive.seconds, "detached": done.detached,
            "archive_bytes": archive.bytes, "bytes_per_event": archive.bytes / rows,
            "codec": archive.codec, "restore_s": restore_s,
            "file": str(tc.settings.archive / archive.path)}


# --- (2) codecs ---------------------------------------------------------------------------
def bench_codecs(path: Path, limit: int = 200_000) -> dict[str, Any]:
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        schema = reader.writer_schema
        records = list(islice(reader, limit))
    n = len(records)
    out: dict[str, Any] = {"records": n, "codecs": []}
    for codec, level in (("null", None), ("deflate", None), ("zstandard", 1),
                         ("zstandard", 3), ("zstandard", 9), ("zstandard", 19)):
        buf = io.BytesIO()
        t0 = time.perf_counter()
        fastavro.writer(buf, schema, records, codec=codec, codec_compression_level=level,
                        sync_interval=1 << 20)
        out["codecs"].append({"codec": codec, "level": level,
                              "bytes_per_event": len(buf.getvalue()) / n,
                              "us_per_event": (time.perf_counter() - t0) * 1e6 / n})
    columns = {}
    assert isinstance(schema, dict)
    for field in schema["fields"]:
        single = {"type": "record", "name": "c", "fields": [field]}
        buf = io.BytesIO()
        fastavro.writer(buf, single, ({field["name"]: r[field["name"]]} for r in records),
                        codec="null", sync_interval=1 << 30)
        columns[field["name"]] = len(zstd.compress(buf.getvalue(), level=19)) / n
    out["columnar_zstd19"] = columns
    out["columnar_total"] = sum(columns.values())
    return out


# --- (3) ingest during retention ----------------------------------------------------------
async def backlog(tc: TestCatalogue, count: int) -> None:
    await apply_topics(tc.settings, tc.catalogue, say=lambda _: None)
    await produce(tc.settings, tc.catalogue, "experience_event",
                  iter(ExperienceLoad(seed=1, start_us=START_US)), count)


def rate_between(samples: list[tuple[float, int]], t0: float, t1: float) -> float:
    def at(t: float) -> float:  # stored count at time t, linearly between samples
        before = [s for s in samples if s[0] <= t]
        after = [s for s in samples if s[0] >= t]
        if not before or not after:
            raise ValueError("window outside the run")
        (ta, a), (tb, b) = before[-1], after[0]
        return a if tb == ta else a + (b - a) * (t - ta) / (tb - ta)
    return (at(t1) - at(t0)) / (t1 - t0)


def start_retention(tc: TestCatalogue, tmp: Path, nice: int) -> subprocess.Popen[bytes]:
    with open(tmp / f"retention-{tc.table}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "retention", "run", "--sink", tc.table,
             "--nice", str(nice)], stdout=log, stderr=subprocess.STDOUT,
            env={**tc.env(), "SINKFLEET_ARCHIVE_DIR": str(tmp / "archive")})


async def ingest_run(tc: TestCatalogue, count: int, tmp: Path, retire: bool, nice: int
                     ) -> dict[str, Any]:
    await settle(tc.settings)
    stored = StoredOffsets(tc.settings, tc.group)
    t0 = time.monotonic()
    worker = tc.start_worker(tmp / f"worker-{tc.table}.log")
    samples: list[tuple[float, int]] = []
    first: float | None = None
    ret: subprocess.Popen[bytes] | None = None
    window: list[float] = []
    try:
        while True:
            done = await stored()
            now = time.monotonic() - t0
            samples.append((now, done))
            if done and first is None:
                first = now
            if retire and first is not None and ret is None and now >= first + 1.0:
                ret = start_retention(tc, tmp, nice)
                window = [now]
            if ret is not None and len(window) == 1 and ret.poll() is not None:
                window.append(now)
                if ret.returncode:
                    raise RuntimeError(f"retention run exited {ret.returncode}")
            if done >= count:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}")
            await asyncio.sleep(0.1)
    finally:
        await stored.close()
        worker.terminate()
        await asyncio.to_thread(worker.wait, 60)
        if ret is not None and ret.poll() is None:
            await asyncio.to_thread(ret.wait, 600)
            window.append(time.monotonic() - t0)
    assert first is not None
    return {"samples": samples, "first": first, "seconds": samples[-1][0],
            "window": window, "rate": count / samples[-1][0],
            "retention_finished_first": len(window) == 2 and window[1] <= samples[-1][0]}


async def bench_ingest(settings: Settings, tmp: Path, made: list[TestCatalogue], rows: int,
                       count: int, nice: int) -> dict[str, Any]:
    cats = [await new_catalogue(tmp, settings, made) for _ in range(2)]
    for tc in cats:
        await fill_old(tc, rows)
        await backlog(tc, count)
    a = await ingest_run(cats[0], count, tmp, False, nice)
    b = await ingest_run(cats[1], count, tmp, True, nice)
    w0, w1 = b["window"]
    end = min(w1, b["seconds"])
    rate_b = rate_between(b["samples"], w0, end)
    # A's rate over the same span after its own first batch
    shift = a["first"] - b["first"]
    rate_a = rate_between(a["samples"], w0 + shift, min(end + shift, a["seconds"]))
    return {"backlog": count, "A_rate": a["rate"], "B_rate": b["rate"],
            "retention_window_s": [w0, w1], "retention_s": w1 - w0,
            "window_rate_A": rate_a, "window_rate_B": rate_b, "ratio": rate_b / rate_a,
            "worker_outlasted_retention": b["retention_finished_first"]}


# --- orchestration ------------------------------------------------------------------------
async def cleanup(settings: Settings, made: list[TestCatalogue]) -> None:
    async with pg(settings) as conn:
        for tc in made:
            await conn.execute("DELETE FROM sinkfleet.archives WHERE sink = $1", tc.table)
            await conn.execute("DELETE FROM sinkfleet.retention_pending WHERE sink = $1",
                               tc.table)
    await drop_catalogues(settings, made)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for tc in made for t in (tc.topic, f"{tc.topic}.dlq") if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def main(opts: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(home=ROOT)
    made: list[TestCatalogue] = []
    out: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "host": platform.node(),
                           "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="sinkfleet-retention-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            console.print(f"(1) retire a partition of {opts.rows:,} rows …")
            tc = await new_catalogue(tmp, settings, made)
            out["retire"] = await bench_retire(tc, opts.rows)
            console.print("(2) codecs …")
            out["codecs"] = bench_codecs(Path(out["retire"]["file"]))
            if not opts.skip_ingest:
                count = opts.backlog or max(200_000, int(1.5 * opts.rows))
                console.print(f"(3) ingest of {count:,} events with and without retention …")
                out["ingest"] = await bench_ingest(settings, tmp, made, opts.rows, count,
                                                   opts.nice)
        finally:
            await cleanup(settings, made)
    return out


def show(out: dict[str, Any]) -> None:
    r = out["retire"]
    table = Table("measure", "result", title=f"retention of one partition, {r['rows']:,} rows")
    table.add_row("retire (archive + detach + drop)", f"{r['retire_s']:.1f} s")
    table.add_row("  of which archive (read, encode, compress, verify)",
                  f"{r['archive_s']:.1f} s ({r['rows'] / r['archive_s']:,.0f} rows/s)")
    table.add_row("  of which detach + drop", f"{r['detach_drop_s']:.2f} s ({r['detached']})")
    table.add_row("archive size", f"{r['archive_bytes'] / 1048576:,.1f} MiB ({r['codec']})")
    table.add_row("bytes per archived event (goal ≤ 60)", f"{r['bytes_per_event']:.1f}")
    table.add_row("restore (verify, COPY, merge)", f"{r['restore_s']:.1f} s")
    console.print(table)
    c = out["codecs"]
    codecs = Table("codec", "level", "B/event", "µs/event", title=f"codecs ({c['records']:,}"
                   " archived events re-encoded)")
    for row in c["codecs"]:
        codecs.add_row(row["codec"], str(row["level"] or "-"), f"{row['bytes_per_event']:.1f}",
                       f"{row['us_per_event']:.1f}")
    console.print(codecs)
    top = sorted(c["columnar_zstd19"].items(), key=lambda kv: -kv[1])[:8]
    console.print(f"columnar floor (each column alone, zstd 19): {c['columnar_total']:.1f}"
                  " B/event; largest: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    if "ingest" in out:
        i = out["ingest"]
        ing = Table("measure", "result", title=f"ingest during retention ({i['backlog']:,}"
                    " events)")
        ing.add_row("worker rate A (no retention) / B (whole run)",
                    f"{i['A_rate']:,.0f} / {i['B_rate']:,.0f} events/s")
        ing.add_row("retention process (under load)", f"{i['retention_s']:.1f} s")
        ing.add_row("worker rate in the retention window: A / B",
                    f"{i['window_rate_A']:,.0f} / {i['window_rate_B']:,.0f} events/s")
        ing.add_row("ratio B / A (goal ≥ 0.8)", f"{i['ratio']:.2f}")
        if not i["worker_outlasted_retention"]:
            ing.add_row("[yellow]note[/]", "the worker drained its backlog before retention"
                        " ended: raise --backlog")
        console.print(ing)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the partition")
    parser.add_argument("--backlog", type=int, default=0, help="events the worker drains")
    parser.add_argument("--nice", type=int, default=10, help="retention process niceness")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results"
                        / "retention.json")
    opts = parser.parse_args()
    out = asyncio.run(main(opts))
    if "ingest" in out:
        for key in ("samples",):
            out["ingest"].pop(key, None)
    opts.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    show(out)
    console.print(f"results in {opts.json}")


if __name__ == "__main__":
    cli()
