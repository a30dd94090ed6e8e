"""Time-ordered ids for records a producer creates (RFC 9562 UUID version 7).

A UUIDv7 starts with its Unix time in milliseconds, so ids made one after another sort
one after another: a B-tree on the id appends at its right edge instead of splitting
pages all over (docs/storage.md), and the cold archive compresses their shared
prefixes. 74 bits stay random, so two producers never need to coordinate.

>>> event_id = uuid7().bytes   # the 16 bytes of an Avro fixed(16) such as event_id
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable


def uuid7(unix_ms: int | None = None, *,
          randbits: Callable[[int], int] = secrets.randbits) -> uuid.UUID:
    """A version 7 UUID for ``unix_ms`` (default: now); ``randbits`` supplies the 74
    random bits (a seeded ``random.Random().getrandbits`` makes reproducible ids)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"unix_ms {ms} is outside the 48 bits a UUIDv7 holds")
    value = (ms << 80) | (0x7 << 76) | (randbits(12) << 64) | (0b10 << 62) | randbits(62)
    return uuid.UUID(int=value)
