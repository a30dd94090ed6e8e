"""Every record family, measured in one run (issue #4's figures; ratios, not timings).

  (e) events only: experience events through the events worker (the baseline)
  (m) a mixed agent load (events, audit, state, …) through the three worker groups,
      in one process like (e), so the ratio m/e is the cost of the other families
  (s) state upserts vs (p) plain appends of the same workflow-state records
  (q) one agent's 10k newest events by the query model (Reader.query), every column and
      a narrow projection, each against the raw asyncpg fetch of the SQL it planned
      (goals: Reader/raw <= 1.3, < 10 ms for a narrow query, seed 000)
  (r) current-state reads (Reader.state: Redis first) vs raw HGETALL (goal p99 < 1 ms)
  (b) bytes per stored experience event, indexes and TOAST included (goal ≤ 200)

Usage: python benchmarks/families.py [--events 100000] [--mixed 60000] [--state 30000]
Runs against the local stack (started if needed); everything it creates is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from _common import cleanup, run_workers  # benchmarks/ is on sys.path when run as a script
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sinkfleet.cache.layout import CacheLayout
from sinkfleet.cache.store import redis_client
from sinkfleet.catalogue import load_catalogue
from sinkfleet.catalogue.isolate import IsolatedCatalogue, isolated_copy
from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.produce import produce, produce_mixed
from sinkfleet.dev.stack import manager
from sinkfleet.dev.synthetic.base import Tombstone
from sinkfleet.dev.synthetic.loads import MixedLoad, synthetic_records
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.read import Reader
from sinkfleet.read.query import Filter, Query, SinkQuery
from sinkfleet.read.sql import find_sink
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def append_twin(iso: IsolatedCatalogue, sink: str) -> str:
    """A copy of state sink ``sink`` as a plain append sink (id + version), on its own
    topic and group: the same records, written without the version guard."""
    root = iso.root
    spec = yaml.safe_load(next(p for p in (root / "sinks").glob("*.yaml")
                               if yaml.safe_load(p.read_text())["name"] == sink).read_text())
    topic_name = spec["topic"]
    topic = yaml.safe_load(next(p for p in (root / "topics").glob("*.yaml")
                                if yaml.safe_load(p.read_text())["name"] == topic_name
                                ).read_text())
    twin = f"{sink[:40]}_app"
    topic.update(name=f"{topic_name}.append", config={"cleanup.policy": "delete"})
    version = spec.pop("state")["version"]
    spec.pop("cache", None)
    spec.update(name=twin, table=twin, topic=topic["name"], mode="append",
                id=[*spec["id"], version])
    (root / "topics" / "zz_twin.yaml").write_text(yaml.safe_dump(topic))
    (root / "sinks" / "zz_twin.yaml").write_text(yaml.safe_dump(spec))
    group = f"bench.twin.{uuid.uuid4().hex[:8]}"
    (root / "workers" / "zz_twin.yaml").write_text(yaml.safe_dump(
        {"name": "twin", "group": group, "sinks": [twin],
         "batch": {"max_records": 2000, "max_age_ms": 250}}))
    return twin


NARROW = ("ts", "reward_homeostasis", "reward_curiosity", "reward_efficiency", "reward_goal")


async def bench_queries(settings: Settings, iso: IsolatedCatalogue, rounds: int = 30
                        ) -> dict[str, Any]:
    """One agent's 10,000 newest-first events through ``Reader.query``, all columns and
    a narrow projection, each against the raw asyncpg fetch of the very SQL the query
    model planned (issue #14: Reader within 1.3x of raw; < 10 ms for a narrow query)."""
    sink = iso.sink("experience_events")
    async with pg(settings) as conn:
        agent = await conn.fetchval(f'SELECT agent_id FROM "{sink}" GROUP BY agent_id'
                                    " ORDER BY count(*) DESC LIMIT 1")
        lo, hi = await conn.fetchrow(f'SELECT min(ts), max(ts) FROM "{sink}"'
                                     " WHERE agent_id = $1", agent)
        await conn.execute(f'ANALYZE "{sink}"')
    filters = [Filter("agent_id", "=", agent), Filter("ts", "between", [lo, hi])]
    planner = SinkQuery(find_sink(iso.catalogue, sink), None)
    out: dict[str, Any] = {}
    async with Reader(settings, iso.catalogue) as reader:
        for shape, columns in (("full", None), ("narrow", list(NARROW))):
            q = Query(sink, filters, order_by="ts", newest_first=True, limit=10_000,
                      columns=columns)
            sql, args, _ = planner.plan(q)
            raw, api, server = [], [], []
            async with pg(settings) as conn:  # a plain connection: jsonb stays text
                for _ in range(rounds):
                    t = time.perf_counter()
                    got = await conn.fetch(sql, *args)
                    raw.append((time.perf_counter() - t) * 1000)
                    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
                    server.append(float(json.loads(plan)[0]["Execution Time"]))
            for _ in range(rounds):
                t = time.perf_counter()
                page = await reader.query(q)
                api.append((time.perf_counter() - t) * 1000)
            # the plan reads one row more than a page, to know whether another follows
            assert len(page.rows) == min(len(got), q.limit), (shape, len(page.rows), len(got))
            out[shape] = {"rows": len(page.rows), "columns": len(got[0]) if got else 0,
                          "reader_p50_ms": pct(api, 0.5), "reader_p99_ms": pct(api, 0.99),
                          "raw_p50_ms": pct(raw, 0.5), "raw_p99_ms": pct(raw, 0.99),
                          "server_p50_ms": pct(server, 0.5),
                          "reader_over_raw_p50": pct(api, 0.5) / pct(raw, 0.5)}
    return out


async def bench_state_reads(settings: Settings, iso: IsolatedCatalogue, reads: int = 5000
                            ) -> dict[str, Any]:
    sink = iso.sink("workflow_states")
    lay = CacheLayout.of(iso.catalogue.sinks[sink])
    async with pg(settings) as conn:
        ids = [tuple(r) for r in await conn.fetch(
            f'SELECT tenant_id, workflow_id FROM "{sink}"')]
    rng = random.Random(7)
    picks = [rng.choice(ids) for _ in range(reads)]
    client = redis_client(settings)
    raw = []
    try:
        for key in picks:
            t = time.perf_counter()
            await client.hgetall(lay.latest_key(key))
            raw.append((time.perf_counter() - t) * 1000)
    finally:
        await client.aclose()
    api = []
    async with Reader(settings, iso.catalogue) as reader:
        for key in picks:
            t = time.perf_counter()
            await reader.state(sink, *key)
            api.append((time.perf_counter() - t) * 1000)
        stats = reader.cache_stats.as_dict()
    return {"reads": reads, "reader_p50_ms": pct(api, 0.5), "reader_p99_ms": pct(api, 0.99),
            "raw_p50_ms": pct(raw, 0.5), "raw_p99_ms": pct(raw, 0.99), "cache": stats}


async def bytes_per_event(settings: Settings, table: str) -> dict[str, Any]:
    async with pg(settings) as conn:
        await conn.execute(f'VACUUM ANALYZE "{table}"')
        row = await conn.fetchrow(
            "SELECT sum(pg_total_relation_size(c.oid)) AS total,"
            " sum(pg_relation_size(c.oid)) AS heap, sum(pg_indexes_size(c.oid)) AS idx"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = $1::regclass", table)
        rows = await conn.fetchval(f'SELECT count(*) FROM "{table}"')
    return {"rows": rows, "total_per_row": row["total"] / rows, "heap_per_row":
            row["heap"] / rows, "index_per_row": row["idx"] / rows}


async def main(opts: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    await manager.up(settings, None, lambda m: console.print(f"[dim]{m}[/]"))
    suffix = "b" + uuid.uuid4().hex[:7]
    tmp = Path(tempfile.mkdtemp(prefix="sinkfleet-families-"))
    iso = isolated_copy(ROOT, tmp, suffix)
    twin = append_twin(iso, iso.sink("workflow_states"))
    iso.catalogue = load_catalogue(iso.root)  # with the twin
    cat, bench = iso.catalogue, load_settings(home=iso.root, state_dir=settings.state)
    await apply_topics(bench, cat, say=lambda m: None)
    await migrate(bench, cat, lambda m: None)
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(), "suffix": suffix}
    start_us = int((datetime.now(UTC) - timedelta(minutes=30)).timestamp() * 1e6)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            # (e) events only
            p = progress.add_task("publish events", total=opts.events)
            await produce(bench, cat, "experience_event",
                          synthetic_records("experience_event", 1, agents=opts.agents,
                                            prefix=suffix, start_us=start_us),
                          opts.events, progress=lambda n: progress.advance(p, n))
            events = await run_workers(iso, bench, ["events"], progress, "(e) events worker")
            # (m) mixed load through the three groups
            p = progress.add_task("publish mixed", total=opts.mixed)
            mixed_pub = await produce_mixed(
                bench, cat, islice(MixedLoad(2, agents=opts.agents, prefix=suffix + "m",
                                             start_us=start_us), opts.mixed),
                opts.mixed, progress=lambda n: progress.advance(p, n))
            mixed = await run_workers(iso, bench, ["events", "audit", "state"], progress,
                                      "(m) mixed: events + audit + state workers")
            # (s) state upserts vs (p) the same records appended
            records = [r for r in islice(synthetic_records("workflow_state", 3,
                                                           agents=opts.agents,
                                                           prefix=suffix + "s"),
                                         opts.state * 2) if not isinstance(r, Tombstone)]
            records = records[:opts.state]
            p = progress.add_task("publish state records twice", total=2 * len(records))
            twin_topic = cat.sinks[twin].topic.name
            from sinkfleet.producer import Publisher

            async with Publisher(bench, catalogue=cat) as pub:
                state_topic = cat.topic_for_family("workflow_state")
                for i, rec in enumerate(records):
                    topic, key, value = pub.encode("workflow_state", rec)
                    assert topic == state_topic.name
                    await pub.send_raw(topic, value, key)
                    await pub.send_raw(twin_topic, value, key)
                    if i % 1000 == 999:
                        progress.advance(p, 2000)
                await pub.flush()
            state = await run_workers(iso, bench, ["state"], progress, "(s) state upserts")
            append = await run_workers(iso, bench, ["twin"], progress, "(p) plain appends")
        results |= {
            "events": vars(events) | {"per_s": events.per_s},
            "mixed": vars(mixed) | {"per_s": mixed.per_s, "by_family": mixed_pub.by_family},
            "state": vars(state) | {"per_s": state.per_s},
            "append": vars(append) | {"per_s": append.per_s},
        }
        await asyncio.sleep(1.0)  # caches are written after the commit
        results["query"] = await bench_queries(bench, iso)
        results["state_reads"] = await bench_state_reads(bench, iso)
        results["bytes"] = await bytes_per_event(bench, iso.sink("experience_events"))
    finally:
        if not opts.keep:
            await cleanup(bench, iso)
    return results


def report(r: dict[str, Any]) -> None:
    table = Table("measure", "value", "ratio / goal", title="record families (one run)")
    e, m, s, a = r["events"], r["mixed"], r["state"], r["append"]
    table.add_row("(e) events only, 1 worker", f"{e['per_s']:,.0f} rec/s", "baseline")
    table.add_row("(m) mixed load, 3 groups in 1 process", f"{m['per_s']:,.0f} rec/s",
                  f"m/e = {m['per_s'] / e['per_s']:.2f}")
    table.add_row("(s) state upserts (workflow_state)", f"{s['per_s']:,.0f} rec/s",
                  f"s/p = {s['per_s'] / a['per_s']:.2f}")
    table.add_row("(p) same records, plain append", f"{a['per_s']:,.0f} rec/s", "")
    for shape, q in r["query"].items():
        table.add_row(f"(q) {q['rows']:,} events of one agent, {shape} ({q['columns']} cols):"
                      " Reader p50 / p99",
                      f"{q['reader_p50_ms']:.1f} / {q['reader_p99_ms']:.1f} ms",
                      f"Reader/raw p50 = {q['reader_over_raw_p50']:.2f} (goal ≤ 1.3); raw"
                      f" asyncpg {q['raw_p50_ms']:.1f} ms; in PostgreSQL"
                      f" {q['server_p50_ms']:.1f} ms; goal < 10 ms narrow")
    sr = r["state_reads"]
    table.add_row("(r) current state via Reader p50 / p99",
                  f"{sr['reader_p50_ms']:.3f} / {sr['reader_p99_ms']:.3f} ms",
                  f"raw HGETALL p99 {sr['raw_p99_ms']:.3f} ms; hit rate"
                  f" {sr['cache']['hit_rate']}; goal p99 < 1 ms")
    b = r["bytes"]
    table.add_row("(b) bytes per stored event", f"{b['total_per_row']:.0f} B",
                  f"heap {b['heap_per_row']:.0f} + indexes {b['index_per_row']:.0f}; goal ≤ 200")
    console.print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--mixed", type=int, default=60_000)
    parser.add_argument("--state", type=int, default=30_000)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep topics and tables")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "families.json")
    opts = parser.parse_args()
    results = asyncio.run(main(opts))
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2, default=str))
    report(results)
    console.print(f"[dim]results: {opts.out}[/]")


if __name__ == "__main__":
    cli()
