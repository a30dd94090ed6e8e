"""`sinkfleet scale-advice` against real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.dev.produce import produce
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from tests.support.catalogue import TestCatalogue
from tests.support.endpoints import free_ports
from tests.support.waiting import wait_for
from tests.support.worker import publish, stop

pytestmark = pytest.mark.integration


def advice(tc: TestCatalogue, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sinkfleet", "scale-advice", *args],
                          capture_output=True, text=True, env={**tc.env(), "COLUMNS": "200"},
                          cwd=tc.root, timeout=120)


async def advice_async(tc: TestCatalogue, *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sinkfleet", "scale-advice", "--json", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=tc.env(),
        cwd=tc.root)
    out, errs = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, errs.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_unknown_group_and_no_workers_are_one_clear_line(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    out = advice(tc, "--group", f"nope-{tc.suffix}", "--window", "1")
    assert out.returncode == 2
    assert f"error: unknown consumer group 'nope-{tc.suffix}'" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    out = advice(tc, "--group", tc.group, "--window", "1")  # in workers/, nobody running
    assert out.returncode == 2
    assert "has no running workers" in out.stderr and "--per-worker-rate" in out.stderr
    assert "Traceback" not in out.stderr


async def test_backlog_without_workers_and_a_given_rate(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    await publish(tc, 3000, seed=21)
    out = advice(tc, "--group", tc.group, "--window", "1", "--per-worker-rate", "10",
                 "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["topics"] == [tc.topic] and r["partitions"] == 6 and r["members"] == 0
    assert r["lag_records"] == 3000 and r["ingress_rate"] == 0
    # (0 + 3000 / 300) / (10 * 0.8) = 1.25 → 2
    assert r["demand_rate"] == 10 and r["workers_needed"] == 2 and r["change"] == 2
    out = advice(tc, "--group", tc.group, "--window", "1", "--per-worker-rate", "1",
                 "--drain-seconds", "60")
    assert out.returncode == 0, out.stderr
    assert "capped at 6 partitions: 63 workers would be needed" in out.stdout
    assert "workers needed" in out.stdout


async def test_running_worker_measured_from_postgres_and_from_metrics(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    port = free_ports(1)
    log = tmp_path / "worker.log"
    worker = tc.start_worker(log, {"SINKFLEET_METRICS_PORT": str(port)})
    try:
        wait_for(lambda: "assigned 6 partition(s)" in log.read_text(), 60, "the assignment")
        load = ExperienceLoad(seed=22, agents=16, agent_prefix=f"t{tc.suffix}")
        producing = asyncio.create_task(produce(tc.settings, tc.catalogue, "experience_event",
                                                iter(load), 3600, rate=400))
        from_pg, from_metrics = await asyncio.gather(
            advice_async(tc, "--group", tc.group, "--window", "3"),
            advice_async(tc, "--group", tc.group, "--window", "3",
                         "--metrics", f"127.0.0.1:{port}"))
        await producing
    finally:
        assert stop(worker) == 0, log.read_text()[-3000:]
    for r in (from_pg, from_metrics):
        assert r["members"] == 1 and r["partitions"] == 6
        assert 200 < r["ingress_rate"] < 600, r
        assert 100 < r["per_worker_rate"] < 1000, r  # kept up with ~400/s
        # It kept up: the formula (ceil(400 / (400 * 0.8)) = 2) is capped at the 1 running.
        assert r["workers_needed"] == 1 and r["workers_uncapped"] == 2, r
        assert any("kept up during the window" in n for n in r["notes"]), r
    assert from_pg["per_worker_source"].startswith("postgres")
    assert from_metrics["per_worker_source"].startswith("metrics (1 worker(s)")
