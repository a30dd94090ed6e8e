"""The local Redis is bounded: its config sets ``maxmemory`` (SINKFLEET_REDIS_MAXMEMORY,
default 256mb) beside the LRU policy — checked on a real redis-server started from the
generated config — and a value that would inject another config line is refused."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sinkfleet.config import load_settings
from sinkfleet.dev.stack.services import Redis
from sinkfleet.errors import ConfigError
from tests.support.endpoints import free_port


@pytest.mark.parametrize(("setting", "expected"), [(None, 256 * 1024 * 1024),
                                                   ("64mb", 64 * 1024 * 1024)])
async def test_generated_config_bounds_redis(tmp_path: Path, setting: str | None,
                                             expected: int) -> None:
    extra = {} if setting is None else {"redis_maxmemory": setting}
    settings = load_settings(home=tmp_path, state_dir=tmp_path / "state",
                             redis_port=free_port(), **extra)
    service = Redis("redis", settings)
    service.prepare()
    proc = await asyncio.create_subprocess_exec(*service.argv(), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    try:
        client = aioredis.Redis(host="127.0.0.1", port=settings.redis_port,
                                password=service.password, decode_responses=True)
        for _ in range(100):
            try:
                config = await client.config_get("maxmemory*")
                break
            except (ConnectionError, OSError, aioredis.ConnectionError):
                await asyncio.sleep(0.05)
        await client.aclose()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert config["maxmemory"] == str(expected)
    assert config["maxmemory-policy"] == "allkeys-lru"


@pytest.mark.parametrize("bad", ["256mb\nrename-command CONFIG \"\"", "lots", "256 mb", ""])
def test_maxmemory_refuses_what_is_not_a_size(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="SINKFLEET_REDIS_MAXMEMORY"):
        load_settings(home=tmp_path, redis_maxmemory=bad)
