"""Running ``sinkfleet rollups`` as a process against an isolated test catalogue, and the
expected roll-ups computed by SQL ``GROUP BY`` over the detail rows."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from sinkfleet.dev.produce import produce
from sinkfleet.sink.postgres.connect import pg
from tests.support.catalogue import TestCatalogue

Key = tuple[Any, ...]
Row = tuple[int, Decimal | None, Decimal | None, Decimal | None]

SIZES = "(VALUES ('minute'), ('hour')) AS sizes(size)"


def start_rollups(tc: TestCatalogue, app_id: str, log: Path, *extra: str,
                  instance: str | None = "1") -> subprocess.Popen[bytes]:
    """The app as a process; ``instance`` None: dynamic membership (a SIGTERM leaves the
    group at once, so another instance takes the partitions over without waiting)."""
    member = ["--instance-id", f"{app_id}-{instance}"] if instance else []
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "rollups", "--app-id", app_id,
             "--flush-interval", "0.3", "--grace-seconds", "120", *member, *extra],
            stdout=fh, stderr=subprocess.STDOUT, env=tc.env(), cwd=tc.root)


def spread(records: Iterator[dict[str, Any]], n: int, field: str, start_us: int,
           step_us: int) -> list[dict[str, Any]]:
    """``n`` records whose event times are ``start_us + i * step_us``: many minute
    windows and a few hour windows, closing one after the other as the stream moves."""
    out = []
    for i in range(n):
        record = next(records)
        record[field] = start_us + i * step_us
        out.append(record)
    return out


async def publish(tc: TestCatalogue, records: list[dict[str, Any]],
                  rate: float | None = None) -> None:
    result = await produce(tc.settings, tc.catalogue, tc.family, iter(records), len(records),
                           rate=rate)
    assert result.count == len(records)


async def fetch(tc: TestCatalogue, sql: str, *args: Any) -> list[Any]:
    async with pg(tc.settings) as conn:
        return list(await conn.fetch(sql, *args))


async def detail_rows(tc: TestCatalogue) -> int:
    return int((await fetch(tc, f'SELECT count(*) AS n FROM "{tc.table}"'))[0]["n"])


async def metric_rollups(tc: TestCatalogue) -> dict[Key, Row]:
    rows = await fetch(tc, "SELECT * FROM sinkfleet.rollup_metrics WHERE topic = $1", tc.topic)
    return {(r["window_size"], r["window_start"], r["metric_type"], r["field"]):
            (r["count"], r["sum"], r["min"], r["max"]) for r in rows}


async def metric_group_by(tc: TestCatalogue) -> dict[Key, Row]:
    """The same aggregates, straight from the detail rows."""
    t = f'"{tc.table}"'
    rows = await fetch(tc, f"""
        SELECT size, date_trunc(size, ts, 'UTC') AS start, metric_type, '*' AS field,
               count(*) AS count, NULL::numeric AS sum, NULL::numeric AS min,
               NULL::numeric AS max
          FROM {t} CROSS JOIN {SIZES} GROUP BY 1, 2, 3
        UNION ALL
        SELECT size, date_trunc(size, ts, 'UTC'), metric_type, kv.key, count(*),
               sum(kv.value::numeric), min(kv.value::numeric), max(kv.value::numeric)
          FROM {t} CROSS JOIN {SIZES} CROSS JOIN LATERAL jsonb_each(metric_data) AS kv
         WHERE jsonb_typeof(kv.value) = 'number' GROUP BY 1, 2, 3, 4""")
    return {(r["size"], r["start"], r["metric_type"], r["field"]):
            (r["count"], r["sum"], r["min"], r["max"]) for r in rows}


async def worker_event_rollups(tc: TestCatalogue) -> dict[Key, int]:
    rows = await fetch(tc, "SELECT * FROM sinkfleet.rollup_worker_events WHERE topic = $1",
                       tc.topic)
    return {(r["window_size"], r["window_start"], r["worker_id"], r["job_id"],
             r["event_type"]): r["count"] for r in rows}


async def worker_event_group_by(tc: TestCatalogue) -> dict[Key, int]:
    rows = await fetch(tc, f"""
        SELECT size, date_trunc(size, occurred_at, 'UTC') AS start, worker_id, job_id,
               event_type, count(*) AS count
          FROM "{tc.table}" CROSS JOIN {SIZES} GROUP BY 1, 2, 3, 4, 5""")
    return {(r["size"], r["start"], r["worker_id"], r["job_id"], r["event_type"]):
            r["count"] for r in rows}


async def rolled_up(tc: TestCatalogue, view: str, size: str) -> int:
    """Records counted in ``size`` windows so far (parts added up)."""
    extra = " AND field = '*'" if view == "rollup_metrics" else ""
    rows = await fetch(tc, f"SELECT coalesce(sum(count), 0) AS n FROM sinkfleet.{view}"
                           f" WHERE topic = $1 AND window_size = $2{extra}", tc.topic, size)
    return int(rows[0]["n"])


async def finals(tc: TestCatalogue, table: str) -> tuple[int, int]:
    rows = await fetch(tc, f"SELECT count(*) FILTER (WHERE final) AS f, count(*) AS n"
                           f" FROM sinkfleet.{table} WHERE topic = $1", tc.topic)
    return int(rows[0]["f"]), int(rows[0]["n"])


async def cleanup(tc: TestCatalogue, app_id: str) -> None:
    """Drop the app's changelog and assignor topics and the test's summary rows."""
    from aiokafka.admin import AIOKafkaAdminClient

    for table in ("rollup_metric_parts", "rollup_worker_event_parts"):
        await fetch(tc, f"DELETE FROM sinkfleet.{table} WHERE topic = $1", tc.topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=tc.settings.kafka_bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(f"{app_id}-")]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def kill_left(*procs: subprocess.Popen[bytes] | None) -> None:
    """The clean-up after a test, passed or failed: nothing of it keeps running."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)


def stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    proc.send_signal(sig)
    return proc.wait(60)


def log_text(log: Path) -> str:
    return log.read_text(errors="replace")


def wait_log(log: Path, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in log_text(log):
            return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in {log} after {timeout}s:\n{log_text(log)[-3000:]}")
