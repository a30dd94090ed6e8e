"""`sinkfleet dlq inspect|replay` on real Kafka, PostgreSQL and a worker process."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from sinkfleet.avro.framing import frame_confluent
from sinkfleet.config import Settings
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.keys import record_key
from sinkfleet.producer import Publisher
from tests.support.catalogue import TestCatalogue, make_catalogue
from tests.support.cli import sinkfleet
from tests.support.deadletters import replayed_from
from tests.support.kafka import end_offsets, read_topic
from tests.support.postgres import count_rows
from tests.support.worker import stop, wait_all_stored

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli_json(tc: TestCatalogue, *args: str) -> dict[str, Any]:
    out = sinkfleet(tc, "dlq", *args, "--json")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def replay_cursor(settings: Settings, dlq: str) -> dict[int, tuple[int, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"sinkfleet.dlq-replay.{dlq}")
        return {tp.partition: (om.offset, om.metadata) for tp, om in offsets.items()}
    finally:
        await admin.close()


async def test_inspect_lists_exactly_the_dead_letters(catalogue_factory: Any,
                                                      tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=50)
    load = ExperienceLoad(seed=31, agents=4, agent_prefix=f"t{tc.suffix}")
    too_wide = next(load) | {"event_type": 70_000}  # fits Avro int, not the smallint column
    poison: dict[str, tuple[bytes, bytes, str, str]] = {}  # name -> (key, value, stage, class)
    futures = {}
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        _, wide_key, wide_value = pub.encode("experience_event", too_wide)
        assert wide_key is not None
        for i in range(120):
            await pub.publish("experience_event", next(load))
            if i == 30:
                futures["garbage"] = await pub.send_raw(tc.topic, b"garbage bytes", key=b"k1")
                poison["garbage"] = (b"k1", b"garbage bytes", "decode", "DecodeError")
            if i == 70:
                frame = frame_confluent(99, b"\x00")
                futures["confluent"] = await pub.send_raw(tc.topic, frame, key=b"k2")
                poison["confluent"] = (b"k2", frame, "decode", "DecodeError")
            if i == 100:
                futures["wide"] = await pub.publish("experience_event", too_wide)
                poison["wide"] = (wide_key, wide_value, "validate", "ValidationError")
    origin = {name: (f.result().partition, f.result().offset) for name, f in futures.items()}
    worker = tc.start_worker(tmp_path / "w.log")
    try:
        await wait_all_stored(tc, 123)
    finally:
        assert stop(worker) == 0
    assert await count_rows(tc) == (120, 120)

    data = cli_json(tc, "inspect", "--topic", tc.topic)
    assert data["topics"] == [f"{tc.topic}.dlq"]
    assert data["scanned"] == data["matched"] == data["shown"] == 3
    got = {(r["partition"], r["offset"]): r for r in data["records"]}
    assert set(got) == set(origin.values())
    for name, (key, value, stage, cls) in poison.items():
        r = got[origin[name]]
        assert (r["stage"], r["error_class"]) == (stage, cls), name
        assert base64.b64decode(r["value"]) == value and base64.b64decode(r["key"]) == key
        assert r["value_size"] == len(value) and r["topic"] == tc.topic
        assert r["dlq_topic"] == f"{tc.topic}.dlq" and r["error_message"]
        assert r["headers"]["sinkfleet.stage"] == stage
        assert r["headers"]["sinkfleet.offset"] == str(origin[name][1])
        assert r["worker"].startswith("events-")
    assert data["summary"] == [
        {"stage": "decode", "error_class": "DecodeError", "count": 2},
        {"stage": "validate", "error_class": "ValidationError", "count": 1}]

    assert cli_json(tc, "inspect", "--topic", tc.topic, "--stage", "decode")["matched"] == 2
    only = cli_json(tc, "inspect", "--error-class", "ValidationError")  # every topic
    assert [r["offset"] for r in only["records"]] == [origin["wide"][1]]
    assert cli_json(tc, "inspect", "--all", "--since", "2999-01-01")["matched"] == 0
    assert cli_json(tc, "inspect", "--since", "2000-01-01T00:00:00+02:00")["matched"] == 3
    limited = cli_json(tc, "inspect", "--limit", "1")
    assert (limited["matched"], limited["shown"]) == (3, 1)

    table = sinkfleet(tc, "dlq", "inspect", "--topic", tc.topic)
    assert table.returncode == 0, table.stderr
    assert "3 matching dead letter(s) of 3" in table.stdout
    assert "DecodeError" in table.stdout and "ValidationError" in table.stdout
    assert await replay_cursor(tc.settings, f"{tc.topic}.dlq") == {}  # read-only


async def test_replay_resends_each_dead_letter_once(catalogue_factory: Any,
                                                    tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(max_records=50)
    dlq = f"{tc.topic}.dlq"
    load = ExperienceLoad(seed=41, agents=4, agent_prefix=f"t{tc.suffix}")
    base = next(load)
    same = {"agent_id": base["agent_id"], "episode_id": base["episode_id"]}
    key = record_key(tc.catalogue.topics[tc.topic], base)
    assert key is not None
    # One key: the dead letters land in one DLQ partition, in this order: v d v v.
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        for i in range(60):
            await pub.publish("experience_event", next(load))
            if i in (10, 30, 40):
                await pub.publish("experience_event", next(load) | same | {"event_type": 70_000})
            if i == 20:
                await pub.send_raw(tc.topic, b"garbage bytes", key=key)
    worker = tc.start_worker(tmp_path / "w.log")
    try:
        await wait_all_stored(tc, 64)
    finally:
        assert stop(worker) == 0
    dead = cli_json(tc, "inspect", "--topic", tc.topic)["records"]
    assert [r["stage"] for r in dead] == ["validate", "decode", "validate", "validate"]
    (p,) = {r["dlq_partition"] for r in dead}
    coords = [f"{dlq}:{p}:{r['dlq_offset']}" for r in dead]
    values = {c: base64.b64decode(r["value"]) for c, r in zip(coords, dead, strict=True)}
    assert [r["dlq_offset"] for r in dead] == [0, 1, 2, 3]

    dry = cli_json(tc, "replay", "--topic", tc.topic, "--stage", "validate")
    assert (dry["dry_run"], dry["replayed"], dry["left"]) == (True, 3, 1)
    assert len(await read_topic(tc.settings, tc.topic)) == 64  # nothing sent
    assert await replay_cursor(tc.settings, dlq) == {}  # nothing committed

    done = cli_json(tc, "replay", "--topic", tc.topic, "--stage", "validate", "--apply")
    assert (done["dry_run"], done["replayed"], done["left"]) == (False, 3, 1)
    records = await read_topic(tc.settings, tc.topic)
    replays = {replayed_from(m): m for m in records if replayed_from(m)}
    assert len(records) == 67 and sorted(replays) == sorted(coords[:1] + coords[2:])
    for coord, msg in replays.items():
        assert msg.value == values[coord] and msg.key == key
    # The decode dead letter at offset 1 is left; 2-3 are remembered above it.
    assert (await replay_cursor(tc.settings, dlq))[p] == (1, "2-3")

    again = cli_json(tc, "replay", "--topic", tc.topic, "--stage", "validate", "--apply")
    assert (again["replayed"], again["already_replayed"], again["left"]) == (0, 2, 1)
    assert cli_json(tc, "replay", "--topic", tc.topic)["replayed"] == 1  # dry: the decode one
    rest = cli_json(tc, "replay", "--apply")  # every topic, no filter
    assert [r["replayed_from"] for r in rest["records"]] == [coords[1]]
    last = cli_json(tc, "replay", "--topic", tc.topic, "--apply")
    assert (last["replayed"], last["left"]) == (0, 0)
    records = await read_topic(tc.settings, tc.topic)
    assert sorted(filter(None, map(replayed_from, records))) == sorted(coords)
    assert len(records) == 68
    ends = {tp.partition: off for tp, off in (await _ends(tc, dlq)).items()}
    assert await replay_cursor(tc.settings, dlq) == {q: (off, "") for q, off in ends.items()}

    text = sinkfleet(tc, "dlq", "replay", "--topic", tc.topic, "--apply")
    assert text.returncode == 0 and "nothing to replay; " in text.stdout

    # The fix did not fix these: the worker dead-letters them again, at new offsets.
    worker = tc.start_worker(tmp_path / "w.log")
    try:
        await wait_all_stored(tc, 68)
    finally:
        assert stop(worker) == 0
    assert await count_rows(tc) == (60, 60)
    again_dead = cli_json(tc, "inspect", "--topic", tc.topic)["records"]
    assert [r["dlq_offset"] for r in again_dead] == [0, 1, 2, 3, 4, 5, 6, 7]
    # The new dead letters still say which dead letter they were replayed from.
    trail = sorted(r["headers"].get("sinkfleet.replayed_from", "") for r in again_dead[4:])
    assert trail == sorted(coords)
    assert cli_json(tc, "replay", "--topic", tc.topic)["replayed"] == 4


async def _ends(tc: TestCatalogue, topic: str) -> dict[TopicPartition, int]:
    return await end_offsets(tc.settings, [topic])


@pytest.mark.parametrize("args, message", [
    (("inspect", "--topic", "nope"), "no topic 'nope' in topics/"),
    (("inspect", "--topic", "agent.experience-events", "--all"), "not both"),
    (("inspect", "--stage", "store"), "unknown stage 'store'"),
    (("inspect", "--since", "yesterday"), "is not an ISO date-time"),
    (("replay", "--stage", "nope"), "unknown stage 'nope'"),
])
def test_user_mistakes_are_one_clear_line(args: tuple[str, ...], message: str) -> None:
    out = sinkfleet(None, "dlq", *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr + out.stdout


def test_a_missing_dead_letter_topic_says_what_to_do(stack: Settings, tmp_path: Path) -> None:
    tc = make_catalogue(tmp_path, stack)  # topics not applied
    for command in ("inspect", "replay"):
        out = sinkfleet(tc, "dlq", command)
        assert out.returncode == 2, out.stderr
        assert f"{tc.topic}.dlq does not exist" in out.stderr
        assert "sinkfleet topics apply" in out.stderr and "Traceback" not in out.stderr
