"""Forged dead letters: `sinkfleet dlq inspect` shows them literally, `dlq replay` never
sends one where its dead-letter topic does not lead, and neither prints a traceback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from sinkfleet.config import Settings
from sinkfleet.worker import deadletter as h
from tests.support.catalogue import TestCatalogue
from tests.support.cli import sinkfleet
from tests.support.deadletters import replayed_from
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


async def produce(settings: Settings, topic: str, records: list[Record]) -> list[int]:
    """Send ``records`` to partition 0 of ``topic``, in order; their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=headers, partition=0)
                   for key, value, headers in records]
        return [m.offset for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def forged(topic: str | bytes | None, **replace: bytes | None) -> list[tuple[str, bytes]]:
    """The headers a worker writes, with ``replace`` (by constant name) changed or, when
    None, left out."""
    headers: dict[str, bytes | None] = {
        h.TOPIC: topic.encode() if isinstance(topic, str) else topic,
        h.PARTITION: b"0", h.OFFSET: b"0", h.TIMESTAMP: b"1700000000000",
        h.STAGE: b"decode", h.ERROR_CLASS: b"DecodeError", h.ERROR_MESSAGE: b"boom",
        h.WORKER: b"events-host-1", h.HOST: b"host",
        h.DEAD_AT_MS: str(int(time.time() * 1000)).encode()}
    for name, value in replace.items():
        headers[getattr(h, name)] = value
    return [(k, v) for k, v in headers.items() if v is not None]


def cut(data: bytes) -> dict[str, bytes]:
    return {"VALUE_TRUNCATED": b"1", "VALUE_SIZE": str(len(data)).encode(),
            "VALUE_SHA256": hashlib.sha256(data).hexdigest().encode()}


async def test_forged_dead_letters_are_shown_literally_and_never_replayed_elsewhere(
        catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    other: TestCatalogue = await catalogue_factory(partitions=1)  # a real, foreign topic
    dlq = f"{tc.topic}.dlq"
    assert await produce(tc.settings, tc.topic, [(b"ok", b"the original", [])]) == [0]
    huge_message = ("x" * 200_000).encode()
    letters: list[Record] = [
        (b"k", b"foreign", forged(other.topic)),                                    # 0
        (b"k", b"absurd", forged(tc.topic, DEAD_AT_MS=b"1e17", PARTITION=b"-1",
                                 OFFSET=b"abc")),                                   # 1
        (b"k", b"far", forged(tc.topic, DEAD_AT_MS=b"100000000000000000",
                              OFFSET=b"-5", TIMESTAMP=b"9" * 40)),                  # 2
        (b"k", b"markup", forged(tc.topic, STAGE=b"[bold red]x[/]",
                                 ERROR_CLASS=b"[link=https://evil.example/]y[/link]",
                                 ERROR_MESSAGE=b"[/] unbalanced [/bold]",
                                 WORKER=b"\x1b[31mred\x1b[0m")),                    # 3
        (b"k", b"bytes", forged(tc.topic, STAGE=b"\xff\xfe", ERROR_MESSAGE=b"bad \xc3\x28",
                                WORKER=b"\x80")),                                   # 4
        (b"k", b"bad topic", forged(b"\xff" + tc.topic.encode())),                  # 5
        (b"k", b"no topic", forged(None)),                                          # 6
        (b"k", b"excerpt", forged(tc.topic, **cut(b"something else"))),             # 7
        (b"ok", b"excerpt", forged(tc.topic, **cut(b"the original"))),              # 8
        (b"k", b"excerpt", forged(tc.topic, OFFSET=b"1000000000000",
                                  **cut(b"the original"))),                         # 9
        (b"k", b"huge", forged(tc.topic, ERROR_MESSAGE=huge_message)),              # 10
    ]
    assert await produce(tc.settings, dlq, letters) == list(range(11))

    # inspect --json: every record, unreadable values as null, text as sent.
    out = sinkfleet(tc, "dlq", "inspect", "--topic", tc.topic, "--json")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    data = json.loads(out.stdout)
    assert data["scanned"] == data["matched"] == 11
    recs = data["records"]
    assert [r["dlq_offset"] for r in recs] == list(range(11))
    assert recs[0]["topic"] == other.topic
    assert (recs[1]["dead_at"], recs[1]["partition"], recs[1]["offset"]) == (None, None, None)
    assert (recs[2]["dead_at"], recs[2]["offset"]) == (None, None)
    assert recs[3]["stage"] == "[bold red]x[/]"
    assert recs[3]["error_class"] == "[link=https://evil.example/]y[/link]"
    assert recs[3]["error_message"] == "[/] unbalanced [/bold]"
    assert recs[3]["worker"] == "\x1b[31mred\x1b[0m"
    assert (recs[4]["stage"], recs[4]["error_message"]) == ("\\xff\\xfe", "bad \\xc3(")
    assert recs[5]["topic"] == "\\xff" + tc.topic and recs[6]["topic"] is None
    assert recs[7]["truncated"]["value"] == {
        "size": 14, "sha256": hashlib.sha256(b"something else").hexdigest()}
    assert recs[0]["truncated"] == {"key": None, "value": None}
    assert base64.b64decode(recs[8]["value"]) == b"excerpt"
    assert len(recs[10]["error_message"]) < 20_000  # shown bounded, not 200 KB
    assert {(s["stage"], s["count"]) for s in data["summary"]} >= {("[bold red]x[/]", 1)}

    # inspect as a table: markup printed as text, no terminal escapes.
    out = sinkfleet(tc, "dlq", "inspect", "--topic", tc.topic)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "[bold red]x[/]" in out.stdout and "[link=https://evil.example/]y" in out.stdout
    assert "\x1b" not in out.stdout
    assert "11 matching dead letter(s) of 11" in out.stdout

    # replay: dry run, then for real; refused ones named, counted and left.
    replayable, refused = [1, 2, 3, 4, 8, 10], [0, 5, 6, 7, 9]
    for args in ((), ("--apply",)):
        out = sinkfleet(tc, "dlq", "replay", "--topic", tc.topic, "--json", *args)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        result = json.loads(out.stdout)
        assert (result["replayed"], result["refused"], result["left"]) == (6, 5, 5)
        assert [r["dlq_offset"] for r in result["records"]] == replayable
        reasons = {r["dlq_offset"]: r["reason"] for r in result["refusals"]}
        assert sorted(reasons) == refused
    assert f"{other.topic!r} is not a source topic of {dlq}" in reasons[0]
    assert "is not a source topic" in reasons[5]
    assert "no sinkfleet.topic header" in reasons[6]
    assert f"{tc.topic}[0]@0 is not the original" in reasons[7]
    assert f"the original {tc.topic}[0]@1000000000000 is not in the topic" in reasons[9]

    assert await read_topic(other.settings, other.topic) == []  # never sent elsewhere
    records = await read_topic(tc.settings, tc.topic)
    sent = {replayed_from(m): (m.key, m.value) for m in records if replayed_from(m)}
    assert len(records) == 7 and set(sent) == {f"{dlq}:0:{i}" for i in replayable}
    assert sent[f"{dlq}:0:8"] == (b"ok", b"the original")  # re-read, not the excerpt
    assert sent[f"{dlq}:0:3"] == (b"k", b"markup")

    # Again: nothing twice; the refused ones are still refused, by line.
    out = sinkfleet(tc, "dlq", "replay", "--topic", tc.topic, "--apply")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"refused {dlq}[0]@0: sinkfleet.topic {other.topic!r} is not a source" in out.stdout
    assert "no sinkfleet.topic header" in out.stdout
    assert ("nothing to replay; 6 replayed before, 5 left in the dead-letter topic"
            " (5 refused: see above)") in out.stdout
    assert len(await read_topic(tc.settings, tc.topic)) == 7
