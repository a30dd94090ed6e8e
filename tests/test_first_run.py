"""A newcomer's first run: `sinkfleet demo` on an empty state dir passes the first time.

The first `make demo` on a fresh machine used to fail at migrations: settings were
loaded (and the generated passwords read) before `stack up` had generated them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sinkfleet.config import load_settings
from sinkfleet.dev.demo import Summary, log_errors
from sinkfleet.dev.verify_load import FamilyCheck

ROOT = Path(__file__).resolve().parent.parent


def test_secrets_generated_after_settings_were_loaded_are_used(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, state_dir=tmp_path / "state")
    assert "password" not in settings.pg_connect_kwargs
    assert "password" not in settings.redis_kwargs()
    secrets = tmp_path / "state" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "pg_password").write_text("pg-made-later\n")
    (secrets / "redis_password").write_text("redis-made-later\n")
    (secrets / "pg_worker_password").write_text("worker-made-later\n")
    assert settings.pg_connect_kwargs["password"] == "pg-made-later"
    assert settings.redis_kwargs()["password"] == "redis-made-later"
    as_worker = load_settings(home=tmp_path, state_dir=tmp_path / "state",
                              pg_user=settings.pg_worker_user)
    assert as_worker.pg_connect_kwargs["password"] == "worker-made-later"


def test_configured_passwords_win_over_generated_ones(tmp_path: Path) -> None:
    secrets = tmp_path / "state" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "pg_password").write_text("generated")
    settings = load_settings(home=tmp_path, state_dir=tmp_path / "state",
                             pg_password="s3cr3t-set-by-env")
    assert settings.pg_connect_kwargs["password"] == "s3cr3t-set-by-env"
    assert "s3cr3t-set-by-env" not in repr(settings)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _summary(*, lag: int = 0, misses: int = 0,
             errors: list[str] | None = None) -> Summary:
    check = FamilyCheck("experience_event", "experience_events", "append", 10, 0, 10, 10, 0,
                        0, 0)
    cache = {"reads": 20, "hits": 20 - misses, "misses": misses, "errors": 0}
    return Summary(10, 0, [check], 1.0, 1.0, 1.0, lag, cache, errors or [])


def test_the_demo_verdict_fails_on_what_the_family_checks_cannot_see() -> None:
    """Rows all present is not enough: an error a worker only logged (the dropped uuid cache
    writes) or a cached read Redis did not answer fails the run, and says which."""
    assert _summary().ok and _summary().problems == []
    missed = _summary(misses=20)
    assert not missed.ok
    assert missed.problems == ["20 of 20 current-state reads missed Redis although the"
                               " workers wrote those ids through it"]
    logged = _summary(errors=["demo-x-state-0.log: 2026 ERROR sinkfleet.cache: boom"])
    assert not logged.ok
    assert logged.problems == ["1 error line(s) in the worker logs, first:"
                               " demo-x-state-0.log: 2026 ERROR sinkfleet.cache: boom"]
    assert _summary(lag=3).problems == ["3 record(s) not stored"]


def test_log_errors_reads_only_this_runs_workers_and_sinkfleets_own_errors(
        tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, state_dir=tmp_path / "state")
    logs = tmp_path / "state" / "logs"
    logs.mkdir(parents=True)
    (logs / "demo-run1-state-0.log").write_text(
        "t INFO sinkfleet.worker: assigned\n"
        "t ERROR sinkfleet.cache: cache: write dropped\n"
        "t ERROR aiokafka.consumer.group_coordinator: coordinator not available, retrying\n")
    (logs / "demo-run0-state-0.log").write_text("t ERROR sinkfleet.cache: an older run\n")
    assert log_errors(settings, "run1") == [
        "demo-run1-state-0.log: t ERROR sinkfleet.cache: cache: write dropped"]


@pytest.mark.integration
def test_demo_passes_the_first_time_on_an_empty_state_dir(tmp_path: Path) -> None:
    """The README's main command, from nothing: its own stack on its own ports."""
    state = tmp_path / "state"
    kafka, controller, pg, redis = _free_ports(4)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SINKFLEET_") or k == "SINKFLEET_CHAOS_LONG"}
    env.update(SINKFLEET_HOME=str(ROOT), SINKFLEET_STATE_DIR=str(state),
               SINKFLEET_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka}",
               SINKFLEET_KAFKA_CONTROLLER_PORT=str(controller),
               SINKFLEET_PG_PORT=str(pg), SINKFLEET_REDIS_PORT=str(redis),
               SINKFLEET_KAFKA_HEAP="384m")
    cmd = [sys.executable, "-m", "sinkfleet"]
    try:
        run = subprocess.run([*cmd, "demo", "--count", "3000", "--workers", "1"], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-6000:]
        assert "OK: every acknowledged record stored" in out, out[-6000:]
        assert "Traceback" not in out, out[-6000:]
        # the workers' own logs: no cache write dropped (a uuid column once made every
        # latest-cache write of its sink fail, while the demo still said OK)
        logs = sorted((state / "logs").glob("demo-*.log"))
        assert len(logs) == 3, logs  # --workers 1: one events, the audit and the state worker
        for log in logs:
            dropped = [line for line in log.read_text().splitlines()
                       if "ERROR sinkfleet" in line]
            assert not dropped, f"{log.name}: {dropped[:3]}"
        for name in ("pg_password", "redis_password", "pg_worker_password"):
            secret = (state / "secrets" / name).read_text().strip()
            assert secret and secret not in out  # generated on this run, never printed
    finally:
        subprocess.run([*cmd, "stack", "down"], env=env, cwd=ROOT, capture_output=True,
                       timeout=120)
        stack_id = state / "stack-id"  # PostgreSQL's data may sit under /var/tmp (see stack)
        if stack_id.is_file():
            shutil.rmtree(f"/var/tmp/sinkfleet-pg-{stack_id.read_text().strip()}",
                          ignore_errors=True)
