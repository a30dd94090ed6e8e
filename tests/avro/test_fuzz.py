"""Fuzz the decoder and the framing with hostile bytes (hypothesis, deterministic).

The property everywhere: ``Codec.decode`` returns a dict or raises ``DecodeError`` with a
short one-line message — nothing else, never slower than a fraction of a second, never
more than a few MB of memory for a small payload. ``derandomize=True`` makes every run
(and CI) try the same examples.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinkfleet.avro import parse_frame
from sinkfleet.avro.framing import frame_confluent, frame_single_object
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import DecodeError
from tests.support.avro_hostile import (
    MEMORY_BUDGET,
    check_message,
    codecs,
    decodes_or_refuses,
    peak_memory,
    zigzag,
)

FUZZ = settings(derandomize=True, database=None, deadline=timedelta(milliseconds=500),
                max_examples=1000, suppress_health_check=[HealthCheck.too_slow])

CODECS = codecs()
HOSTILE = ["experience", "nested", "tree", "list", "narrow"]  # the reading side
# Counts and lengths a hostile writer would pick: huge, negative, the int64 extremes.
INTERESTING = [0, 1, -1, 2, 3, 8, 127, 128, 2**31 - 1, -2**31, 2**40, -2**40, 2**62, -2**62,
               2**63 - 1, -2**63]


def _headers(name: str) -> list[bytes]:
    codec = CODECS[name]
    heads = [frame_single_object(codec.fingerprint, b""), frame_confluent(1, b"")]
    if name == "narrow":  # a WIDE writer, which the NARROW reader resolves by skipping
        heads += [frame_single_object(CODECS["wide"].fingerprint, b""), frame_confluent(2, b"")]
    return heads


_small_token = st.one_of(
    st.sampled_from(INTERESTING).map(zigzag),
    st.integers(-2**63, 2**63 - 1).map(zigzag),
    st.binary(max_size=12),
    st.sampled_from([b"\xff" * 10 + b"\x01",  # an 11-byte varint
                     b"\x80" * 16,  # a varint that never ends
                     b"\x04\xff\xfe",  # a 2-byte string that is not UTF-8
                     b"\x00", b"\x02"]),
)
# Plus a short pattern repeated: deep nesting of a recursive schema, long runs of items.
_token = st.one_of(_small_token, st.tuples(
    st.binary(min_size=1, max_size=3), st.integers(1, 6000)).map(lambda t: t[0] * t[1]))
hostile_bodies = st.lists(_token, max_size=24).map(b"".join)
small_hostile_bodies = st.lists(_small_token, max_size=24).map(b"".join)  # ≤ ~300 bytes


@st.composite
def framed(draw: st.DrawFn, small: bool = False) -> tuple[str, bytes]:
    name = draw(st.sampled_from(HOSTILE))
    head = draw(st.sampled_from(_headers(name)))
    body = small_hostile_bodies if small else hostile_bodies
    return name, head + draw(st.one_of(body, st.binary(max_size=300)))


def _valid_messages() -> list[tuple[str, bytes]]:
    load = ExperienceLoad(seed=11)
    out = [("experience", CODECS["experience"].encode(next(load))) for _ in range(12)]
    leaf = {"x": -5, "tags": ["a", "ü", ""], "f": b"abcd", "e": "C", "u": b"\x00\xff",
            "pts": [{"a": 1.5, "b": True}, {"a": -0.0, "b": False}]}
    out.append(("nested", CODECS["nested"].encode(
        {"groups": [{"k": leaf, "kk": {**leaf, "u": None}}, {}, {"z": {**leaf, "u": 2.5}}]})))
    tree: dict[str, Any] = {"v": 1, "kids": [], "next": None, "attrs": {}}
    for depth in range(6):
        tree = {"v": depth, "kids": [tree, {"v": -1, "kids": [], "next": None, "attrs": {}}],
                "next": tree if depth % 2 else None, "attrs": {"s": "x", "t": tree, "n": None}}
    out.append(("tree", CODECS["tree"].encode(tree)))
    node: dict[str, Any] | None = None
    for i in range(20):
        node = {"v": i, "next": node}
    out.append(("list", CODECS["list"].encode(node)))
    out.append(("narrow", CODECS["wide"].encode(
        {"id": 7, "floats": [1.0, 2.0, 3.0], "hashes": [b"12345678"],
         "pairs": [{"x": 1.0, "ok": True}] * 3, "names": {"a": "b"}})))
    return out


VALID = _valid_messages()


@st.composite
def mutated(draw: st.DrawFn, small: bool = False) -> tuple[str, bytes]:
    """A valid message with 1-4 of: bit flips, truncation, insertion, deletion, a length
    or count overwritten with a hostile varint, a slice duplicated."""
    name, message = draw(st.sampled_from(VALID))
    data = bytearray(message)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "varint", "dup"]))
        lo = 10 if op != "flip" and len(data) > 10 else 0  # mostly keep the header
        pos = draw(st.integers(lo, max(lo, len(data))))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            bodies = small_hostile_bodies if small else hostile_bodies
            data[pos:pos] = draw(st.one_of(bodies, st.binary(min_size=1, max_size=8)))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "varint":  # overwrite the varint starting at pos
            end = pos
            while end < len(data) and data[end] & 0x80:
                end += 1
            data[pos:end + 1] = zigzag(draw(st.sampled_from(INTERESTING)))
        elif op == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 32))]
    return name, bytes(data)


def test_valid_messages_decode() -> None:
    for name, message in VALID:
        assert isinstance(CODECS[name].decode(message), dict), name


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_into_experience_event(payload: bytes) -> None:
    decodes_or_refuses(CODECS["experience"], payload)


@FUZZ
@given(framed())
def test_framed_hostile_bodies(case: tuple[str, bytes]) -> None:
    name, payload = case
    decodes_or_refuses(CODECS[name], payload)


@FUZZ
@given(mutated())
def test_mutated_valid_messages(case: tuple[str, bytes]) -> None:
    name, payload = case
    decodes_or_refuses(CODECS[name], payload)


@FUZZ
@given(st.one_of(st.binary(max_size=64),
                 st.binary(max_size=32).map(lambda b: b"\xc3\x01" + b),
                 st.binary(max_size=32).map(lambda b: b"\x00" + b)))
def test_parse_frame_on_arbitrary_bytes(payload: bytes) -> None:
    try:
        frame = parse_frame(payload)
    except DecodeError as exc:
        check_message(exc)
        return
    assert frame.body_offset <= len(payload)
    if frame.kind == "single-object":
        assert payload[:2] == b"\xc3\x01" and frame.fingerprint == payload[2:10]
        assert frame.body_offset == 10
    else:
        assert payload[0] == 0 and frame.body_offset == 5
        assert frame.schema_id == int.from_bytes(payload[1:5], "big")


def test_parse_frame_refuses_a_tombstone() -> None:
    with pytest.raises(DecodeError, match="tombstone"):
        parse_frame(None)


@settings(FUZZ, max_examples=300)
@given(st.one_of(framed(small=True), mutated(small=True)))
def test_small_hostile_payloads_stay_within_a_few_megabytes(case: tuple[str, bytes]) -> None:
    # At most a few KB claiming 2**62 items or bytes: nothing may be allocated by count.
    name, payload = case
    assert len(payload) < 8192
    assert peak_memory(CODECS[name], payload) < MEMORY_BUDGET
