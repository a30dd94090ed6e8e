"""Chaos 3: 1 % poison records (garbage bytes and valid Avro that fails row validation)
mixed into good ones: exactly the poison is dead-lettered, exactly the good is stored."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.producer import Publisher
from sinkfleet.producer.synthetic import ExperienceLoad
from tests.chaos.support import Fleet, verify_exactly_once, wait_stored_at_least
from tests.conftest import TestCatalogue
from tests.worker.test_deadletter import read_all

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SEED = 303
GOOD = 10_000
POISON = 100  # 1 %


async def test_one_percent_poison_is_dead_lettered_exactly(
        catalogue_factory: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tc: TestCatalogue = await catalogue_factory(max_records=200, max_age_ms=50)
    load = ExperienceLoad(seed=SEED, agents=16, agent_prefix=f"t{tc.suffix}")
    good = [next(load) for _ in range(GOOD)]
    # Poison positions and kinds, seeded: half garbage bytes, half event_type=70000
    # (fits an Avro int, not the smallint column).
    slots = sorted(rng.sample(range(GOOD), POISON))
    kinds = ["garbage"] * (POISON // 2) + ["too_wide"] * (POISON - POISON // 2)
    rng.shuffle(kinds)
    poison_at = dict(zip(slots, kinds, strict=True))
    garbage: set[bytes] = set()
    fleet = Fleet(tc, tmp_path)
    started = time.monotonic()
    try:
        # steady: workers up first, so poison arrives while they are consuming.
        fleet.start()
        fleet.start()
        async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
            for i, event in enumerate(good):
                await pub.publish("experience_event", event)
                kind = poison_at.get(i)
                if kind == "garbage":  # inject
                    value = b"garbage-" + rng.randbytes(16)
                    garbage.add(value)
                    await pub.send_raw(tc.topic, value, key=rng.randbytes(8))
                elif kind == "too_wide":
                    await pub.publish("experience_event", next(load) | {"event_type": 70_000})
            await pub.flush()
        # recover
        await wait_stored_at_least(tc, GOOD + POISON, 90,
                                   f"{GOOD} good + {POISON} poison records consumed")
        codes = await fleet.stop_all()
    finally:
        fleet.kill_all()
    elapsed = time.monotonic() - started
    assert codes == [0, 0], fleet.tails()
    # verify: exact good rows, exact dead letters, offsets at the log end.
    await verify_exactly_once(tc, good, fleet.tails())
    dead = await read_all(tc.settings, f"{tc.topic}.dlq", POISON)
    assert len(dead) == POISON, (len(dead), fleet.tails())
    stages = [dict(m.headers)["sinkfleet.stage"].decode() for m in dead]
    assert stages.count("decode") == POISON // 2, stages
    assert stages.count("validate") == POISON - POISON // 2, stages
    assert {m.value for m in dead} >= garbage
    print(f"poison: {GOOD} good + {POISON} poison, {elapsed:.1f}s")
