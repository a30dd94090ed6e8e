"""Secrets never appear in CLI output, logs, errors or ``repr(settings)``.

Each CLI command runs as a real process with known secret values in its environment
(the real passwords where the command must succeed, distinctive fake ones where it
must fail), and neither stdout nor stderr may contain any of them — also with line
wrapping undone, since rich wraps long error lines.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.config import Settings, load_settings
from tests.security.servers import SaslKafkaInfo
from tests.support.catalogue import TestCatalogue
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration


def fake(name: str) -> str:
    return f"{name}-{secrets.token_hex(10)}"


def assert_hidden(text: str, hidden: list[str]) -> None:
    flat = "".join(text.split())
    leaked = [s for s in hidden if s in text or s in flat]
    assert not leaked, f"secret(s) printed: {len(leaked)} of {len(hidden)}"


def cli(args: list[str], env: dict[str, str], root: Path, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=root, timeout=timeout,
                          check=False)


def start_worker(tc: TestCatalogue, env: dict[str, str], log: Path
                 ) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "worker", "--spec", tc.worker_spec,
             "--log-level", "DEBUG"], stdout=fh, stderr=subprocess.STDOUT,
            env={**os.environ, **env}, cwd=tc.root)


def real_secrets(stack: Settings) -> dict[str, str]:
    pg, redis = stack.secret("pg_password"), stack.secret("redis_password")
    assert pg is not None and redis is not None
    return {"SINKFLEET_PG_PASSWORD": pg.get_secret_value(),
            "SINKFLEET_REDIS_PASSWORD": redis.get_secret_value()}


def base_env(stack: Settings, root: Path) -> dict[str, str]:
    return {"SINKFLEET_HOME": str(root), "SINKFLEET_STATE_DIR": str(stack.state),
            **real_secrets(stack),
            # set but unused by these commands: must not be printed either
            "SINKFLEET_PG_WORKER_PASSWORD": fake("worker-pw")}


def test_stack_env_status_and_catalogue_check_print_no_secret(stack: Settings, root: Path
                                                              ) -> None:
    env = base_env(stack, root)
    hidden = list(env.values())[2:]
    for args in (["stack", "env"], ["stack", "status", "--json"], ["stack", "status"],
                 ["catalogue", "check"]):
        out = cli(args, env, root)
        assert out.returncode == 0, (args, out.stderr[-500:])
        assert_hidden(out.stdout + out.stderr, hidden)
    # A wrong password: the probe fails and says so, without echoing what was tried.
    wrong = {**env, "SINKFLEET_PG_PASSWORD": fake("pg-pw")}
    out = cli(["stack", "status", "--json"], wrong, root)
    assert out.returncode == 1
    assert "password authentication failed" in out.stdout
    assert_hidden(out.stdout + out.stderr, [*hidden, *list(wrong.values())[2:]])


def test_failing_db_migrate_prints_no_secret(stack: Settings, root: Path) -> None:
    env = {**base_env(stack, root), "SINKFLEET_PG_HOST": "db.sinkfleet.invalid"}
    hidden = list(env.values())[2:5]
    out = cli(["db", "migrate"], env, root)
    assert out.returncode == 2
    assert "error: cannot reach PostgreSQL at db.sinkfleet.invalid:" in out.stderr
    assert "Traceback" not in out.stderr
    assert_hidden(out.stdout + out.stderr, hidden)
    env = {**base_env(stack, root), "SINKFLEET_PG_PASSWORD": fake("pg-pw")}
    out = cli(["db", "migrate"], env, root)
    assert out.returncode == 2
    assert "password authentication failed for user" in " ".join(out.stderr.split())
    assert_hidden(out.stdout + out.stderr, list(env.values())[2:])


def test_invalid_settings_are_named_not_echoed(stack: Settings, root: Path) -> None:
    value = fake("not-a-bool")
    out = cli(["catalogue", "check"], {**base_env(stack, root), "SINKFLEET_REDIS_TLS": value},
              root)
    assert out.returncode == 2 and "SINKFLEET_REDIS_TLS" in out.stderr
    assert_hidden(out.stdout + out.stderr, [value])
    password = fake("kafka-pw")
    out = cli(["catalogue", "check"],
              {**base_env(stack, root), "SINKFLEET_KAFKA_SASL_PASSWORD": password}, root)
    assert out.returncode == 2
    assert ("error: SINKFLEET_KAFKA_SASL_PASSWORD is set but SINKFLEET_KAFKA_SECURITY_PROTOCOL"
            "=PLAINTEXT sends no credentials") in " ".join(out.stderr.split())
    assert_hidden(out.stdout + out.stderr, [password])


async def test_worker_logs_print_no_secret(stack: Settings, catalogue_factory: Any,
                                           tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    env = {**base_env(stack, tc.root), "SINKFLEET_HOME": str(tc.root)}
    hidden = list(env.values())[2:]
    log = tmp_path / "worker.log"
    proc = start_worker(tc, env, log)
    try:
        async def joined() -> bool:
            return "assigned 2 partition(s)" in log.read_text()

        await async_wait_for(joined, 30, "the worker joins its group")
        await asyncio.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    text = log.read_text()
    assert "DEBUG" in text and "stopped cleanly" in text
    assert_hidden(text, hidden)


def test_topics_apply_over_sasl_prints_no_secret(stack: Settings, root: Path,
                                                 sasl_kafka: SaslKafkaInfo) -> None:
    env = {**base_env(stack, root), **sasl_kafka.env("SCRAM-SHA-512", tls=True)}
    hidden = [v for k, v in env.items() if "PASSWORD" in k]
    out = cli(["topics", "apply", "--dry-run"], env, root)
    assert out.returncode == 0, out.stderr[-1000:]
    assert "would create agent.experience-events (6 partitions)" in out.stdout
    assert_hidden(out.stdout + out.stderr, hidden)
    wrong = {**env, "SINKFLEET_KAFKA_SASL_PASSWORD": fake("kafka-pw")}
    out = cli(["topics", "apply", "--dry-run"], wrong, root)
    assert out.returncode == 2
    assert ("authentication failed for user 'bob' (SASL SCRAM-SHA-512)"
            in " ".join(out.stderr.split()))
    assert_hidden(out.stdout + out.stderr, [*hidden, wrong["SINKFLEET_KAFKA_SASL_PASSWORD"]])


def test_repr_and_dumps_hide_every_secret(stack: Settings) -> None:
    values = {"pg_password": fake("pg"), "redis_password": fake("redis"),
              "pg_worker_password": fake("worker"), "kafka_sasl_password": fake("kafka")}
    settings = load_settings(state_dir=stack.state, kafka_security_protocol="SASL_SSL",
                             kafka_sasl_username="u", **values)
    for text in (repr(settings), str(settings), settings.model_dump_json(),
                 str(settings.model_dump())):
        assert_hidden(text, list(values.values()))
        assert "**********" in text
