"""The offsets table never moves back through the worker's path (zombie fencing)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition

from sinkfleet.sink.postgres.connect import pg
from sinkfleet.sink.postgres.offsets import load_offsets, save_offsets
from tests.support.catalogue import TestCatalogue

pytestmark = pytest.mark.integration


async def test_a_late_writer_cannot_move_offsets_back(catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory()
    tp0, tp1 = TopicPartition(tc.topic, 0), TopicPartition(tc.topic, 1)
    async with pg(tc.settings) as conn:
        await save_offsets(conn, tc.group, {tp0: 500, tp1: 10})
        await save_offsets(conn, tc.group, {tp0: 300, tp1: 20})  # a zombie's stale batch
        assert await load_offsets(conn, tc.group, [tp0, tp1]) == {tp0: 500, tp1: 20}
