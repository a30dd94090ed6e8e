"""Replay vs ingest of the same records, one run (issue #7: replay at least 0.9 of ingest, 0 dups).

  (i) ingest: N experience events through one worker into an empty table
  (r) replay: `replay plan --to-earliest` + `replay apply`, then the same worker re-reads
      all N: every row is already there, so the append writer's duplicate path
      (staging COPY + INSERT … ON CONFLICT DO NOTHING) absorbs them

Usage: python benchmarks/replay.py [--count 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import cleanup, run_workers  # benchmarks/ is on sys.path when run as a script
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sinkfleet.catalogue.isolate import isolated_copy
from sinkfleet.config import load_settings
from sinkfleet.dev.produce import produce
from sinkfleet.dev.stack import manager
from sinkfleet.dev.synthetic.loads import synthetic_records
from sinkfleet.ops.replay.plan import apply_replay, make_target, plan_replay
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
console = Console()


async def main(count: int) -> dict[str, Any]:
    settings = load_settings()
    await manager.up(settings, None, lambda m: console.print(f"[dim]{m}[/]"))
    suffix = "r" + uuid.uuid4().hex[:7]
    iso = isolated_copy(ROOT, Path(tempfile.mkdtemp(prefix="sinkfleet-replay-")), suffix,
                        sinks=["experience_events"])
    bench = load_settings(home=iso.root, state_dir=settings.state)
    cat, table = iso.catalogue, iso.sink("experience_events")
    group = cat.worker("events").group
    await apply_topics(bench, cat, say=lambda m: None)
    await migrate(bench, cat, lambda m: None)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            p = progress.add_task("publish", total=count)
            await produce(bench, cat, "experience_event",
                          synthetic_records("experience_event", 5, agents=64, prefix=suffix),
                          count, progress=lambda n: progress.advance(p, n))
            ingest = await run_workers(iso, bench, ["events"], progress, "(i) ingest")
            plan = await plan_replay(bench, cat, group, None, make_target(to_earliest=True))
            applied = await apply_replay(bench, group, plan.offsets(), execute=True)
            replay = await run_workers(iso, bench, ["events"], progress, "(r) replay")
        async with pg(bench) as conn:
            rows, distinct = await conn.fetchrow(
                f'SELECT count(*), count(DISTINCT event_id) FROM "{table}"')
    finally:
        await cleanup(bench, iso)
    return {"date": datetime.now(UTC).isoformat(), "count": count,
            "ingest": vars(ingest) | {"per_s": ingest.per_s},
            "replay": vars(replay) | {"per_s": replay.per_s},
            "replayed_records": applied.records, "rows": rows, "distinct": distinct}


def report(r: dict[str, Any]) -> None:
    i, p = r["ingest"], r["replay"]
    table = Table("stage", "records", "seconds", "records/s", "rows inserted",
                  title=f"replay vs ingest, {r['count']:,} experience events (one run)")
    table.add_row("(i) ingest", f"{i['records']:,}", f"{i['seconds']:.1f}",
                  f"{i['per_s']:,.0f}", f"{i['stored']:,}")
    table.add_row("(r) replay", f"{p['records']:,}", f"{p['seconds']:.1f}",
                  f"{p['per_s']:,.0f}", f"{p['stored']:,}")
    console.print(table)
    console.print(f"r/i = {p['per_s'] / i['per_s']:.2f} (goal ≥ 0.9); rows {r['rows']:,},"
                  f" distinct {r['distinct']:,}, duplicates {r['rows'] - r['distinct']}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "replay.json")
    opts = parser.parse_args()
    results = asyncio.run(main(opts.count))
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2, default=str))
    report(results)


if __name__ == "__main__":
    cli()
