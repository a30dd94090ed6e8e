"""Hostile schemas, payload builders and the decode property shared by the fuzz tests."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.errors import DecodeError

ROOT = Path(__file__).resolve().parents[2]
EXPERIENCE = json.loads((ROOT / "schemas" / "experience_event.avsc").read_text())

# Arrays of maps of records, with every kind of length-prefixed or indexed value inside.
NESTED = {"type": "record", "name": "Nested", "fields": [
    {"name": "groups", "type": {"type": "array", "items": {"type": "map", "values": {
        "type": "record", "name": "Leaf", "fields": [
            {"name": "x", "type": "int"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "f", "type": {"type": "fixed", "name": "F4", "size": 4}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {"name": "u", "type": ["null", "double", "bytes"]},
            {"name": "pts", "type": {"type": "array", "items": {
                "type": "record", "name": "Pt", "fields": [
                    {"name": "a", "type": "float"}, {"name": "b", "type": "boolean"}]}}},
        ]}}}},
]}
# Recursive: nesting grows with the payload, so decoding goes through the depth-limited walk.
TREE = {"type": "record", "name": "Tree", "fields": [
    {"name": "v", "type": "long"},
    {"name": "kids", "type": {"type": "array", "items": "Tree"}},
    {"name": "next", "type": ["null", "Tree"]},
    {"name": "attrs", "type": {"type": "map", "values": ["null", "string", "Tree"]}},
]}
LIST = {"type": "record", "name": "Node", "fields": [
    {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}
# A newer writer whose extra fields the reader drops: fastavro *skips* them, and its skip
# functions for float/double/boolean/fixed never notice the end of the input.
NARROW = {"type": "record", "name": "Wide", "fields": [{"name": "id", "type": "long"}]}
WIDE = {"type": "record", "name": "Wide", "fields": [
    {"name": "id", "type": "long"},
    {"name": "floats", "type": {"type": "array", "items": "float"}},
    {"name": "hashes", "type": {"type": "array", "items": {
        "type": "fixed", "name": "H", "size": 8}}},
    {"name": "pairs", "type": {"type": "array", "items": {
        "type": "record", "name": "P", "fields": [
            {"name": "x", "type": "double"}, {"name": "ok", "type": "boolean"}]}}},
    {"name": "names", "type": {"type": "map", "values": "string"}},
]}

TIME_BUDGET = 0.25  # seconds per decode; a hang or a spin shows up as a failure
MEMORY_BUDGET = 4 * 1024 * 1024  # tracemalloc peak per decode of a small hostile payload


def zigzag(n: int) -> bytes:
    """Avro's varint encoding of a (64-bit) long."""
    u = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while True:
        b, u = u & 0x7F, u >> 7
        if not u:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def codecs() -> dict[str, Codec]:
    """One codec per hostile shape, each with the writer schemas it may meet."""
    out = {"experience": Codec(EXPERIENCE, SchemaStore()),
           "nested": Codec(NESTED, SchemaStore()),
           "tree": Codec(TREE, SchemaStore()),
           "list": Codec(LIST, SchemaStore())}
    store = SchemaStore()
    out["wide"] = Codec(WIDE, store)  # writer
    out["narrow"] = Codec(NARROW, store)  # reader: decodes WIDE bodies by skipping
    for codec in out.values():  # Confluent framing, schema id 1: the writer is the schema
        codec.store.add(codec.schema, schema_id=1)
    store.add(WIDE, schema_id=2)
    return out


def check_message(exc: DecodeError) -> None:
    """Dead-letter headers carry this text: one short line, no object reprs."""
    text = str(exc)
    assert text, "empty DecodeError"
    assert "\n" not in text, text
    assert len(text) <= 240, text
    assert " object at 0x" not in text, text


def decodes_or_refuses(codec: Codec, payload: bytes | None) -> Any:
    """The property: a dict or a DecodeError, nothing else, within the time budget."""
    collecting = gc.isenabled()
    gc.disable()  # a collection of the test run's garbage is not the decoder's time
    started = time.perf_counter()
    try:
        record = codec.decode(payload)
    except DecodeError as exc:
        check_message(exc)
        record = None
    else:
        assert isinstance(record, dict)
    finally:
        elapsed = time.perf_counter() - started
        if collecting:
            gc.enable()
    assert elapsed < TIME_BUDGET, f"decode took {elapsed:.3f}s"
    return record


def peak_memory(codec: Codec, payload: bytes) -> int:
    """tracemalloc peak while decoding ``payload`` (the payload itself is not counted)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        decodes_or_refuses(codec, payload)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
