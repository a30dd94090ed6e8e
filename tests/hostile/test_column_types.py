"""Hostile values for the column limits (docs/column-types.md): a vector of the wrong
dimension, NaN or ±infinity in a vector, bytes over ``max_bytes``. Each becomes a dead
letter whose reason names the column and the fault; the good records around it are
stored and the partition goes on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from sinkfleet.errors import ValidationError
from sinkfleet.ops.deadletters.inspect import Filter, inspect
from sinkfleet.producer import Publisher
from sinkfleet.worker.rows import RowBuilder
from tests.sink.merge_support import project_family
from tests.support.family import Family, drain, drop_family, rows, running_worker

T0 = datetime(2026, 12, 1, tzinfo=UTC)
HOSTILE = [
    ({"coordinates": [0.5] * 7},
     "column coordinates: a vector of 7 elements; the sink stores exactly 8"),
    ({"coordinates": [0.5] * 9},
     "column coordinates: a vector of 9 elements; the sink stores exactly 8"),
    ({"coordinates": [0.5] * 3 + [float("nan")] + [0.5] * 4},
     "column coordinates: element [3] is nan; a vector holds finite numbers only"),
    ({"coordinates": [float("inf")] + [0.5] * 7},
     "column coordinates: element [0] is inf; a vector holds finite numbers only"),
    ({"coordinates": [0.5] * 7 + [float("-inf")]},
     "column coordinates: element [7] is -inf; a vector holds finite numbers only"),
    ({"binary_data": bytes(65)},
     "column binary_data: 65 bytes; the sink stores at most 64 (max_bytes)"),
    ({"binary_data": bytes(200_000)},
     "column binary_data: 200000 bytes; the sink stores at most 64 (max_bytes)"),
]


def token(n: int, **change: Any) -> dict[str, Any]:
    return {"token_id": str(uuid.UUID(int=n)), "version": 1, "binary_data": bytes(64),
            "coordinates": [float(n)] * 8, "token_type": "test", "level": 0,
            "updated_at": T0, **change}


@pytest.mark.parametrize(("change", "reason"), HOSTILE)
def test_the_row_builder_names_the_fault(change: dict[str, Any], reason: str) -> None:
    from sinkfleet.catalogue import load_catalogue
    from tests.support.catalogue import ROOT

    build = RowBuilder(load_catalogue(ROOT).sinks["tokens"])
    with pytest.raises(ValidationError) as info:
        build(token(1, **change))
    assert str(info.value) == reason
    build(token(1, binary_data=bytes(64)))  # the limits themselves are allowed
    build(token(1, binary_data=b""))


@pytest_asyncio.fixture
async def tokens(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await project_family(tmp_path, stack, "tokens")
    yield family
    await drop_family(family)


@pytest.mark.integration
async def test_hostile_vectors_and_bytes_are_dead_letters_with_reasons(
        tokens: Family) -> None:
    good = [token(n) for n in range(1, 4)]
    hostile = [token(100 + i, **change) for i, (change, _) in enumerate(HOSTILE)]
    async with Publisher(tokens.settings, catalogue=tokens.catalogue) as pub:
        for record in [good[0], *hostile[:4], good[1], *hostile[4:], good[2]]:
            await pub.publish(tokens.family, record)
    async with running_worker(tokens) as worker:
        await drain(tokens, worker)
        assert worker.stats.stored == 3 and worker.stats.dead_lettered == len(HOSTILE)
    stored = await rows(tokens, f'SELECT token_id, coordinates FROM "{tokens.table}"'
                                " ORDER BY token_id")
    assert [str(r["token_id"]) for r in stored] == [g["token_id"] for g in good]
    assert [r["coordinates"] for r in stored] == [[1.0] * 8, [2.0] * 8, [3.0] * 8]
    dead = await inspect(tokens.settings, [f"{tokens.topic}.dlq"], Filter.make())
    assert {(d.stage, d.error_class) for d in dead.records} == {("validate", "ValidationError")}
    assert sorted(d.headers["sinkfleet.error.message"] for d in dead.records) == sorted(
        reason for _, reason in HOSTILE)
