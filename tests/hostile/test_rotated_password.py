"""The worker's PostgreSQL password is rotated under it: it fails loudly with a line that
says what to fix (never a traceback, never the password), commits nothing past what it
stored, and a restart with the new password stores the rest exactly once."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.roles import WORKER_ROLE
from tests.support.catalogue import TestCatalogue
from tests.support.postgres import count_rows, stored_offsets
from tests.support.worker import publish, stop, wait_all_stored

pytestmark = pytest.mark.integration


async def test_a_password_rotated_under_a_running_worker(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=3, max_age_ms=50)
    role, old, new = f"rot_{tc.suffix}", secrets.token_hex(12), secrets.token_hex(12)
    async with pg(tc.settings) as conn:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{old}' IN ROLE {WORKER_ROLE}")
        env = {"SINKFLEET_PG_USER": role, "SINKFLEET_PG_PASSWORD": old}
        log = tmp_path / "w.log"
        try:
            worker = tc.start_worker(log, extra_env=env)
            try:
                await publish(tc, 300, seed=41)
                await wait_all_stored(tc, 300)
                await conn.execute(f"ALTER ROLE {role} PASSWORD '{new}'")
                await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE usename = $1", role)
                await publish(tc, 300, seed=42)
                code = await asyncio.to_thread(worker.wait, 60)
            finally:
                if worker.poll() is None:
                    stop(worker)
            text = log.read_text()
            assert code == 2, text[-3000:]
            assert "storing a batch failed: StorageRefused" in text
            assert "refused the connection: InvalidPasswordError" in text
            assert "check SINKFLEET_PG_USER and SINKFLEET_PG_PASSWORD" in text
            assert "Traceback" not in text and old not in text and new not in text
            rows, _ = await count_rows(tc)
            assert sum((await stored_offsets(tc)).values()) == rows == 300  # nothing past it

            again = tc.start_worker(tmp_path / "again.log",
                                    extra_env={**env, "SINKFLEET_PG_PASSWORD": new})
            try:
                await wait_all_stored(tc, 600)
            finally:
                assert stop(again) == 0
            assert await count_rows(tc) == (600, 600)
        finally:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                               " WHERE usename = $1", role)
            await conn.execute(f"DROP OWNED BY {role}")
            await conn.execute(f"DROP ROLE {role}")
