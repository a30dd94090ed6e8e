"""Bytes per experience event: in PostgreSQL by component (heap, each index, TOAST), and
in the cold archive — before and after the ``storage:`` settings, on the same run.

(1) tables   The same N records of ``ExperienceLoad`` (fixed seed; built as the worker
             builds rows: Avro encode → decode → RowBuilder) are COPYed, in batches
             of the worker's size, into fresh copies of the project's
             ``experience_events`` sink, one stage at a time:

               before      the previous version: no ``storage:``, random (v4) event ids
               v7          the same table, time-ordered (UUIDv7) event ids
               v7+aligned  + ``column_order: aligned``
               after       the catalogue as shipped (+ key time-first, fillfactor 100)
               after v4    the catalogue as shipped with random ids again

             After VACUUM ANALYZE: `sinkfleet stats`'s bytes by component, per event
             (empty partitions made by `db migrate` included); COPY rows/s; a
             newest-first page (the read model's default order, 100 rows) median ms.
             "after, compacted": the "after" table once its day is over and
             ``storage.compact`` packed its indexes (retention run --every).
             "before, migrated": the "before" table (rows in it) after `db migrate`
             with the shipped settings, and how long that took.
(2) archive  The "before" and "after" tables' partitions written as retention writes
             them (Avro container, zstandard): bytes per event. Then each column
             compressed on its own (zstd 19) raw and with the best of a few lossless
             transforms (delta, byte-stream split, dictionary): the columnar floor,
             column by column, in the archive's row order and sorted by the sink's
             (agent_id, episode_id, ts) index.

Goals: 200 B/event in PostgreSQL, 60 B/event in the archive (issue 17, item 5).

Usage::

    .venv/bin/python benchmarks/storage.py [--events 200000] [--batch 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import struct
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from _common import make_rows  # benchmarks/ is on sys.path when run as a script
from backports import zstd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sinkfleet.catalogue import Sink, load_catalogue  # noqa: E402
from sinkfleet.catalogue.isolate import isolated_copy  # noqa: E402
from sinkfleet.config import Settings, load_settings  # noqa: E402
from sinkfleet.dev.synthetic.loads import synthetic_records  # noqa: E402
from sinkfleet.ops.lifecycle.archive.avro import (  # noqa: E402
    ArchiveWriter,
    archive_schema,
    select_list,
)
from sinkfleet.ops.lifecycle.compact import GRACE, compact_closed  # noqa: E402
from sinkfleet.ops.stats.pg import TableStats, table_stats  # noqa: E402
from sinkfleet.read.query import Query, SinkQuery  # noqa: E402
from sinkfleet.sink.postgres.connect import pg  # noqa: E402
from sinkfleet.sink.postgres.migrate import migrate  # noqa: E402
from sinkfleet.worker.rows import RowBuilder  # noqa: E402
from tests.support.catalogue import DELETE, edit_spec, forget  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 150)  # a log file: wide tables
PG_GOAL, ARCHIVE_GOAL = 200.0, 60.0
SHIPPED = "shipped"
STAGES: dict[str, tuple[Any, bool]] = {  # name → (storage override, random ids)
    "before": (DELETE, True),
    "v7": (DELETE, False),
    "v7+aligned": (lambda _: {"column_order": "aligned"}, False),  # replaces, not merges
    "after": (SHIPPED, False),
    "after v4": (SHIPPED, True),
}


def records(count: int, start: datetime) -> list[dict[str, Any]]:
    return list(islice(synthetic_records("experience_event", 7,
                                         start_us=int(start.timestamp() * 1e6)), count))


def with_random_ids(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same records with version 4 (random) event ids, as before UUIDv7."""
    rng = random.Random(4)
    return [{**r, "event_id": rng.randbytes(16)} for r in recs]


async def stage(settings: Settings, name: str, override: Any, rows: list[tuple[Any, ...]],
                batch: int, keep: list[tuple[Settings, list[str]]]) -> dict[str, Any]:
    # short: the sink's derived index names must stay whole (≤ 63 characters)
    suffix = "s" + "".join(c for c in name if c.isalnum())[:3] + f"{random.getrandbits(16):04x}"
    iso = isolated_copy(ROOT, Path(tempfile.mkdtemp(prefix="sinkfleet-storage-")), suffix,
                        sinks=["experience_events"])
    path = iso.root / "sinks" / "experience_events.yaml"
    if override is not SHIPPED:
        edit_spec(path, {"storage": override})
    cat = load_catalogue(iso.root)
    bench = load_settings(home=iso.root, state_dir=settings.state)
    await migrate(bench, cat, lambda m: None)
    sink = cat.sinks[iso.sink("experience_events")]
    keep.append((bench, [sink.spec.table]))
    names = RowBuilder(sink).names
    async with pg(bench) as conn:
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            await conn.copy_records_to_table(sink.spec.table, records=rows[i:i + batch],
                                             columns=names)
        copy_s = time.perf_counter() - t0
        await conn.execute(f"VACUUM ANALYZE {sink.spec.qualified_table}")
        stats = await table_stats(conn, sink.spec.db_schema, sink.spec.table, exact=True)
        sql, args, _ = SinkQuery(sink).plan(Query(sink.spec.name, newest_first=True,
                                                  limit=100))
        times = []
        for _ in range(21):
            t = time.perf_counter()
            await conn.fetch(sql, *args)
            times.append((time.perf_counter() - t) * 1000)
    return {"sink": sink, "stats": stats, "copy_per_s": len(rows) / copy_s,
            "newest_ms": statistics.median(times)}


async def upgraded(settings: Settings, before: Sink) -> tuple[float, TableStats]:
    """`db migrate` of the "before" table (rows in it) to the shipped ``storage:``: its
    seconds (the key rebuilt under an ACCESS EXCLUSIVE lock), and the table after."""
    root = settings.home
    shipped = yaml.safe_load((ROOT / "sinks" / "experience_events.yaml").read_text())["storage"]
    edit_spec(root / "sinks" / "experience_events.yaml", {"storage": shipped})
    cat = load_catalogue(root)
    t0 = time.perf_counter()
    await migrate(settings, cat, lambda m: None)
    seconds = time.perf_counter() - t0
    spec = cat.sinks[before.spec.name].spec
    async with pg(settings) as conn:
        await conn.execute(f"VACUUM ANALYZE {spec.qualified_table}")
        return seconds, await table_stats(conn, spec.db_schema, spec.table, exact=True)


async def heap_floor(settings: Settings, sink: Sink) -> dict[str, float]:
    """Average stored bytes of each column, and of the tuple header (with the null
    bitmap), over the sink's rows: what the heap cannot go below."""
    names = [c.name for c in sink.columns]
    sizes = ", ".join(f'avg(coalesce(pg_column_size("{n}"), 0)) AS "{n}"' for n in names)
    async with pg(settings) as conn:
        row = await conn.fetchrow(f"SELECT avg(pg_column_size(t.*)) AS tuple, {sizes}"
                                  f" FROM {sink.spec.qualified_table} t")
    out = {n: float(row[n]) for n in names}
    out["tuple header + null bitmap + padding"] = float(row["tuple"]) - sum(out.values())
    out["line pointer"] = 4.0
    return out


async def compacted(settings: Settings, sink: Sink) -> TableStats:
    """The table after ``storage.compact`` packed it, as once the day is over."""
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) \
        + timedelta(days=1)
    async with pg(settings) as conn:
        await compact_closed(conn, sink, tomorrow + GRACE)
        return await table_stats(conn, sink.spec.db_schema, sink.spec.table, exact=True)


def per_event(stats: TableStats) -> dict[str, float]:
    assert stats.rows and stats.parts is not None and stats.bytes is not None
    out = {p.name.split(" (")[0].replace(f"index {stats.table.split('.')[1]}", "index "):
           p.bytes / stats.rows for p in stats.parts}
    out["total"] = stats.bytes / stats.rows
    return out


# --- (2) the archive -------------------------------------------------------------------
async def archive(settings: Settings, sink: Sink, out: Path) -> tuple[float, list[Any]]:
    """The sink's rows as retention archives them: (bytes per event, the records)."""
    spec = sink.spec
    names = [c.name for c in sink.columns]
    async with pg(settings) as conn:
        rows = []
        for part in await conn.fetch(
                "SELECT relid::regclass::text AS t FROM pg_partition_tree($1::regclass)"
                " WHERE isleaf", spec.table):
            rows += await conn.fetch(f"SELECT {select_list(sink)} FROM ONLY {part['t']}")
    writer = ArchiveWriter(out, archive_schema(sink), {"sinkfleet.sink": spec.name})
    writer.write(names, rows)
    size, _ = writer.close()
    return size / len(rows), [dict(zip(names, r, strict=True)) for r in rows]


def avro_size(sink: Sink, recs: list[dict[str, Any]], out: Path) -> float:
    """Bytes per event of ``recs`` in an archive file, in the order given."""
    names = [c.name for c in sink.columns]
    writer = ArchiveWriter(out, archive_schema(sink), {"sinkfleet.sink": sink.spec.name})
    writer.write(names, [tuple(r[n] for n in names) for r in recs])
    return writer.close()[0] / len(recs)


def _zz(values: list[int]) -> bytes:
    """Zigzag varints of successive differences."""
    out, prev = bytearray(), 0
    for v in values:
        d, prev = v - prev, v
        z = (d << 1) ^ (d >> 63)
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
    return bytes(out)


def _split(blobs: list[bytes], width: int) -> bytes:
    """Byte-stream split: every value's byte 0, then every byte 1, …"""
    joined = b"".join(blobs)
    return b"".join(joined[i::width] for i in range(width))


def column_sizes(recs: list[dict[str, Any]], sink: Sink) -> dict[str, tuple[float, str]]:
    """Per column: the fewest bytes per event (zstd 19) over a few lossless encodings."""
    n = len(recs)
    z = lambda b: len(zstd.compress(b, level=19))  # noqa: E731
    out: dict[str, tuple[float, str]] = {}
    for col in sink.columns:
        vals = [r[col.name] for r in recs]
        nulls = bytes(v is None for v in vals)
        present = [v for v in vals if v is not None]
        cands: dict[str, int] = {}
        if col.pg_type in ("real", "double precision"):
            fmt, w = ("<f", 4) if col.pg_type == "real" else ("<d", 8)
            blobs = [struct.pack(fmt, v) for v in present]
            cands["raw"] = z(b"".join(blobs))
            cands["byte-split"] = z(_split(blobs, w))
            ints = [int.from_bytes(b, "little") for b in blobs]
            xor = [a ^ b for a, b in zip([0, *ints], ints, strict=False)]
            cands["xor+split"] = z(_split([x.to_bytes(w, "little") for x in xor], w))
        elif col.pg_type in ("smallint", "integer", "bigint", "timestamptz"):
            ints = [int(v.timestamp() * 1e6) if isinstance(v, datetime) else v for v in present]
            cands["raw"] = z(b"".join(struct.pack("<q", v) for v in ints))
            cands["delta"] = z(_zz(ints))
        elif col.pg_type == "bytea":
            cands["raw"] = z(b"".join(present))
            cands["byte-split"] = z(_split(present, 16)) if all(
                len(v) == 16 for v in present) else cands["raw"]
        else:  # text, jsonb: the values, and a dictionary of them with varint codes
            text = [str(v).encode() for v in present]
            cands["raw"] = z(b"\0".join(text))
            uniq = list(dict.fromkeys(text))
            code = {t: i for i, t in enumerate(uniq)}
            codes = b"".join(struct.pack("<H", code[t]) for t in text) if len(uniq) < 65536 \
                else b"".join(text)
            cands["dictionary"] = z(b"\0".join(uniq)) + z(codes)
        best = min(cands, key=lambda k: cands[k])
        out[col.name] = ((cands[best] + (z(nulls) if col.nullable else 0)) / n, best)
    return out


def sort_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    return rec["agent_id"], rec["episode_id"], rec["ts"]


# --- the run ---------------------------------------------------------------------------
async def main(opts: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(home=ROOT)
    base = load_catalogue(ROOT).sinks["experience_events"]
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) \
        + timedelta(minutes=1)  # every record in today's partition
    recs = records(opts.events, start)
    rows7, rows4 = make_rows(base, recs), make_rows(base, with_random_ids(recs))
    made: list[tuple[Settings, list[str]]] = []
    results: dict[str, Any] = {"events": opts.events, "batch": opts.batch,
                               "date": datetime.now(UTC).isoformat(), "stages": {}}
    try:
        done = {}
        for name, (override, random_ids) in STAGES.items():
            console.print(f"[dim]stage {name} …[/]")
            done[name] = await stage(settings, name, override, rows4 if random_ids else rows7,
                                     opts.batch, made)
            results["stages"][name] = {"per_event": per_event(done[name]["stats"]),
                                       "copy_per_s": done[name]["copy_per_s"],
                                       "newest_ms": done[name]["newest_ms"]}
        tmp = Path(tempfile.mkdtemp(prefix="sinkfleet-storage-archive-"))
        arch: dict[str, Any] = {}
        for name in ("before", "after"):
            sink = done[name]["sink"]
            bpe, arecs = await archive(made[0][0], sink, tmp / f"{name}.avro")
            arch[name] = {"avro_zstd": bpe}
            if name == "after":
                arch["avro_zstd_index_order"] = avro_size(sink, sorted(arecs, key=sort_key),
                                                          tmp / "sorted.avro")
                cols = column_sizes(arecs, sink)
                by_index = column_sizes(sorted(arecs, key=sort_key), sink)
                arch["columns"] = {c: {"archive_order": cols[c], "index_order": by_index[c]}
                                   for c in cols}
                arch["columnar"] = sum(v[0] for v in cols.values())
                arch["columnar_index_order"] = sum(v[0] for v in by_index.values())
        results["archive"] = arch
        after = done["after"]["sink"]
        results["heap_floor"] = await heap_floor(made[0][0], after)
        results["after_compacted"] = per_event(await compacted(made[0][0], after))
        seconds, stats = await upgraded(made[0][0], done["before"]["sink"])  # stage 1
        results["before_migrated"] = per_event(stats) | {"migrate_s": seconds}
    finally:
        if not opts.keep:
            for bench, tables in made:
                await forget(bench, tables=tables)
    return results


def report(r: dict[str, Any]) -> None:
    stages = r["stages"]
    parts = list(dict.fromkeys(k for s in stages.values() for k in s["per_event"]))
    table = Table("component (B/event)", *stages, "after, compacted", "before, migrated",
                  title=f"PostgreSQL: {r['events']:,} experience events, COPY batches of"
                        f" {r['batch']:,}")
    for part in parts:
        cells = [f"{s['per_event'].get(part, 0):.1f}" for s in stages.values()]
        table.add_row(part, *cells, f"{r['after_compacted'].get(part, 0):.1f}",
                      f"{r['before_migrated'].get(part, 0):.1f}",
                      end_section=part == parts[-2])
    table.add_row("÷ goal 200 B", *[f"{s['per_event']['total'] / PG_GOAL:.2f}"
                                    for s in stages.values()],
                  f"{r['after_compacted']['total'] / PG_GOAL:.2f}",
                  f"{r['before_migrated']['total'] / PG_GOAL:.2f}")
    table.add_row("COPY rows/s", *[f"{s['copy_per_s']:,.0f}" for s in stages.values()], "",
                  "")
    table.add_row("newest 100, ms", *[f"{s['newest_ms']:.1f}" for s in stages.values()], "",
                  f"migrate {r['before_migrated']['migrate_s']:.1f} s")
    console.print(table)
    floor = Table("heap, after: average bytes per row", "B", title="the heap's floor")
    for name, value in r["heap_floor"].items():
        floor.add_row(name, f"{value:.1f}")
    floor.add_row("[b]sum[/]", f"[b]{sum(r['heap_floor'].values()):.1f}[/]")
    console.print(floor)
    a = r["archive"]
    cols = Table("column", "B/event (archive order)", "encoding", "B/event (index order)",
                 "encoding", title="archive: each column on its own, zstd 19, best encoding")
    for name, v in a["columns"].items():
        cols.add_row(name, f"{v['archive_order'][0]:.2f}", v["archive_order"][1],
                     f"{v['index_order'][0]:.2f}", v["index_order"][1])
    cols.add_row("[b]sum[/]", f"[b]{a['columnar']:.1f}[/]", "",
                 f"[b]{a['columnar_index_order']:.1f}[/]", "")
    console.print(cols)
    console.print(
        f"archive (Avro, zstandard, as retention writes it): before"
        f" {a['before']['avro_zstd']:.1f} B/event (÷ goal 60: "
        f"{a['before']['avro_zstd'] / ARCHIVE_GOAL:.2f}), after {a['after']['avro_zstd']:.1f}"
        f" ({a['after']['avro_zstd'] / ARCHIVE_GOAL:.2f}), after sorted by the index"
        f" {a['avro_zstd_index_order']:.1f} ({a['avro_zstd_index_order'] / ARCHIVE_GOAL:.2f});"
        f" columnar floor"
        f" {a['columnar']:.1f} ({a['columnar'] / ARCHIVE_GOAL:.2f}), sorted by the index"
        f" {a['columnar_index_order']:.1f} ({a['columnar_index_order'] / ARCHIVE_GOAL:.2f})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=5000, help="rows per COPY (the worker's"
                   " default batch.max_records)")
    p.add_argument("--keep", action="store_true", help="keep the tables")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    opts = p.parse_args()
    res = asyncio.run(main(opts))
    report(res)
    if opts.json:
        opts.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
