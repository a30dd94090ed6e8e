"""Seed 001's tokens as shipped (an 8-D vector column with a cube index): publish →
worker → PostgreSQL → Reader's region ("tokens in a region") and nearest-neighbour
queries, checked against the same queries computed in Python."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.errors import ConfigError, ValidationError
from sinkfleet.producer import Publisher
from sinkfleet.read import Reader
from tests.sink.merge_support import project_family
from tests.support.family import Family, drain, drop_family, running_worker

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def tokens(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await project_family(tmp_path, stack, "tokens")
    yield family
    await drop_family(family)


def made_tokens(n: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    # halves: exact in float32, so Python's distances are PostgreSQL's
    return [{"token_id": str(uuid.UUID(int=i + 1)), "version": 1,
             "binary_data": rng.randbytes(64),
             "coordinates": [rng.randrange(0, 21) / 2 for _ in range(8)],
             "token_type": rng.choice(["word", "image"]), "level": i % 3,
             "updated_at": datetime(2026, 12, 1, tzinfo=UTC)} for i in range(n)]


async def test_tokens_in_a_region_and_nearest_tokens(tokens: Family) -> None:
    published = made_tokens(300)
    async with Publisher(tokens.settings, catalogue=tokens.catalogue) as pub:
        for record in published:
            await pub.publish(tokens.family, record)
    async with running_worker(tokens) as worker:
        await drain(tokens, worker)
    low, high = [1.0] * 8, [9.0] * 8
    inside = sorted(t["token_id"] for t in published if t["level"] == 1 and all(
        lo <= x <= hi for x, lo, hi in zip(t["coordinates"], low, high, strict=True)))
    query = [5.0] * 8
    by_distance = sorted(published, key=lambda t: (math.dist(t["coordinates"], query)))
    async with Reader(tokens.settings, tokens.catalogue) as reader:
        region = await reader.region(tokens.table, "coordinates", low, high,
                                     where={"level": 1})
        near = await reader.nearest(tokens.table, "coordinates", query, k=5)
        one = await reader.state(tokens.table, published[7]["token_id"])
        with pytest.raises(ConfigError, match="give 8 finite numbers for 'coordinates'"):
            await reader.nearest(tokens.table, "coordinates", [1.0, math.nan] + [0.0] * 6)
        with pytest.raises(ConfigError, match="'token_type' is not a vector"):
            await reader.nearest(tokens.table, "token_type", query)
    assert [str(r["token_id"]) for r in region] == inside
    assert 5 < len(inside) < 100  # the box holds some level-1 tokens, not all
    assert all(r["level"] == 1 for r in region)
    assert [r["distance"] for r in near] == [
        math.dist(t["coordinates"], query) for t in by_distance[:5]]
    assert one is not None and bytes(one["binary_data"]) == published[7]["binary_data"]
    assert one["coordinates"] == published[7]["coordinates"]


async def test_bulk_insert_of_1000_tokens_in_one_call(tokens: Family) -> None:
    """Seed 001: "bulk insert of 1,000 tokens in one call" — validated first (one bad
    token refuses the call and sends nothing), then sent and acknowledged together, and
    stored as 1,000 rows."""
    published = made_tokens(1000)
    bad = [dict(t) for t in published]
    bad[500]["level"] = "three"  # not an int: the Avro schema refuses it
    async with Publisher(tokens.settings, catalogue=tokens.catalogue) as pub:
        with pytest.raises(ValidationError, match=r"record #500: .*nothing was sent"):
            await pub.publish_many(tokens.family, bad)
        assert pub.sent == 0
        assert await pub.publish_many(tokens.family, published) == 1000
        assert pub.acked == 1000
    async with running_worker(tokens) as worker:
        await drain(tokens, worker)
    async with Reader(tokens.settings, tokens.catalogue) as reader:
        page = await reader.query(tokens.table, order_by="token_id", limit=1000)
    assert [str(r["token_id"]) for r in page.rows] == sorted(t["token_id"] for t in published)
