"""Encode and decode framed Avro records with fastavro.

Decoding is bounded: a length or block count larger than the message fails fast
(EOF) instead of allocating, and schemas whose arrays have zero-width items are
refused up front, because a hostile block count there reads no bytes at all.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from sinkfleet.avro.framing import frame_single_object, parse_frame
from sinkfleet.errors import DecodeError, ValidationError


def schema_fingerprint(parsed: Any) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the parsing canonical form."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def _zero_width(schema: Any, named: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    if isinstance(schema, str):
        if schema == "null":
            return True
        if schema in named and schema not in seen:
            return _zero_width(named[schema], named, seen | {schema})
        return False
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            return all(_zero_width(f["type"], named, seen) for f in schema["fields"])
        if kind == "fixed":
            return int(schema.get("size", 1)) == 0
        if isinstance(kind, str | dict) and kind not in ("array", "map", "enum"):
            return _zero_width(kind, named, seen)
    return False


def check_bounded(parsed: Any) -> None:
    """Refuse schemas in which a block count could allocate without reading bytes."""
    named = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "array":
                if _zero_width(node["items"], named):
                    raise DecodeError("schema has an array of zero-width items (e.g. null);"
                                      " it cannot be decoded safely")
                walk(node["items"])
            elif kind == "map":
                walk(node["values"])
            elif kind == "record":
                for f in node["fields"]:
                    walk(f["type"])
            elif isinstance(kind, dict | list):
                walk(kind)

    walk(parsed)


class SchemaStore:
    """Writer schemas by fingerprint (single-object) and registry id (Confluent)."""

    def __init__(self, registry_url: str | None = None, timeout: float = 5.0) -> None:
        self._by_fp: dict[bytes, Any] = {}
        self._by_id: dict[int, Any] = {}
        self._registry = registry_url.rstrip("/") if registry_url else None
        self._timeout = timeout
        self._lock = threading.Lock()

    def add(self, schema: Any, schema_id: int | None = None) -> Any:
        parsed = parse_schema(schema)
        check_bounded(parsed)
        self._by_fp[schema_fingerprint(parsed)] = parsed
        if schema_id is not None:
            self._by_id[schema_id] = parsed
        return parsed

    def by_fingerprint(self, fp: bytes) -> Any:
        try:
            return self._by_fp[fp]
        except KeyError:
            raise DecodeError(f"unknown writer schema (fingerprint {fp.hex()}); add it to"
                              " schemas/ or publish with a schema registry") from None

    def by_id(self, schema_id: int) -> Any:
        parsed = self._by_id.get(schema_id)
        if parsed is not None:
            return parsed
        if self._registry is None:
            raise DecodeError(f"Confluent-framed record with schema id {schema_id}, but no"
                              " schema registry is configured (SINKFLEET_SCHEMA_REGISTRY_URL)")
        with self._lock:
            return self.add(self._fetch(schema_id), schema_id)

    def _fetch(self, schema_id: int) -> Any:
        url = f"{self._registry}/schemas/ids/{schema_id}"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as resp:
                return json.loads(json.loads(resp.read())["schema"])
        except Exception as exc:  # any failure means: this record cannot be decoded now
            raise DecodeError(f"schema id {schema_id}: registry lookup failed: {exc}") from None


class Codec:
    """Encoder/decoder for one record family's current (reader) schema."""

    def __init__(self, schema: Any, store: SchemaStore) -> None:
        self.store = store
        self.schema = store.add(schema)
        self.fingerprint = schema_fingerprint(self.schema)

    def validate(self, record: Any) -> None:
        # The cheap check first: with raise_errors=True fastavro builds (and JSON-encodes)
        # an error for every union branch that does not match, even on valid records.
        if fastavro.validation.validate(record, self.schema, raise_errors=False):
            return
        try:
            fastavro.validation.validate(record, self.schema, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            problems = "; ".join(str(e) for e in exc.errors) or str(exc)
            raise ValidationError(f"record does not match {self.schema['name']}: {problems}"
                                  ) from None

    def encode(self, record: Any, *, validate: bool = True) -> bytes:
        """Single-object encoding of ``record``; ``ValidationError`` if it does not fit."""
        if validate:
            self.validate(record)
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self.schema, record)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ValidationError(f"record does not match {self.schema['name']}: {exc}"
                                  ) from None
        return frame_single_object(self.fingerprint, buf.getvalue())

    def decode(self, payload: bytes | None) -> Any:
        """Decode a single-object or Confluent framed record into the reader schema."""
        frame = parse_frame(payload)
        assert payload is not None
        if frame.fingerprint is not None:
            writer = (self.schema if frame.fingerprint == self.fingerprint
                      else self.store.by_fingerprint(frame.fingerprint))
        else:
            assert frame.schema_id is not None
            writer = self.store.by_id(frame.schema_id)
        body = io.BytesIO(payload)
        body.seek(frame.body_offset)
        try:
            if writer is self.schema:
                record = fastavro.schemaless_reader(body, writer, None)
            else:
                record = fastavro.schemaless_reader(body, writer, self.schema)
        except (EOFError, ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError,
                OverflowError, RecursionError, MemoryError,
                fastavro.read.SchemaResolutionError) as exc:
            raise DecodeError(f"body does not decode as {self.schema['name']}:"
                              f" {type(exc).__name__}: {exc}") from None
        if body.tell() != len(payload):
            raise DecodeError(f"{len(payload) - body.tell()} trailing bytes after the record:"
                              " wrong writer schema or corrupt message")
        return record
