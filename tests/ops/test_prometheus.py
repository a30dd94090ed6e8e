"""A real Prometheus scrapes a worker and the lag exporter: lag rises with a backlog,
the stalled-group alert fires while the workers are stopped, lag falls back to 0."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from sinkfleet.ops.lag.exporter import LagExporter
from tests.support.catalogue import ROOT, TestCatalogue
from tests.support.endpoints import free_port
from tests.support.waiting import async_wait_for
from tests.support.worker import publish, stop, wait_all_stored

pytestmark = pytest.mark.integration


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("prometheus not found: install it (apt-get install prometheus, or"
                    " scripts/install-system-deps.sh)")
    return found


def write_config(tmp: Path, worker_port: int, exporter_port: int) -> Path:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "SinkfleetGroupStalled":
                rule["for"] = "2s"  # the real expression, a test-sized wait
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "sinkfleet-workers",
             "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            {"job_name": "sinkfleet-lag-exporter",
             "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_prometheus(tmp: Path, worker_port: int, exporter_port: int, port: int
                     ) -> subprocess.Popen[bytes]:
    config = write_config(tmp, worker_port, exporter_port)
    with open(tmp / "prometheus.log", "wb") as log:
        return subprocess.Popen(
            [prometheus_binary(), f"--config.file={config}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log)


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


def query(base: str, promql: str) -> float | None:
    try:
        result = api(base, "query", query=promql)["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def stalled_alert_firing(base: str, group: str) -> bool:
    try:
        alerts = api(base, "alerts")["alerts"]
    except OSError:
        return False
    return any(a["labels"].get("alertname") == "SinkfleetGroupStalled"
               and a["labels"].get("group") == group and a["state"] == "firing"
               for a in alerts)


async def test_prometheus_sees_lag_rise_stall_and_fall(catalogue_factory: Any,
                                                       tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    worker_port, exporter_port, prom_port = free_port(), free_port(), free_port()
    env = {"SINKFLEET_METRICS_PORT": str(worker_port)}
    log = tmp_path / "worker.log"
    exporter = LagExporter(tc.settings, interval=1.0, groups=[tc.group], stall_seconds=3,
                           window_seconds=4)
    exporter_task = asyncio.create_task(exporter.run("127.0.0.1", exporter_port))
    prom = start_prometheus(tmp_path, worker_port, exporter_port, prom_port)
    base = f"http://127.0.0.1:{prom_port}"
    lag = f'sum(sinkfleet_group_lag_records{{group="{tc.group}"}})'
    worker = tc.start_worker(log, extra_env=env)
    try:
        await publish(tc, 500, seed=51)
        await wait_all_stored(tc, 500)

        async def scraped_worker() -> bool:
            stored = query(base, f'sum(sinkfleet_records_stored_total{{group="{tc.group}"}})')
            return stored == 500

        await async_wait_for(scraped_worker, 60, "Prometheus to scrape the worker")
        assert stop(worker) == 0
        await publish(tc, 3000, seed=52)  # a backlog nobody consumes

        async def lag_rose() -> bool:
            seen.append(query(base, lag))
            return seen[-1] == 3000

        seen: list[float | None] = []
        try:
            await async_wait_for(lag_rose, 60, "the lag series to show the backlog")
        except AssertionError as exc:
            snap = exporter.snapshot.as_dict() if exporter.snapshot else None
            raise AssertionError(f"{exc}; Prometheus said {seen[-3:]}; exporter: {snap}"
                                 ) from None

        async def fired() -> bool:
            return stalled_alert_firing(base, tc.group)

        await async_wait_for(fired, 60, "SinkfleetGroupStalled to fire")
        worker = tc.start_worker(log, extra_env=env)
        await wait_all_stored(tc, 3500)

        async def lag_fell() -> bool:
            return query(base, lag) == 0

        await async_wait_for(lag_fell, 60, "the lag series to fall to 0")
        assert query(base, f'max(sinkfleet_group_lag_seconds{{group="{tc.group}"}})') == 0
    finally:
        if worker.poll() is None:
            stop(worker)
        prom.terminate()
        prom.wait(30)
        exporter.stop()
        await exporter_task
