"""Producer throughput: one Publisher process, records/s until every record is acknowledged.

Stages, one after another on topics of their own (``bench-producer.<run id>.<stage>``,
the project's ``experience_events`` shape, deleted afterwards), the same ``--records``
synthetic experience events each:

* **raw**: the records pre-encoded (framed Avro, key, partition computed before timing)
  sent straight through one ``AIOKafkaProducer`` with the Publisher's settings — the
  ceiling without validation or encoding.
* **publish**: ``await Publisher.publish()`` per record (validate, encode, key,
  partition, buffer), then ``flush()``; each call is timed (p50/p99/max).
* **publish_many**: ``Publisher.publish_many()`` in chunks of ``--chunk`` records.

For each: records/s from the first send to the last acknowledgement, CPU µs per record
of this process (``/proc``: the client's I/O runs here too) and publisher ÷ raw.
``--profile`` cProfiles the publish stage and prints the top functions.

    .venv/bin/python benchmarks/producer.py                  # 200,000 records
    .venv/bin/python benchmarks/producer.py --records 50000 --profile --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/ is on sys.path as a script
    delete_topics,
    dump_yaml,
    environment,
    make_records,
    print_profile,
    process_cpu_seconds,
    profiled,
    report_console,
    start,
)
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from rich.table import Table

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.keys import record_key
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.producer import Publisher

FAMILY = "experience_event"
PREFIX = "bench-producer."
console = report_console()


@dataclass
class Stage:
    name: str
    records: int
    seconds: float
    cpu_seconds: float
    acked: int
    call_us: dict[str, float] = field(default_factory=dict)  # publish() latency

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_seconds / self.records * 1e6 if self.records else 0.0


def topic_catalogue(root: Path, project: Catalogue, name: str) -> Catalogue:
    """A catalogue of the project's schemas and one topic: ``name``, shaped like the
    project's experience-events topic."""
    shutil.copytree(project.root / "schemas", root / "schemas")
    for sub in ("topics", "sinks", "workers"):
        (root / sub).mkdir(exist_ok=True)
    source = project.topic_for_family(FAMILY)
    dump_yaml(root / "topics" / "t.yaml",
              source.model_dump(by_alias=True, exclude_none=True, mode="json") | {"name": name})
    return load_catalogue(root)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {"p50": statistics.median(us), "p99": us[min(len(us) - 1, int(len(us) * 0.99))],
            "max": us[-1], "n": len(us)}


async def raw_stage(settings: Settings, cat: Catalogue, records: list[dict[str, Any]],
                    pub_kwargs: dict[str, Any]) -> Stage:
    topic = cat.topic_for_family(FAMILY)
    codec = Codec(cat.schemas[FAMILY], SchemaStore())
    producer = AIOKafkaProducer(
        **kafka_client_kwargs(settings), acks="all", enable_idempotence=True,
        linger_ms=pub_kwargs["linger_ms"], max_batch_size=pub_kwargs["max_batch_bytes"],
        compression_type=pub_kwargs["compression"], request_timeout_ms=30_000)
    await producer.start()
    try:
        parts = sorted(await producer.partitions_for(topic.name))
        framed = []
        for r in records:
            key = record_key(topic, r)
            assert key is not None
            framed.append((codec.encode(r, validate=False), key,
                           parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)]))
        cpu0, t0 = process_cpu_seconds(), time.monotonic()
        futures = [await producer.send(topic.name, v, key=k, partition=p) for v, k, p in framed]
        await producer.flush()
        seconds, cpu = time.monotonic() - t0, process_cpu_seconds() - cpu0
    finally:
        await producer.stop()
    acked = sum(1 for f in futures if f.done() and f.exception() is None)
    return Stage("raw", len(records), seconds, cpu, acked)


async def publish_stage(settings: Settings, cat: Catalogue, records: list[dict[str, Any]],
                        pub_kwargs: dict[str, Any], profile: Path | None) -> Stage:
    async with Publisher(settings, catalogue=cat, **pub_kwargs) as pub:
        # metadata first, as an agent that has published before has it
        await pub._producer.partitions_for(cat.topic_for_family(FAMILY).name)
        calls: list[int] = []
        clock = time.perf_counter_ns
        with profiled(profile):
            cpu0, t0 = process_cpu_seconds(), time.monotonic()
            for r in records:
                c0 = clock()
                await pub.publish(FAMILY, r)
                calls.append(clock() - c0)
            await pub.flush()
            seconds, cpu = time.monotonic() - t0, process_cpu_seconds() - cpu0
        acked = pub.acked
    return Stage("publish", len(records), seconds, cpu, acked, percentiles(calls))


async def many_stage(settings: Settings, cat: Catalogue, records: list[dict[str, Any]],
                     pub_kwargs: dict[str, Any], chunk: int) -> Stage:
    async with Publisher(settings, catalogue=cat, **pub_kwargs) as pub:
        await pub._producer.partitions_for(cat.topic_for_family(FAMILY).name)
        calls: list[int] = []
        clock = time.perf_counter_ns
        cpu0, t0 = process_cpu_seconds(), time.monotonic()
        for i in range(0, len(records), chunk):
            c0 = clock()
            await pub.publish_many(FAMILY, records[i:i + chunk])
            calls.append(clock() - c0)
        await pub.flush()
        seconds, cpu = time.monotonic() - t0, process_cpu_seconds() - cpu0
        acked = pub.acked
    return Stage("publish_many", len(records), seconds, cpu, acked, percentiles(calls))


def report(stages: list[Stage], chunk: int) -> Table:
    raw = next((s for s in stages if s.name == "raw"), None)
    table = Table("stage", "records", "records/s", "CPU µs/record", "÷ raw", "acked",
                  "call p50 µs", "p99 µs", "max µs",
                  title=f"producer: one process, {FAMILY} (publish_many: chunks of {chunk};"
                        " its call times are per chunk)")
    for s in stages:
        ratio = f"{s.per_s / raw.per_s:.2f}" if raw and raw.per_s else "-"
        c = s.call_us
        table.add_row(s.name, f"{s.records:,}", f"{s.per_s:,.0f}",
                      f"{s.cpu_us_per_record:.1f}", ratio, f"{s.acked:,}",
                      *(f"{c[k]:,.1f}" if k in c else "-" for k in ("p50", "p99", "max")))
    return table


async def main_async(args: argparse.Namespace) -> list[Stage]:
    settings, load_before = start(console)
    args.environment = environment(load_before, ["aiokafka", "fastavro"])
    project = load_catalogue(settings.home)
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}.{os.getpid()}"
    records = make_records(args.records, seed=args.seed)
    # The inputs are the benchmark's, not the publisher's: keep the collector from
    # walking them (a full collection over 200k held records stalls one call ~0.4 s).
    gc.collect()
    gc.freeze()
    pub_kwargs = {"linger_ms": args.linger_ms, "max_batch_bytes": args.max_batch_bytes,
                  "compression": None if args.compression == "none" else args.compression}
    stages: list[Stage] = []
    topics: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sinkfleet-producer-") as tmp:
        try:
            for name in args.stages:
                topic = f"{PREFIX}{run_id}.{name.replace('_', '-')}"
                topics.append(topic)
                cat = topic_catalogue(Path(tmp) / name, project, topic)
                await apply_topics(settings, cat, say=lambda _: None)
                console.print(f"[bold]{name}[/]: {len(records):,} records → {topic}")
                if name == "raw":
                    stage = await raw_stage(settings, cat, records, pub_kwargs)
                elif name == "publish":
                    stage = await publish_stage(settings, cat, records, pub_kwargs,
                                                args.profile_path)
                else:
                    stage = await many_stage(settings, cat, records, pub_kwargs, args.chunk)
                stages.append(stage)
        finally:
            if not args.keep:
                await delete_topics(settings, topics)
    return stages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--stages", type=lambda t: t.split(","), default=["raw", "publish",
                                                                      "publish_many"])
    ap.add_argument("--chunk", type=int, default=1000, help="records per publish_many call")
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--max-batch-bytes", type=int, default=512 * 1024)
    ap.add_argument("--compression", default="lz4", help="lz4, zstd, gzip, snappy or none")
    ap.add_argument("--profile", action="store_true", help="cProfile the publish stage")
    ap.add_argument("--keep", action="store_true", help="keep the topics")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    unknown = set(args.stages) - {"raw", "publish", "publish_many"}
    if unknown:
        ap.error(f"unknown stages {sorted(unknown)}: use raw, publish, publish_many")
    args.profile_path = (Path(tempfile.gettempdir()) / f"producer-{os.getpid()}.pstats"
                         if args.profile else None)
    stages = asyncio.run(main_async(args))
    console.print(report(stages, args.chunk))
    raw = next((s for s in stages if s.name == "raw"), None)
    if args.profile_path is not None and args.profile_path.exists():
        print_profile(console, args.profile_path, "publish stage", lines=25)
    if args.json:
        args.json.write_text(json.dumps({
            "records": args.records, "chunk": args.chunk, "linger_ms": args.linger_ms,
            "max_batch_bytes": args.max_batch_bytes, "compression": args.compression,
            "environment": args.environment,
            "stages": [asdict(s) | {"per_s": s.per_s,
                                    "cpu_us_per_record": s.cpu_us_per_record,
                                    "vs_raw": s.per_s / raw.per_s if raw and raw.per_s
                                    else None} for s in stages]}, indent=2))
    short = [s.name for s in stages if s.acked != s.records]
    if short:
        console.print(f"[red]not every record acknowledged in: {', '.join(short)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
