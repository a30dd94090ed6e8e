"""Each guard of bounded decoding, one by one (the fuzz tests cover them together)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from fastavro import parse_schema

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.bounds import scan_body, skip_can_spin
from sinkfleet.avro.framing import frame_confluent, frame_single_object
from sinkfleet.errors import DecodeError
from tests.support.avro_hostile import (
    EXPERIENCE,
    LIST,
    MEMORY_BUDGET,
    NARROW,
    NESTED,
    ROOT,
    TREE,
    WIDE,
    check_message,
    peak_memory,
    zigzag,
)


def _list(depth: int) -> dict[str, Any] | None:
    node = None
    for i in range(depth):
        node = {"v": i, "next": node}
    return node


# -- message size -----------------------------------------------------------------------

def test_oversized_message_is_refused_before_parsing() -> None:
    codec = Codec(EXPERIENCE, SchemaStore(), max_message_bytes=1000)
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="1001 bytes, over the limit of 1000") as info:
        codec.decode(b"\xff" * 1001)  # not even a known framing: size is checked first
    assert time.perf_counter() - started < 0.1
    check_message(info.value)
    with pytest.raises(DecodeError, match="unknown framing"):
        codec.decode(b"\xff" * 1000)


def test_default_limit_is_8_mib_and_limits_must_be_positive() -> None:
    codec = Codec(EXPERIENCE, SchemaStore())
    assert codec.max_message_bytes == 8 * 1024 * 1024
    with pytest.raises(DecodeError, match="over the limit"):
        codec.decode(frame_single_object(codec.fingerprint, bytes(8 * 1024 * 1024)))
    with pytest.raises(ValueError):
        Codec(EXPERIENCE, SchemaStore(), max_message_bytes=0)
    with pytest.raises(ValueError):
        Codec(EXPERIENCE, SchemaStore(), max_depth=0)


# -- schema admission -------------------------------------------------------------------

@pytest.mark.parametrize("schema, match", [
    ({"type": "record", "name": "T", "fields": [{"name": "c", "type": "T"}]},
     "record T always contains itself"),
    ({"type": "record", "name": "A", "fields": [{"name": "b", "type": {
        "type": "record", "name": "B", "fields": [{"name": "a", "type": ["A"]}]}}]},
     "always contains itself"),
    ({"type": "record", "name": "Z", "fields": [{"name": "c", "type": {
        "type": "array", "items": {"type": "record", "name": "E", "fields": []}}}]},
     "zero-width"),
    ({"type": "record", "name": "Z", "fields": [{"name": "c", "type": {
        "type": "array", "items": {"type": "fixed", "name": "F0", "size": 0}}}]},
     "zero-width"),
    ({"type": "record", "name": "X", "fields": [{"name": "c", "type": "nope"}]},
     "not valid Avro"),
])
def test_unbounded_or_invalid_schemas_are_refused(schema: Any, match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        SchemaStore().add(schema)
    check_message(info.value)


@pytest.mark.parametrize("depth", [101, 100_000])
def test_deep_schemas_are_refused_before_fastavro_parses_them(depth: int) -> None:
    # fastavro's schema parser recurses in C: 100k levels would crash the process.
    node: Any = "int"
    for _ in range(depth):
        node = {"type": "array", "items": node}
    with pytest.raises(DecodeError, match="nests deeper than 100 levels"):
        SchemaStore().add(node)


def test_recursive_schemas_with_an_exit_are_admitted() -> None:
    for schema in (LIST, TREE):
        SchemaStore().add(schema)


# -- recursive schemas: depth-limited walk ----------------------------------------------

def test_recursive_values_decode_up_to_the_depth_limit() -> None:
    codec = Codec(LIST, SchemaStore())  # max_depth 100: record + union per node
    assert codec.decode(codec.encode(_list(50)))["v"] == 49
    with pytest.raises(DecodeError, match="nests deeper than 100 levels") as info:
        codec.decode(codec.encode(_list(51)))
    check_message(info.value)
    deeper = Codec(LIST, SchemaStore(), max_depth=300)
    assert deeper.decode(deeper.encode(_list(150)))["v"] == 149
    with pytest.raises(ValueError, match="between 1 and 300"):
        Codec(LIST, SchemaStore(), max_depth=301)


def test_depth_bomb_fails_fast_without_touching_fastavro() -> None:
    codec = Codec(LIST, SchemaStore())
    bomb = frame_single_object(codec.fingerprint, b"\x00\x02" * 1_000_000 + b"\x00\x00")
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="nests deeper"):
        codec.decode(bomb)
    assert time.perf_counter() - started < 0.2


def test_walk_is_stricter_than_fastavro() -> None:
    parsed = parse_schema(LIST)
    named = {"Node": parsed}
    valid = b"\x02\x02\x04\x00"  # v=1, next -> {v=2, next=null}
    assert scan_body(valid, 0, parsed, named) == len(valid)
    for body, match in [
        (b"\x02\x01\x04\x00", "union branch -1"),  # fastavro would pick the last branch
        (b"\x02\x04", "union branch 2"),
        (b"\xff" * 10 + b"\x01\x00", "longer than 10 bytes"),
        (b"\x02\x02", "ends inside a number"),
    ]:
        with pytest.raises(DecodeError, match=match):
            scan_body(body, 0, parsed, named)
    tree = parse_schema(TREE)
    tree_named = {"Tree": tree}
    # kids: a block of -1 items claiming 5 bytes, holding a 4-byte Tree.
    kid = b"\x02\x00\x00\x00"
    assert scan_body(b"\x02\x01" + zigzag(4) + kid + b"\x00\x00\x00", 0, tree, tree_named)
    with pytest.raises(DecodeError, match="block size 5 that does not match"):
        scan_body(b"\x02\x01" + zigzag(5) + kid + b"\x00\x00\x00", 0, tree, tree_named)


# -- skipping dropped writer fields -----------------------------------------------------

def test_skip_can_spin_only_for_dropped_arrays_of_unchecked_items() -> None:
    def parsed(s: Any) -> Any:
        return parse_schema(json.loads(json.dumps(s)))

    assert skip_can_spin(parsed(WIDE), parsed(NARROW))
    assert not skip_can_spin(parsed(NARROW), parsed(WIDE))  # nothing dropped
    assert not skip_can_spin(parsed(WIDE), parsed(WIDE))
    strings_only = {**WIDE, "fields": [WIDE["fields"][0], WIDE["fields"][4]]}
    assert not skip_can_spin(parsed(strings_only), parsed(NARROW))  # strings raise at EOF
    older = json.loads(json.dumps(EXPERIENCE))
    older["fields"] = [f for f in older["fields"] if f["name"] != "flags"]
    assert not skip_can_spin(parsed(older), parsed(EXPERIENCE))
    assert skip_can_spin(parsed(EXPERIENCE), parsed(older)) is False  # flags is an int
    no_state = json.loads(json.dumps(EXPERIENCE))
    no_state["fields"] = [f for f in no_state["fields"] if f["name"] != "state"]
    assert skip_can_spin(parsed(EXPERIENCE), parsed(no_state))  # drops array<float>


@pytest.mark.parametrize("field", ["floats", "hashes", "pairs"])
def test_dropped_array_with_a_huge_count_fails_fast(field: str) -> None:
    store = SchemaStore()
    writer, reader = Codec(WIDE, store), Codec(NARROW, store)
    counts = {"floats": b"\x00", "hashes": b"\x00", "pairs": b"\x00", "names": b"\x00"}
    counts[field] = zigzag(2**62)
    body = zigzag(7) + b"".join(counts.values()) + b"\x00" * 8
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="ends early") as info:
        reader.decode(frame_single_object(writer.fingerprint, body))
    assert time.perf_counter() - started < 0.2
    check_message(info.value)


def test_dropped_fields_are_skipped_correctly() -> None:
    store = SchemaStore()
    writer, reader = Codec(WIDE, store), Codec(NARROW, store)
    record = {"id": 5, "floats": [1.0] * 10, "hashes": [b"abcdefgh"], "names": {"a": "b"},
              "pairs": [{"x": 2.0, "ok": False}]}
    assert reader.decode(writer.encode(record)) == {"id": 5}


# -- the cases that crash or hang the process without the guards -----------------------

def test_crash_and_hang_cases_in_a_subprocess() -> None:
    # Without the guards: a segfault (C stack overflow) and an hours-long spin. Run apart
    # so a regression fails this test instead of killing or stalling the test run.
    script = textwrap.dedent("""
        from sinkfleet.avro import Codec, SchemaStore
        from sinkfleet.avro.framing import frame_single_object
        from sinkfleet.errors import DecodeError
        from tests.support.avro_hostile import LIST, NARROW, TREE, WIDE, zigzag

        def refused(codec, body, fp=None):
            try:
                codec.decode(frame_single_object(fp or codec.fingerprint, body))
            except DecodeError:
                return
            raise SystemExit("decoded?")

        lst, tree = Codec(LIST, SchemaStore()), Codec(TREE, SchemaStore())
        refused(lst, b"\\x00\\x02" * 200_000 + b"\\x00\\x00")
        refused(tree, b"\\x00\\x02" * 200_000)  # kids[0].kids[0]...
        refused(tree, b"\\x00\\x00\\x02" * 200_000)  # next.next...
        refused(tree, (b"\\x00\\x00\\x00\\x02\\x02k\\x04") * 100_000)  # attrs["k"]...
        store = SchemaStore()
        wide, narrow = Codec(WIDE, store), Codec(NARROW, store)
        refused(narrow, zigzag(1) + zigzag(2**62) + bytes(8), wide.fingerprint)
        try:
            SchemaStore().add({"type": "record", "name": "T", "fields": [
                {"name": "c", "type": "T"}]})
        except DecodeError:
            print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # cwd: `tests` and `sinkfleet` import
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "ok"


# -- memory: counts and lengths claiming far more than the message holds ----------------

@pytest.mark.parametrize("claim", [2**31, 2**40, 2**62, 2**63 - 1, -(2**62), -(2**63)])
def test_huge_counts_and_lengths_allocate_nothing(claim: int) -> None:
    big = zigzag(claim)
    experience = Codec(EXPERIENCE, SchemaStore())
    head = b"\x00" * 16 + b"\x02"  # event_id, timestamp
    ints = b"\x02" * 5  # episode_id … flags
    bodies = {
        "agent_id length": head + big + b"abc",
        "state count": head + b"\x02a" + ints + big + b"\x00" * 12,
        "state block size": head + b"\x02a" + ints + zigzag(-8) + big + b"\x00" * 12,
        "parameters length": head + b"\x02a" + ints + b"\x00\x00" + b"\x00" * 16 + b"\x02"
        + b"\x02" + b"\x00\x00" + big,
    }
    for what, body in bodies.items():
        payload = frame_single_object(experience.fingerprint, body)
        assert peak_memory(experience, payload) < MEMORY_BUDGET, what
    nested = Codec(NESTED, SchemaStore())
    entry = b"\x02\x02\x02k"  # one group, one map entry "k", then a Leaf
    leaf = b"\x02\x00abcd\x00"  # x, tags [], f, e
    bodies = {"groups count": big, "map count": b"\x02" + big, "key length": b"\x02\x02" + big,
              "tags count": entry + b"\x02" + big, "tag length": entry + b"\x02\x02" + big,
              "u bytes length": entry + leaf + b"\x04" + big,
              "pts count": entry + leaf + b"\x00" + big}
    for what, body in bodies.items():
        payload = frame_single_object(nested.fingerprint, body + b"\x00" * 8)
        assert peak_memory(nested, payload) < MEMORY_BUDGET, what


# -- messages ---------------------------------------------------------------------------

def _experience_body(**overrides: bytes) -> bytes:
    parts = {"event_id": b"\x00" * 16, "timestamp": b"\x02", "agent_id": b"\x02a",
             "ints": b"\x02" * 5, "state": b"\x00", "action": b"\x00",
             "reward": b"\x00" * 16, "policy": b"\x02", "metadata": b"\x00"}
    parts.update(overrides)
    return b"".join(parts.values())


@pytest.mark.parametrize("body, match", [
    (_experience_body()[:-3], "ends early"),
    (_experience_body(agent_id=b"\x04\xff\xfe"), "not valid UTF-8"),
    (_experience_body(metadata=b"\x04"), "union branch or enum index out of range"),
    (_experience_body(timestamp=zigzag(2**62)),
     "cannot be stored exactly: timestamp-micros 4611686018427387904 is after"),
    (_experience_body() + b"\x00", "1 trailing bytes"),
])
def test_decode_errors_are_short_and_say_why(body: bytes, match: str) -> None:
    codec = Codec(EXPERIENCE, SchemaStore())
    assert isinstance(codec.decode(frame_single_object(codec.fingerprint,
                                                       _experience_body())), dict)
    with pytest.raises(DecodeError, match=match) as info:
        codec.decode(frame_single_object(codec.fingerprint, body))
    check_message(info.value)
    assert "body does not decode as" in str(info.value) or "trailing" in str(info.value)


def test_resolution_errors_do_not_dump_schemas() -> None:
    store = SchemaStore()
    writer = Codec({"type": "record", "name": "R", "fields": [
        {"name": "a", "type": {"type": "record", "name": "In", "fields": [
            {"name": "x", "type": "string"}]}}]}, store)
    reader = Codec({"type": "record", "name": "R", "fields": [
        {"name": "a", "type": {"type": "record", "name": "In", "fields": [
            {"name": "x", "type": "int"}]}}]}, store)
    with pytest.raises(DecodeError, match="does not resolve into R") as info:
        reader.decode(writer.encode({"a": {"x": "s"}}))
    check_message(info.value)
    assert "{" not in str(info.value)


# -- the schema registry ----------------------------------------------------------------

def test_registry_schemas_are_checked_and_failures_remembered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = SchemaStore(registry_url="http://registry.invalid")
    codec = Codec(EXPERIENCE, store)
    answers = {7: {"type": "record", "name": "T", "fields": [{"name": "c", "type": "T"}]},
               8: {"type": "record", "name": "Bad", "fields": [{"name": "c", "type": "no"}]}}
    calls: list[int] = []

    def fetch(schema_id: int) -> Any:
        calls.append(schema_id)
        return answers[schema_id]

    monkeypatch.setattr(store, "_fetch", fetch)
    for schema_id, match in [(7, "schema id 7 .registry.: schema record T always"),
                             (8, "schema id 8 .registry.: schema is not valid Avro")]:
        for _ in range(3):
            with pytest.raises(DecodeError, match=match) as info:
                codec.decode(frame_confluent(schema_id, b"\x00"))
            check_message(info.value)
    assert calls == [7, 8]  # each failed id was looked up once, not once per record


def test_registry_outage_is_a_short_decode_error() -> None:
    store = SchemaStore(registry_url="http://127.0.0.1:9", timeout=0.5)
    codec = Codec(EXPERIENCE, store)
    with pytest.raises(DecodeError, match="schema id 3: registry lookup failed") as info:
        codec.decode(frame_confluent(3, b"\x00"))
    check_message(info.value)
