"""`sinkfleet fleet` end to end: N worker processes, a kill -9 restarted, exact counts,
and a clean SIGTERM shutdown that leaves no worker behind.

The test finds the workers' pids in the fleet's pid files
(``<state>/run/fleet-<spec>-<i>.pid``, one per running worker).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.catalogue import TestCatalogue
from tests.support.endpoints import free_ports
from tests.support.postgres import count_rows
from tests.support.waiting import wait_for
from tests.support.worker import publish, wait_all_stored

pytestmark = pytest.mark.integration


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def workers_of(root: Path) -> list[int]:
    """Every live `sinkfleet worker` process whose SINKFLEET_HOME is this catalogue."""
    found = []
    needle = f"SINKFLEET_HOME={root}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if b"worker" not in cmd or b"sinkfleet" not in cmd:
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0") and running(
                    int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def start_fleet(tc: TestCatalogue, out: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(out, "wb") as fh:  # not a TTY: the fleet logs plain lines
        return subprocess.Popen([sys.executable, "-m", "sinkfleet", "fleet", *args],
                                stdout=fh, stderr=subprocess.STDOUT, env=tc.env(), cwd=tc.root)


async def test_fleet_restarts_a_killed_worker_and_stops_cleanly(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    # A spec name of its own: pid files and logs are per spec in the shared state dir.
    spec = f"fleet_{tc.suffix}"
    (tc.root / "workers" / f"{spec}.yaml").write_text(
        f"name: {spec}\ngroup: {tc.group}\nsinks: [{tc.table}]\n"
        "batch: {max_records: 5000, max_age_ms: 200}\n")
    state = tc.settings.state
    pidfiles = [state / "run" / f"fleet-{spec}-{i}.pid" for i in range(2)]
    logs = [state / "logs" / f"fleet-{spec}-{i}.log" for i in range(2)]
    base = free_ports(2)
    out = tmp_path / "fleet.out"
    fleet = start_fleet(tc, out, "--spec", spec, "--workers", "2",
                        "--metrics-base-port", str(base))

    def tails() -> str:
        parts = [f"--- fleet output\n{out.read_text()[-3000:]}"]
        parts += [f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs if log.exists()]
        return "\n".join(parts)

    try:
        first = wait_for(lambda: all(map(read_pid, pidfiles)) and [read_pid(p) for p in pidfiles],
                         30, "both workers' pid files")
        assert all(running(pid) for pid in first), tails()
        # Both joined the group and got partitions before the kill.
        wait_for(lambda: all(log.exists() and "assigned" in log.read_text() for log in logs),
                 60, "both workers to be assigned partitions")
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        restarted = wait_for(lambda: (read_pid(pidfiles[0]) not in (None, victim)
                                      and read_pid(pidfiles[0])), 30, "slot 0 restarted")
        assert running(restarted) and not running(victim), tails()
        assert read_pid(pidfiles[1]) == first[1] and running(first[1])
        text = out.read_text()
        assert f"worker pid {victim} killed by SIGKILL" in text, tails()
        assert f"fleet[{spec}] slot 0: restarting in 1s" in text, tails()
        assert f"metrics port {base}" in text and f"metrics port {base + 1}" in text
        await publish(tc, 4000, seed=11)
        await wait_all_stored(tc, 4000)
        # The new worker took slot 0's static member id back, and its partitions.
        wait_for(lambda: "assigned" in logs[0].read_text().rsplit("==== ", 1)[1], 60,
                 "the restarted worker to be assigned partitions")
        ids = [re.findall(r"joining group \S+ as static member (\S+)", log.read_text())
               for log in logs]
        assert len(ids[0]) == 2 and ids[0][0] == ids[0][1] and ids[0][0].endswith("-0"), ids
        assert len(ids[1]) == 1 and ids[1][0].endswith("-1"), ids
        assert await count_rows(tc) == (4000, 4000)
    finally:
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGTERM)
        try:
            code = fleet.wait(90)
        except subprocess.TimeoutExpired:
            fleet.kill()
            raise
    assert code == 0, tails()
    assert "exiting 0" in out.read_text(), tails()
    for pid in (*first, restarted):
        assert not running(pid), tails()
    assert workers_of(tc.root) == [], tails()
    assert not any(p.exists() for p in pidfiles)
    assert not (state / "run" / f"fleet-{spec}.pid").exists()
    for log in logs:  # each worker drained and said so
        assert "stopped cleanly" in log.read_text().splitlines()[-1], tails()
    assert await count_rows(tc) == (4000, 4000)
    for log in logs:  # passed: leave nothing behind in the shared state dir
        log.unlink()


def test_a_crash_looping_fleet_gives_up_and_exits_1(stack: Any, root: Path,
                                                    tmp_path: Path) -> None:
    """Workers that PostgreSQL refuses (wrong password) exit 2 at once: every slot gives up.
    (PostgreSQL being down is different: workers wait for it, see test_outage.py.)"""
    env = {**os.environ, "SINKFLEET_HOME": str(root), "SINKFLEET_STATE_DIR": str(tmp_path),
           "SINKFLEET_PG_PASSWORD": "wrong-password"}
    out = subprocess.run(
        [sys.executable, "-m", "sinkfleet", "fleet", "--spec", "events", "--workers", "2",
         "--max-restarts", "1", "--metrics-base-port", "0"],
        capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    for i in range(2):
        assert f"slot {i}: restarting in 1s (restart 1 of 1 allowed in 60s)" in out.stdout
        assert (f"slot {i}: GAVE UP: crash loop, 1 restarts in the last 60s (limit 1); last"
                f" worker exited 2; see {tmp_path}/logs/fleet-events-{i}.log") in out.stderr
        assert "refused the connection: InvalidPasswordError" in (
            tmp_path / "logs" / f"fleet-events-{i}.log").read_text()
    assert "every slot gave up: the fleet exits 1" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []
