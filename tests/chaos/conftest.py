"""The chaos scenarios' catalogue: events, workflow states and audit entries under unique
names, carried by one worker group (tests/chaos/support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from sinkfleet.config import Settings
from tests.chaos.support import ChaosCatalogue, drop_chaos_catalogue, open_chaos_catalogue


@pytest_asyncio.fixture
async def chaos_catalogue(stack: Settings, tmp_path: Path
                          ) -> AsyncIterator[Callable[..., Any]]:
    made: list[ChaosCatalogue] = []

    async def factory(**kwargs: Any) -> ChaosCatalogue:
        cc = await open_chaos_catalogue(tmp_path, stack, **kwargs)
        made.append(cc)
        return cc

    yield factory
    for cc in made:
        await drop_chaos_catalogue(cc)
