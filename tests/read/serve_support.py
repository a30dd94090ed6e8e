"""The read service (`sinkfleet serve`) in-process on a free port over the seeded query
catalogue (tests/read/query_support.py), logged in as a member of sinkfleet_serve, with a
token per tenant; and a small HTTP client for the tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest_asyncio
from multidict import CIMultiDict
from pydantic import SecretStr

from sinkfleet.read.serve import ReadService, ServeOptions
from sinkfleet.read.serve.tokens import create_token
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.group_roles import SERVE_ROLE
from tests.read.query_support import Seeded, seeded

__all__ = ["Served", "seeded", "served"]


@dataclass
class Served:
    seeded: Seeded
    service: ReadService
    port: int
    tokens: dict[str, str]  # tenant -> token
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sink(self, name: str) -> str:
        return self.seeded.names[name]

    async def get(self, path: str, tenant: str | None = "tenant-1",
                  params: Any = None, headers: dict[str, str] | None = None
                  ) -> tuple[int, Any, CIMultiDict[str]]:
        """(status, parsed JSON body or text, headers) of GET ``path`` as ``tenant``."""
        sent = dict(headers or {})
        if tenant is not None:
            sent["Authorization"] = f"Bearer {self.tokens[tenant]}"
        async with self.session.get(self.url + path, params=params, headers=sent) as resp:
            body: Any = await resp.read()
            if resp.content_type == "application/json" and body:
                body = await resp.json()
            else:
                body = body.decode()
            return resp.status, body, CIMultiDict(resp.headers)


async def serve_login(settings: Any) -> Any:
    """A fresh login that is a member of sinkfleet_serve only (dropped by the caller)."""
    login, password = f"sinkfleet_s{secrets.token_hex(4)}_serve", secrets.token_hex(12)
    async with pg(settings) as conn:
        await conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{password}'"
                           f" IN ROLE {SERVE_ROLE}")
    return settings.model_copy(update={"pg_user": login, "pg_password": SecretStr(password)})


@pytest_asyncio.fixture(scope="module")
async def served(seeded: Seeded) -> AsyncIterator[Served]:
    login = await serve_login(seeded.settings)
    tokens = {}
    async with pg(seeded.settings) as conn:
        for tenant in ("tenant-1", "tenant-2"):
            tokens[tenant], _ = await create_token(conn, tenant, "tests")
    options = ServeOptions(token_ttl=0.0)
    service = ReadService(login, seeded.catalogue, options)
    port = await service.start("127.0.0.1", 0)
    session = aiohttp.ClientSession()
    try:
        yield Served(seeded, service, port, tokens, session)
    finally:
        await session.close()
        await service.close()
        async with pg(seeded.settings) as conn:
            await conn.execute("DELETE FROM sinkfleet.api_tokens WHERE note = 'tests'")
            await conn.execute(f"DROP ROLE IF EXISTS {login.pg_user}")
