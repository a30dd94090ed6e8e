"""Audit entries: the canonical encoding, content hashes and hash chains (pure).

The canonical encoding is specified in docs/sink-modes.md so that producers in any
language can compute the same SHA-256. It is driven by the Avro schema: the same
value reads the same whether it comes from a producer's dict, from fastavro's
decoder or back from the PostgreSQL row.

Version 2 (``HASH_VERSION``) writes the record as RFC 8785 canonical JSON with exact
numbers (sinkfleet.avro.canonical), so what jsonb gives back hashes as what was sent.
Version 1 (Python's ``json.dumps`` of float-parsed JSON) is kept only so that
`audit verify` accepts rows stored before the change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import struct
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sinkfleet.avro.canonical import CanonicalError, canonical_json, parse_json

ZERO_HASH = bytes(32)
JSON_PROP = "sinkfleet.json"  # a string field whose text is JSON (stored as jsonb)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
HASH_VERSION = 2  # what publishers compute and workers accept
LEGACY_HASH_VERSION = 1  # still accepted by `audit verify` for rows stored before v2

__all__ = ["HASH_VERSION", "LEGACY_HASH_VERSION", "ZERO_HASH", "Canonical", "CanonicalError",
           "canonical_bytes", "canonical_value", "chain_hash", "content_hash", "named_types"]


def named_types(schema: Any, names: dict[str, Any] | None = None,
                namespace: str = "") -> dict[str, Any]:
    """Every named type (record, enum, fixed) of ``schema`` by full and short name."""
    names = {} if names is None else names
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed") and "name" in schema:
            name = schema["name"]
            space = schema.get("namespace", namespace)
            full = name if "." in name or not space else f"{space}.{name}"
            names[full] = names[name.rsplit(".", 1)[-1]] = schema
            namespace = full.rpartition(".")[0]
        if kind in ("record", "error"):
            for field in schema.get("fields", ()):
                named_types(field["type"], names, namespace)
        elif kind == "array":
            named_types(schema["items"], names, namespace)
        elif kind == "map":
            named_types(schema["values"], names, namespace)
        elif isinstance(kind, (dict, list)):
            named_types(kind, names, namespace)
    return names


def _float(value: Any, single: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise CanonicalError(f"expected a number, got {type(value).__name__}")
    out = float(value)
    if single:  # the value a reader decodes from the 4 bytes actually sent
        out = struct.unpack("<f", struct.pack("<f", out))[0]
    if not math.isfinite(out):
        raise CanonicalError("NaN and infinities have no canonical form")
    return out


def _refuse_constant(name: str) -> Any:
    raise CanonicalError(f"JSON constant {name} has no canonical form")


def _timestamp(value: Any, unit: int) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return (value - _EPOCH) // dt.timedelta(microseconds=unit)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise CanonicalError(f"expected a timestamp, got {type(value).__name__}")


def _bytes(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, str):  # already canonical (read back from a jsonb column)
        bytes.fromhex(value)
        return value.lower()
    raise CanonicalError(f"expected bytes, got {type(value).__name__}")


class Canonical:
    """A value already in canonical form: a record or map read back from its jsonb column,
    where a ``sinkfleet.json`` string inside was stored parsed (so it is not text to
    parse again)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def canonical_value(value: Any, avro_type: Any, names: Mapping[str, Any],
                    is_json: bool = False, version: int = HASH_VERSION) -> Any:
    """``value`` of ``avro_type`` as the plain JSON value of the canonical encoding
    (JSON text of ``sinkfleet.json`` strings parsed: exact Decimals from version 2)."""
    if isinstance(value, Canonical):
        return value.value
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if value is None and len(branches) != len(avro_type):
            return None
        if len(branches) != 1:
            raise CanonicalError("only unions of null and one type have a canonical form")
        return canonical_value(value, branches[0], names, is_json, version)
    if isinstance(avro_type, str) and avro_type not in _PRIMITIVES:
        if avro_type not in names:
            raise CanonicalError(f"unknown named type {avro_type!r}")
        return canonical_value(value, names[avro_type], names, is_json, version)
    if isinstance(avro_type, dict):
        logical, kind = avro_type.get("logicalType"), avro_type.get("type")
        if logical == "timestamp-micros":
            return _timestamp(value, 1)
        if logical == "timestamp-millis":
            return _timestamp(value, 1000)
        if logical == "date":
            return (value - _EPOCH_DATE).days if isinstance(value, dt.date) else int(value)
        if logical == "uuid":
            return str(uuid.UUID(str(value)))
        if logical == "decimal":
            return str(value if isinstance(value, Decimal) else Decimal(value))
        if kind in ("record", "error"):
            if not isinstance(value, Mapping):
                raise CanonicalError(f"expected a record, got {type(value).__name__}")
            return {f["name"]: canonical_value(value.get(f["name"]), f["type"], names,
                                               bool(f.get(JSON_PROP)), version)
                    for f in avro_type["fields"]}
        if kind == "enum":
            return str(value)
        if kind == "fixed":
            return _bytes(value)
        if kind == "array":
            return [canonical_value(v, avro_type["items"], names, version=version)
                    for v in value]
        if kind == "map":
            return {str(k): canonical_value(v, avro_type["values"], names, version=version)
                    for k, v in value.items()}
        return canonical_value(value, kind, names, is_json or bool(avro_type.get(JSON_PROP)),
                               version)
    if value is None:
        if avro_type == "null":
            return None
        raise CanonicalError(f"null where the schema wants {avro_type}")
    if avro_type == "boolean":
        return bool(value)
    if avro_type in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CanonicalError(f"expected an integer, got {type(value).__name__}")
        return value
    if avro_type in ("float", "double"):
        return _float(value, avro_type == "float")
    if avro_type == "bytes":
        return _bytes(value)
    if avro_type == "string":
        if not isinstance(value, str):
            if is_json:  # read back from jsonb already parsed
                return _plain_json(value)
            raise CanonicalError(f"expected a string, got {type(value).__name__}")
        if is_json:
            if version >= 2:
                return parse_json(value)
            try:
                return _plain_json(json.loads(value, parse_constant=_refuse_constant))
            except (ValueError, RecursionError) as exc:
                raise CanonicalError(f"not valid JSON: {exc}") from None
        return value
    raise CanonicalError(f"type {avro_type!r} has no canonical form")


def _plain_json(value: Any) -> Any:
    """Check a parsed JSON value: finite numbers only."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CanonicalError("NaN and infinities have no canonical form")
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    return value


def canonical_bytes(record: Mapping[str, Any], schema: dict[str, Any], hash_field: str,
                    names: Mapping[str, Any] | None = None,
                    version: int = HASH_VERSION) -> bytes:
    """The canonical encoding of ``record`` without its ``hash_field``."""
    names = named_types(schema) if names is None else names
    body = {f["name"]: canonical_value(record.get(f["name"]), f["type"], names,
                                       bool(f.get(JSON_PROP)), version)
            for f in schema["fields"] if f["name"] != hash_field}
    if version >= 2:
        return canonical_json(body)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def content_hash(record: Mapping[str, Any], schema: dict[str, Any], hash_field: str,
                 names: Mapping[str, Any] | None = None, version: int = HASH_VERSION
                 ) -> bytes:
    """SHA-256 of the canonical encoding: what an audit record's hash field must hold."""
    return hashlib.sha256(canonical_bytes(record, schema, hash_field, names,
                                          version)).digest()


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    """The link of one entry: SHA-256(previous entry's chain hash ‖ content hash)."""
    return hashlib.sha256(prev_hash + content).digest()
