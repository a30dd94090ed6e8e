"""Avro message framings (pure, no I/O).

* Single-object encoding (Avro spec): ``C3 01`` + 8-byte little-endian CRC-64-AVRO
  fingerprint of the writer schema's parsing canonical form + body.
* Confluent wire format: ``00`` + 4-byte big-endian schema-registry id + body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sinkfleet.errors import DecodeError

SOE_MAGIC = b"\xc3\x01"
SOE_HEADER_LEN = 10
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_LEN = 5


@dataclass(frozen=True, slots=True)
class Frame:
    """Where the writer schema of a message is named, and where its body starts."""

    kind: Literal["single-object", "confluent"]
    fingerprint: bytes | None  # single-object
    schema_id: int | None  # confluent
    body_offset: int


def frame_single_object(fingerprint: bytes, body: bytes) -> bytes:
    if len(fingerprint) != 8:
        raise ValueError("a CRC-64-AVRO fingerprint is 8 bytes")
    return SOE_MAGIC + fingerprint + body


def frame_confluent(schema_id: int, body: bytes) -> bytes:
    if not 0 <= schema_id < 2**31:
        raise ValueError(f"schema id {schema_id} is out of range")
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big") + body


def parse_frame(payload: bytes | None) -> Frame:
    """Recognise the framing of ``payload``; raise ``DecodeError`` on anything else."""
    if payload is None:
        raise DecodeError("record has no value (tombstone) where an Avro record was expected")
    n = len(payload)
    if n >= SOE_HEADER_LEN and payload[0] == 0xC3 and payload[1] == 0x01:
        return Frame("single-object", bytes(payload[2:10]), None, SOE_HEADER_LEN)
    if n >= CONFLUENT_HEADER_LEN and payload[0] == CONFLUENT_MAGIC:
        return Frame("confluent", None, int.from_bytes(payload[1:5], "big"), CONFLUENT_HEADER_LEN)
    head = bytes(payload[:4]).hex() or "empty"
    raise DecodeError(
        f"unknown framing (first bytes {head}, {n} bytes): expected Avro single-object"
        " (c301…) or Confluent (00…) encoding"
    )
