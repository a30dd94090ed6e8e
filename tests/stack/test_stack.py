"""The local stack: healthy, idempotent, and clear when a port is taken."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.stack import manager
from sinkfleet.errors import StackError

pytestmark = pytest.mark.integration


def test_every_service_is_healthy(stack: Settings) -> None:
    statuses = asyncio.run(manager.status(stack))
    assert [(s.name, s.healthy) for s in statuses] == [
        ("kafka", True), ("postgres", True), ("redis", True)]
    assert all(s.pid for s in statuses)


def test_up_twice_starts_nothing(stack: Settings) -> None:
    said: list[str] = []
    assert asyncio.run(manager.up(stack, None, said.append)) == []
    assert all("already running" in line for line in said)


def test_port_taken_by_a_stranger_is_a_clear_error(stack: Settings, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = load_settings(home=tmp_path, state_dir=tmp_path / ".sinkfleet",
                                 redis_port=port)
        with pytest.raises(StackError, match=f"redis: port {port} is taken by another process"):
            asyncio.run(manager.up(settings, ["redis"], lambda m: None))


def test_env_never_prints_passwords(stack: Settings) -> None:
    text = "\n".join(manager.env_lines(stack))
    pg, redis = stack.secret("pg_password"), stack.secret("redis_password")
    assert pg is not None and redis is not None
    assert pg.get_secret_value() not in text
    assert redis.get_secret_value() not in text
    assert f"SINKFLEET_KAFKA_BOOTSTRAP={stack.kafka_bootstrap}" in text
    assert "**********" in repr(pg)


def test_unknown_service_name_is_refused(stack: Settings) -> None:
    with pytest.raises(StackError, match="unknown service"):
        asyncio.run(manager.up(stack, ["zookeeper"], lambda m: None))
