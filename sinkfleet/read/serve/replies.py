"""JSON bodies, ETags and the errors of the read service (pure)."""

from __future__ import annotations

import hashlib
import json
import uuid
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from sinkfleet.errors import (
    CatalogueError,
    ConfigError,
    MigrationError,
    SinkfleetError,
    StorageUnavailable,
)

JSON = "application/json"


def _default(value: Any) -> Any:
    """What orjson does not write itself: bytea as hex (as `sinkfleet query --json`),
    numeric as a string (exact), and asyncpg's UUID (a uuid.UUID subclass, which orjson
    takes for an unknown type)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits inside a jsonb value
        return json.dumps(value, default=_json_default, ensure_ascii=False).encode()


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(_default(value)) if isinstance(value, (bytes, Decimal)) else str(value)


def reply(value: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(body=dumps(value), status=status, content_type=JSON,
                        headers={"Cache-Control": "no-store", **headers})


def error(status: int, message: str, **headers: str) -> web.Response:
    return reply({"error": message}, status, **headers)


def etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110's weak comparison: ``*``, or any listed tag equal with or without W/."""
    if not if_none_match:
        return False
    for item in if_none_match.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/") == tag:
            return True
    return False


def status_of(exc: SinkfleetError) -> int:
    """A sinkfleet error as an HTTP status: the caller's mistake (400, an unknown sink
    404) or the server's trouble (503, retriable)."""
    if isinstance(exc, StorageUnavailable) or exc.retriable:
        return 503
    if isinstance(exc, MigrationError):
        return 500
    if isinstance(exc, CatalogueError) and str(exc).startswith("no sink "):
        return 404
    if isinstance(exc, (ConfigError, CatalogueError)):
        return 400
    return 500
