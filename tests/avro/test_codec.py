"""Framing and codec: round trips, and wire compatibility with the apache `avro` package."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import avro.io
import avro.schema
import pytest
from avro.schema import _crc_64_fingerprint
from fastavro.schema import to_parsing_canonical_form

from sinkfleet.avro import Codec, SchemaStore, parse_frame, schema_fingerprint
from sinkfleet.avro.framing import frame_confluent
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import DecodeError, ValidationError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "experience_event.avsc").read_text())


@pytest.fixture
def codec() -> Codec:
    return Codec(SCHEMA, SchemaStore())


def _events(n: int = 50) -> list[dict]:
    load = ExperienceLoad(seed=7)
    return [next(load) for _ in range(n)]


def _apache_record(event: dict) -> dict:
    # The apache package wants a datetime for timestamp-micros.
    ts = datetime.fromtimestamp(event["timestamp"] / 1_000_000, tz=UTC)
    return {**event, "timestamp": ts.replace(microsecond=event["timestamp"] % 1_000_000)}


def test_single_object_round_trip(codec: Codec) -> None:
    for event in _events():
        framed = codec.encode(event)
        assert framed[:2] == b"\xc3\x01"
        assert framed[2:10] == codec.fingerprint
        decoded = codec.decode(framed)
        assert decoded["event_id"] == event["event_id"]
        assert int(decoded["timestamp"].timestamp() * 1_000_000) == pytest.approx(
            event["timestamp"], abs=1)
        assert decoded["state"] == event["state"]
        assert decoded["reward"] == event["reward"]
        assert decoded["action_metadata"] == event["action_metadata"]


def test_fingerprint_matches_apache_avro() -> None:
    # A schema without logical types: both libraries agree byte for byte.
    plain = json.loads(json.dumps(SCHEMA))
    plain["fields"][1]["type"] = "long"
    parsed = avro.schema.parse(json.dumps(plain))
    assert Codec(plain, SchemaStore()).fingerprint == parsed.fingerprint("CRC-64-AVRO")


def test_canonical_form_strips_logical_types_as_the_spec_and_java_do() -> None:
    # The spec's [STRIP] + [PRIMITIVES] rules turn {"type":"long","logicalType":...} into
    # "long" (as Java's SchemaNormalization does); the Python `avro` package keeps
    # {"type":"long"}, so its fingerprint of such schemas differs. We follow the spec.
    codec = Codec(SCHEMA, SchemaStore())
    canonical = to_parsing_canonical_form(codec.schema)
    assert '{"name":"timestamp","type":"long"}' in canonical
    assert codec.fingerprint == _crc_64_fingerprint(canonical.encode())
    assert len(schema_fingerprint(codec.schema)) == 8


def test_apache_avro_reads_what_fastavro_wrote(codec: Codec) -> None:
    parsed = avro.schema.parse(json.dumps(SCHEMA))
    reader = avro.io.DatumReader(parsed)
    for event in _events():
        framed = codec.encode(event)
        frame = parse_frame(framed)
        decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(framed[frame.body_offset:])))
        assert decoded["event_id"] == event["event_id"]
        assert decoded["agent_id"] == event["agent_id"]
        assert decoded["episode_id"] == event["episode_id"]
        assert decoded["state"] == pytest.approx(event["state"])
        assert decoded["action_metadata"] == event["action_metadata"]


def test_fastavro_reads_what_apache_avro_wrote(codec: Codec) -> None:
    parsed = avro.schema.parse(json.dumps(SCHEMA))
    writer = avro.io.DatumWriter(parsed)
    for event in _events():
        buf = io.BytesIO()
        writer.write(_apache_record(event), avro.io.BinaryEncoder(buf))
        framed = b"\xc3\x01" + codec.fingerprint + buf.getvalue()
        decoded = codec.decode(framed)
        assert decoded["event_id"] == event["event_id"]
        assert decoded["step_number"] == event["step_number"]
        assert decoded["state"] == event["state"]
        assert decoded["reward"] == event["reward"]


def test_confluent_wire_format_is_decoded(codec: Codec) -> None:
    event = _events(1)[0]
    body = codec.encode(event)[10:]
    codec.store.add(SCHEMA, schema_id=42)
    decoded = codec.decode(frame_confluent(42, body))
    assert decoded["event_id"] == event["event_id"]


def test_confluent_without_registry_is_a_clear_error(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="schema id 7.*no schema registry"):
        codec.decode(frame_confluent(7, b"\x00"))


@pytest.mark.parametrize("payload, match", [
    (None, "tombstone"),
    (b"", "unknown framing"),
    (b"\x01\x02\x03", "unknown framing"),
    (b"\xc3\x01" + b"\x00" * 8 + b"\x00", "unknown writer schema"),
])
def test_bad_frames_are_decode_errors(codec: Codec, payload: bytes | None, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.decode(payload)


def test_length_prefix_larger_than_message_fails_fast(codec: Codec) -> None:
    # event_id (16 bytes) + timestamp, then agent_id claims ~2^62 bytes.
    body = b"\x00" * 16 + b"\x02" + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + b"x"
    started = time.monotonic()
    with pytest.raises(DecodeError, match="does not decode"):
        codec.decode(b"\xc3\x01" + codec.fingerprint + body)
    assert time.monotonic() - started < 0.5


def test_truncated_and_trailing_bytes_are_refused(codec: Codec) -> None:
    framed = codec.encode(_events(1)[0])
    with pytest.raises(DecodeError):
        codec.decode(framed[:-3])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(framed + b"\x00\x00")


def test_zero_width_array_schema_is_refused() -> None:
    hostile = {"type": "record", "name": "H", "fields": [
        {"name": "a", "type": {"type": "array", "items": "null"}}]}
    with pytest.raises(DecodeError, match="zero-width"):
        SchemaStore().add(hostile)


def test_invalid_record_is_a_validation_error_naming_the_field(codec: Codec) -> None:
    event = _events(1)[0]
    event["episode_id"] = "not a number"
    with pytest.raises(ValidationError, match="episode_id"):
        codec.encode(event)
    del event["episode_id"]
    with pytest.raises(ValidationError):
        codec.encode(event)


def test_old_writer_schema_resolves_into_reader_schema() -> None:
    old = json.loads(json.dumps(SCHEMA))
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("flags", "action_metadata")]
    store = SchemaStore()
    old_codec = Codec(old, store)
    new_codec = Codec(SCHEMA, store)
    event = _events(1)[0]
    event.pop("flags")
    event.pop("action_metadata")
    decoded = new_codec.decode(old_codec.encode(event))
    assert decoded["flags"] == 0
    assert decoded["action_metadata"] is None
    assert decoded["event_id"] == event["event_id"]
