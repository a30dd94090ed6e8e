"""Kafka Connect standalone with the Debezium JDBC sink, on the events benchmark's rows.

The stages (e) Connect insert and (f) Connect upsert of ``benchmarks/e2e_events.py``
live here, and this script runs them on their own too, beside the COPY ceiling (a) of
the same run (own schema ``bench_connect``, own topics, so it does not disturb a
concurrent e2e run):

(a) copy     asyncpg ``copy_records_to_table`` of the same rows (the ceiling).
(e) insert   Kafka Connect standalone (the stack's Kafka version, jars from Maven
             Central) with ``io.debezium:debezium-connector-jdbc``'s plugin archive,
             ``insert.mode=insert``, into a table of the project's shape.
(f) upsert   The same with ``insert.mode=upsert`` (INSERT … ON CONFLICT DO UPDATE).

Connect reads what Connect users without a schema registry have: JsonConverter with
schemas (every message carries its schema), one flat struct per event whose fields are
the table's columns (the rows RowBuilder makes from the Avro records), published
before the stage, untimed. One task, ``batch.size`` 3000 and
``consumer.override.max.poll.records`` 3000, ``plugin.discovery=service_load``.

A stage is timed from the JVM's start until the table holds all N rows (``count(*)``
polled every 0.2 s at the start and the end, sparser in between): "startup" is the
time until the first rows. The JVM's CPU (utime + stime from /proc/<pid>/stat) is
reported per 100k rows, over the stage and after the first rows (steady). Integrity:
exact row count, no duplicate primary keys, and every row equal field by field to the
COPY table's row of the same key.

The jars are resolved once with Maven into ``<state dir>/kafka-connect/`` (as the
stack's Kafka jars are), keyed on ``benchmarks/connect/pom.xml`` and the Kafka version.

Usage::

    .venv/bin/python benchmarks/connect_sink.py [--count N] [--modes insert,upsert]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from _common import (  # benchmarks/ is on sys.path when run as a script
    copy_rows,
    delete_groups,
    delete_topics,
    disable_autovacuum,
    make_records,
    make_rows,
    process_cpu_seconds,
    progress_bar,
    settle,
)
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console
from rich.progress import (
    Progress,
)

from sinkfleet.catalogue import Catalogue, Sink, load_catalogue
from sinkfleet.config import Settings
from sinkfleet.dev.stack import services as stack_services
from sinkfleet.dev.stack.services import maven_fetch
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.private_files import write_private
from sinkfleet.sink.postgres.connect import connect, pg
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.worker.rows import RowBuilder

ROOT = Path(__file__).resolve().parents[1]
STACK = Path(stack_services.__file__).parent  # the local stack's pom.xml and log4j2 config
STACK_POM = STACK / "pom.xml"
CONNECT_POM = Path(__file__).resolve().parent / "connect" / "pom.xml"
LOG4J = STACK / "log4j2.properties"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MODES = ("insert", "upsert")
BATCH = 3000
POLL_S = 0.2
# bin/connect-standalone.sh's defaults (KAFKA_HEAP_OPTS and kafka-run-class.sh's GC flags).
JVM_OPTS = ["-Xms256M", "-Xmx2G", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true"]

console = Console()


# --- installation -------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectInstall:
    libs: Path  # Connect runtime classpath
    plugins: Path  # plugin.path: one directory per plugin
    kafka_version: str
    debezium_version: str


def _pom_properties(path: Path) -> dict[str, str]:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(path).getroot().find("m:properties", ns)
    assert props is not None, f"{path} has no <properties>"
    return {el.tag.split("}", 1)[1]: (el.text or "").strip() for el in props}


def install_connect(settings: Settings,
                    say: Callable[[str], None] = console.print) -> ConnectInstall:
    """Resolve Connect and the Debezium plugin from Maven Central (once, then cached)."""
    stack = _pom_properties(STACK_POM)
    versions = [f"-Dkafka.version={stack['kafka.version']}",
                f"-Dlog4j.version={stack['log4j.version']}"]
    key = CONNECT_POM.read_bytes() + " ".join(versions).encode()
    home = settings.state / "kafka-connect"
    digest = hashlib.sha256(key).hexdigest()[:12]
    libs, plugins = home / f"libs-{digest}", home / f"plugins-{digest}"
    pom = ["-C", "-f", str(CONNECT_POM), *versions]  # -C: a bad checksum fails the fetch
    maven_fetch(libs, [*pom, f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
                       "-DexcludeTypes=tar.gz", f"-DoutputDirectory={libs}"],
                "Kafka Connect jars", say)
    # unpack-dependencies keeps "already unpacked" markers; outside the repository and
    # thrown away, so a redone fetch really unpacks.
    with tempfile.TemporaryDirectory(prefix="sinkfleet-mvn-markers-") as markers:
        maven_fetch(plugins, [*pom, f"{DEPENDENCY_PLUGIN}:unpack-dependencies",
                              "-DincludeTypes=tar.gz", f"-DoutputDirectory={plugins}",
                              f"-DmarkersDirectory={markers}"],
                    "Debezium JDBC sink plugin", say)
    return ConnectInstall(libs, plugins, stack["kafka.version"],
                          _pom_properties(CONNECT_POM)["debezium.version"])


# --- the events as Connect JSON with schemas ----------------------------------------------
# Connect schema type (and logical name) of each PostgreSQL column type the sink uses.
# ZonedTimestamp (ISO-8601 text) keeps the microseconds timestamptz holds; Connect's own
# Timestamp would keep milliseconds only.
_CONNECT_TYPES: dict[str, tuple[str, str | None]] = {
    "bytea": ("bytes", None), "text": ("string", None), "bigint": ("int64", None),
    "integer": ("int32", None), "smallint": ("int16", None), "real": ("float", None),
    "double precision": ("double", None), "boolean": ("boolean", None),
    "timestamptz": ("string", "io.debezium.time.ZonedTimestamp"),
    "jsonb": ("string", "io.debezium.data.Json"),
}


def connect_schema(sink: Sink) -> dict[str, Any]:
    """The Connect struct schema of the sink's row: one field per column, same name."""
    fields = []
    for col in RowBuilder(sink).columns:
        kind, logical = _CONNECT_TYPES[col.pg_type]
        spec: dict[str, Any] = {"field": col.name, "type": kind, "optional": col.nullable}
        if logical:
            spec["name"] = logical
        fields.append(spec)
    return {"type": "struct", "name": "sinkfleet.bench.ExperienceRow", "optional": False,
            "fields": fields}


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # JsonConverter's encoding of bytes
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def json_messages(sink: Sink, rows: Iterable[tuple[Any, ...]]) -> Iterator[bytes]:
    """``{"schema": …, "payload": …}`` per row, the schema serialised once."""
    names = RowBuilder(sink).names
    head = b'{"schema":' + json.dumps(connect_schema(sink), separators=(",", ":")).encode()
    for row in rows:
        payload = {n: _json_value(v) for n, v in zip(names, row, strict=True)}
        yield head + b',"payload":' + json.dumps(payload, separators=(",", ":")).encode() + b"}"


async def publish_json(settings: Settings, topic: str, partitions: int,
                       messages: Iterable[bytes]) -> None:
    """Create ``topic`` and publish ``messages`` round-robin (untimed; lz4 and acks=all,
    as the Publisher sends)."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), compression_type="lz4",
                                linger_ms=20, max_batch_size=1 << 20, acks="all")
    await producer.start()
    try:
        pending = []
        for i, msg in enumerate(messages):
            pending.append(await producer.send(topic, msg, partition=i % partitions))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# --- one Connect stage --------------------------------------------------------------------
@dataclass
class ConnectStage:
    mode: str
    rows: int
    seconds: float
    startup_s: float | None
    rows_at_first_poll: int
    cpu_s: float  # JVM CPU from its start to the last row
    cpu_at_first_s: float  # JVM CPU until the first rows (start-up)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _properties(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def worker_config(settings: Settings, install: ConnectInstall, work: Path,
                  port: int) -> dict[str, Any]:
    json_conv = "org.apache.kafka.connect.json.JsonConverter"
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "key.converter": json_conv, "key.converter.schemas.enable": "true",
        "value.converter": json_conv, "value.converter.schemas.enable": "true",
        "offset.storage.file.filename": work / "offsets",
        "plugin.path": install.plugins,
        # Load plugins from their ServiceLoader manifests instead of scanning every class
        # of every jar (Kafka 3.6+, KIP-898): start-up seconds, not the sink, are saved.
        "plugin.discovery": "service_load",
        "listeners": f"http://127.0.0.1:{port}",
        # Allows the connector's consumer.override.* settings.
        "connector.client.config.override.policy": "All",
    }


def connector_config(settings: Settings, sink: Sink, name: str, topic: str,
                     mode: str) -> dict[str, Any]:
    kw = settings.pg_connect_kwargs
    return {
        "name": name,
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": 1,  # one consumer, as one sinkfleet worker process
        "topics": topic,
        "connection.url": f"jdbc:postgresql://{kw['host']}:{kw['port']}/{kw['database']}",
        "connection.username": kw["user"],
        "connection.password": kw.get("password") or "",
        "insert.mode": mode,
        "primary.key.mode": "record_value",
        "primary.key.fields": ",".join(sink.spec.id),
        "schema.evolution": "none",  # the table is pre-created by the sinkfleet migration
        "collection.name.format": f"{sink.spec.db_schema}.{sink.spec.table}",
        "batch.size": BATCH,
        # One poll fills one batch: Connect's default (500) would cut every batch to 500.
        "consumer.override.max.poll.records": BATCH,
        "consumer.override.auto.offset.reset": "earliest",
    }


def _failure(port: int, name: str) -> str | None:
    """The connector's or a task's FAILED trace from the REST API, None if running."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/connectors/{name}/status",
                                    timeout=2) as resp:
            status = json.load(resp)
    except (OSError, urllib.error.URLError, ValueError):
        return None  # not up yet
    for part in [status.get("connector", {}), *status.get("tasks", [])]:
        if part.get("state") == "FAILED":
            return str(part.get("trace", "failed"))
    return None


def _errors(log: Path, lines: int = 3) -> str:
    """The log's first ERROR lines: the cause, where the REST trace shows the wrapper."""
    found = [ln for ln in log.read_text(errors="replace").splitlines() if " ERROR " in ln]
    return "\n".join(found[:lines])


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # Connect stops its tasks gracefully
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _next_poll(first: tuple[float, int, float] | None, now: float, done: int,
               total: int) -> float:
    """Seconds to the next count(*): POLL_S until the first rows and near the end, up
    to 2 s in between (half the time left at the rate so far). count(*) of the table
    costs ~20 ms at 200k rows; polling it every 0.2 s would take a tenth of a core
    from the database Connect is writing to."""
    if first is None or now <= first[0] or done <= first[1]:
        return POLL_S
    rate = (done - first[1]) / (now - first[0])
    return min(2.0, max(POLL_S, (total - done) / rate / 2))


async def table_rows(settings: Settings, sink: Sink) -> Callable[[], Any]:
    conn = await connect(settings)

    async def count() -> int:
        if conn.is_closed():
            return 0
        return int(await conn.fetchval(f"SELECT count(*) FROM {sink.spec.qualified_table}"))
    count.close = conn.close  # type: ignore[attr-defined]
    return count


async def run_connect(settings: Settings, install: ConnectInstall, sink: Sink, topic: str,
                      mode: str, total: int, *, name: str, timeout: float,
                      progress: Progress, label: str) -> ConnectStage:
    """Start Connect standalone on ``topic`` into ``sink``'s table; wait for ``total`` rows."""
    log = settings.state / "logs" / f"bench-connect-{mode}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    count = await table_rows(settings, sink)
    task = progress.add_task(label, total=total)
    with tempfile.TemporaryDirectory(prefix="sinkfleet-connect-") as tmp:
        work, port = Path(tmp), _free_port()
        worker, connector = work / "worker.properties", work / "connector.properties"
        worker.write_text(_properties(worker_config(settings, install, work, port)))
        write_private(connector, _properties(connector_config(settings, sink, name, topic,
                                                              mode)))
        argv = ["java", *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG4J}",
                "-cp", f"{install.libs}/*", "org.apache.kafka.connect.cli.ConnectStandalone",
                str(worker), str(connector)]
        t0 = time.monotonic()
        proc = _spawn(argv, log)
        first: tuple[float, int, float] | None = None
        next_status = t0 + 1.0
        try:
            while True:
                done = await count()
                now = time.monotonic()
                if done and first is None:
                    first = (now, done, process_cpu_seconds(proc.pid))
                progress.update(task, completed=done)
                if done >= total:
                    cpu = process_cpu_seconds(proc.pid)
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"Kafka Connect exited with code {proc.returncode};"
                                       f" see {log}")
                if now >= next_status:
                    next_status = now + 1.0
                    trace = await asyncio.to_thread(_failure, port, name)
                    if trace:
                        raise RuntimeError(f"Connect {mode}: the connector failed; its first"
                                           f" errors (all in {log}):\n{_errors(log)}")
                if now - t0 > timeout:
                    raise TimeoutError(f"Connect {mode}: {done} of {total} rows after"
                                       f" {timeout:.0f}s; see {log}")
                await asyncio.sleep(_next_poll(first, now, done, total))
        finally:
            await asyncio.to_thread(_stop, proc)
            await count.close()  # type: ignore[attr-defined]
    assert first is not None
    return ConnectStage(mode, total, now - t0, first[0] - t0, first[1], cpu, first[2],
                        {"log": str(log)})


# --- integrity ----------------------------------------------------------------------------
async def compare_tables(settings: Settings, sink: Sink, reference: Sink) -> dict[str, Any]:
    """Rows, distinct keys, and rows that differ from ``reference``'s row of the same key
    in any stored column (or have none there): a field-by-field check of every row."""
    cols = RowBuilder(sink).names
    key = ", ".join(f'"{c}"' for c in sink.spec.id)
    a = ", ".join(f'x."{c}"' for c in cols)
    b = ", ".join(f'r."{c}"' for c in cols)
    async with pg(settings) as conn:
        row = await conn.fetchrow(
            f"SELECT count(*) AS rows, count(DISTINCT ({key})) AS keys,"
            f" count(*) FILTER (WHERE ({a}) IS DISTINCT FROM ({b})) AS mismatches"
            f" FROM {sink.spec.qualified_table} x"
            f" LEFT JOIN {reference.spec.qualified_table} r USING ({key})")
        sample = await conn.fetchrow(
            f"SELECT x.* FROM {sink.spec.qualified_table} x"
            f" LEFT JOIN {reference.spec.qualified_table} r USING ({key})"
            f" WHERE ({a}) IS DISTINCT FROM ({b}) LIMIT 1")
    out = dict(row)
    if sample is not None:
        out["first_mismatch"] = {k: repr(v) for k, v in dict(sample).items()}
    return out


def integrity_ok(check: dict[str, Any], count: int) -> bool:
    return bool(check["rows"] == check["keys"] == count and check["mismatches"] == 0)


def per_100k(cpu_s: float, rows: int) -> float | None:
    return cpu_s / rows * 100_000 if rows > 0 else None


# --- standalone run: (a) COPY and the Connect stages ---------------------------------------
SOURCE_SINK = "experience_events"  # the project's sink whose table shape is benchmarked
SCHEMA = "bench_connect"  # not e2e_events' "bench": the two may run at the same time
TOPIC_PREFIX = "bench-connect.experience-events."
SINKS = {"copy": "copy_events", "insert": "connect_insert_events",
         "upsert": "connect_upsert_events"}


def build_catalogue(root: Path, project: Catalogue, topic: str) -> Catalogue:
    """schemas/, one topic and same-shape sinks (copy, insert, upsert) in ``SCHEMA``."""
    source = project.sinks[SOURCE_SINK]
    shutil.copytree(project.root / "schemas", root / "schemas")
    for sub in ("topics", "sinks", "workers"):
        (root / sub).mkdir()
    spec = source.topic.model_dump(by_alias=True, exclude_none=True, mode="json")
    (root / "topics" / "bench.yaml").write_text(yaml.safe_dump(spec | {"name": topic}))
    sink = source.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    for stage, table in SINKS.items():
        (root / "sinks" / f"connectbench_{stage}.yaml").write_text(yaml.safe_dump(
            sink | {"name": f"connectbench_{stage}", "topic": topic, "table": table,
                    "schema": SCHEMA}, sort_keys=False))
    return load_catalogue(root)


async def _reset(settings: Settings) -> None:
    async with pg(settings) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        if await conn.fetchval("SELECT to_regclass('sinkfleet.schema_migrations')"):
            await conn.execute("DELETE FROM sinkfleet.schema_migrations WHERE id LIKE $1",
                               "sink:connectbench\\_%")


async def run_standalone(settings: Settings, opts: argparse.Namespace) -> dict[str, Any]:
    connect_install = await asyncio.to_thread(install_connect, settings)
    run_id = time.strftime("%Y%m%d%H%M%S")
    topic = f"{TOPIC_PREFIX}{run_id}"
    names = {m: f"bench-connect-{m}-{run_id}" for m in opts.modes}
    with tempfile.TemporaryDirectory(prefix="sinkfleet-bench-connect-") as tmp:
        cat = build_catalogue(Path(tmp), load_catalogue(settings.home), topic)
        sinks = {s: cat.sinks[f"connectbench_{s}"] for s in SINKS}
        await _reset(settings)
        try:
            await migrate(settings, cat, say=lambda _: None)
            await disable_autovacuum(settings, SCHEMA)
            rows = make_rows(sinks["copy"], make_records(opts.count, opts.seed))
            copy_s = await copy_rows(settings, sinks["copy"], rows)
            console.print(f"publishing {len(rows):,} JSON-with-schema messages to {topic}")
            await publish_json(settings, topic, sinks["copy"].topic.partitions,
                               json_messages(sinks["copy"], rows))
            del rows
            stages = []
            with progress_bar(console) as progress:
                for mode in opts.modes:
                    await settle(settings)
                    stages.append(await run_connect(
                        settings, connect_install, sinks[mode], topic, mode, opts.count,
                        name=names[mode], timeout=opts.timeout, progress=progress,
                        label=f"Connect {mode}"))
            checks = {m: await compare_tables(settings, sinks[m], sinks["copy"])
                      for m in opts.modes}
        finally:
            await delete_topics(settings, [topic])
            await delete_groups(settings, [f"connect-{n}" for n in names.values()])
            if not opts.keep:
                await _reset(settings)
    return {"run_id": run_id, "count": opts.count, "kafka": connect_install.kafka_version,
            "debezium": connect_install.debezium_version,
            "copy": {"seconds": copy_s, "rows_per_s": opts.count / copy_s},
            "stages": {s.mode: s.as_json() for s in stages}, "integrity": checks}


def print_standalone(doc: dict[str, Any]) -> None:
    from rich.table import Table

    copy_rate = doc["copy"]["rows_per_s"]
    table = Table(title=f"Kafka Connect {doc['kafka']} + Debezium JDBC sink {doc['debezium']},"
                        f" N = {doc['count']:,}")
    for col in ("stage", "seconds", "rows/s", "startup s", "steady rows/s",
                "CPU s/100k", "steady CPU s/100k", "÷ COPY"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    table.add_row("(a) COPY ceiling", f"{doc['copy']['seconds']:.2f}", f"{copy_rate:,.0f}",
                  "-", "-", "-", "-", "1.00")
    for mode, s in doc["stages"].items():
        steady_rows = s["rows"] - s["rows_at_first_poll"]
        steady_s = s["seconds"] - s["startup_s"]
        rate = s["rows"] / s["seconds"]
        table.add_row(f"Connect {mode}", f"{s['seconds']:.2f}", f"{rate:,.0f}",
                      f"{s['startup_s']:.2f}",
                      f"{steady_rows / steady_s:,.0f}" if steady_s > 0 else "-",
                      f"{per_100k(s['cpu_s'], s['rows']):.2f}",
                      _fmt_opt(per_100k(s["cpu_s"] - s["cpu_at_first_s"], steady_rows)),
                      f"{rate / copy_rate:.3f}")
    console.print(table)
    for mode, c in doc["integrity"].items():
        ok = integrity_ok(c, doc["count"])
        console.print(f"integrity {mode}: {c['rows']:,} rows, {c['keys']:,} distinct keys,"
                      f" {c['mismatches']:,} differ from COPY's rows"
                      + ("" if ok else f"  [red]FAILED[/] {c.get('first_mismatch', '')}"))


def _fmt_opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    from sinkfleet.config import load_settings

    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--count", type=int, default=200_000, help="events (default 200000)")
    p.add_argument("--seed", type=int, default=0, help="ExperienceLoad seed (default 0)")
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma-separated insert.mode values (default insert,upsert)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/connect_sink.json")
    p.add_argument("--keep", action="store_true", help="keep the bench_connect schema")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per stage")
    opts = p.parse_args(argv)
    opts.modes = [m for m in opts.modes.split(",") if m]
    if opts.count < 1 or not opts.modes or set(opts.modes) - set(MODES):
        p.error(f"--count must be positive and --modes a subset of {','.join(MODES)}")
    home = {} if "SINKFLEET_HOME" in os.environ else {"home": ROOT}
    doc = asyncio.run(run_standalone(load_settings(**home), opts))
    print_standalone(doc)
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"wrote {opts.json}")
    ok = all(integrity_ok(c, opts.count) for c in doc["integrity"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
