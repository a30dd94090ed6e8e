"""Bad records go to the dead-letter topic with headers; good ones are all stored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.avro.framing import frame_confluent
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.producer import Publisher
from tests.support.catalogue import TestCatalogue
from tests.support.deadletters import read_all
from tests.support.postgres import count_rows
from tests.support.worker import stop, wait_all_stored

pytestmark = pytest.mark.integration


async def test_poison_records_are_dead_lettered_and_never_block(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=50)
    load = ExperienceLoad(seed=21, agents=4, agent_prefix=f"t{tc.suffix}")
    good = [next(load) for _ in range(300)]
    too_wide = next(load) | {"event_type": 70_000}           # fits Avro int, not smallint
    huge_key = next(load) | {"agent_id": os.urandom(4000).hex()}  # index row > 2704 bytes
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        for i, event in enumerate(good):
            await pub.publish("experience_event", event)
            if i == 50:
                await pub.send_raw(tc.topic, b"garbage bytes", key=b"k")
            if i == 120:
                await pub.send_raw(tc.topic, frame_confluent(99, b"\x00"), key=b"k")
            if i == 180:
                await pub.publish("experience_event", too_wide)
            if i == 240:
                await pub.publish("experience_event", huge_key)
    worker = tc.start_worker(tmp_path / "w.log")
    try:
        await wait_all_stored(tc, 304)
    finally:
        assert stop(worker) == 0
    assert await count_rows(tc) == (300, 300)
    dead = await read_all(tc.settings, f"{tc.topic}.dlq", 4)
    headers = [dict(m.headers) for m in dead]
    stages = sorted(h["sinkfleet.stage"].decode() for h in headers)
    assert stages == ["decode", "decode", "validate", "write"]
    assert {m.value for m in dead} >= {b"garbage bytes", frame_confluent(99, b"\x00")}
    for h in headers:
        assert h["sinkfleet.topic"].decode() == tc.topic
        assert int(h["sinkfleet.offset"]) >= 0 and h["sinkfleet.error.message"]
    write = next(h for h in headers if h["sinkfleet.stage"] == b"write")
    assert write["sinkfleet.error.class"] == b"ProgramLimitExceededError"
    log = (tmp_path / "w.log").read_text()
    assert "dead_lettered=4" in log


async def test_records_over_the_size_limit_are_dead_lettered_unread(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory()
    load = ExperienceLoad(seed=22, agents=4, agent_prefix=f"t{tc.suffix}")
    good = [next(load) for _ in range(50)]
    big = next(load) | {"agent_id": "a" * 3000}
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        for event in [*good[:25], big, *good[25:]]:
            await pub.publish("experience_event", event)
    worker = tc.start_worker(tmp_path / "w.log",
                             extra_env={"SINKFLEET_MAX_MESSAGE_BYTES": "2048"})
    try:
        await wait_all_stored(tc, 51)
    finally:
        assert stop(worker) == 0
    assert await count_rows(tc) == (50, 50)
    [dead] = await read_all(tc.settings, f"{tc.topic}.dlq", 1)
    headers = dict(dead.headers)
    assert headers["sinkfleet.stage"] == b"decode"
    assert b"over the limit of 2048" in headers["sinkfleet.error.message"]
