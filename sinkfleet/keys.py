"""Kafka record keys: a topic's key fields joined with ':' (pure).

``%`` and ``:`` inside a value are percent-encoded, so a key always splits back into
its parts — a state tombstone carries nothing but its key. Values without those two
characters encode to themselves, so keys (and partitions) of ordinary ids are stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sinkfleet.catalogue.models import TopicSpec


def _quote(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A") if ("%" in part or ":" in part) \
        else part


def _unquote(part: str) -> str:
    return part.replace("%3A", ":").replace("%3a", ":").replace("%25", "%") \
        if "%" in part else part


def join_key(parts: Sequence[Any]) -> bytes:
    """Key bytes from the key fields' values (None becomes an empty part)."""
    return ":".join(_quote("" if p is None else str(p)) for p in parts).encode()


def split_key(key: bytes, count: int) -> list[str]:
    """The ``count`` parts of a key made by :func:`join_key`; ValueError otherwise."""
    parts = key.decode("utf-8").split(":")
    if len(parts) != count:
        raise ValueError(f"key {key[:80]!r} has {len(parts)} part(s), expected {count}")
    return [_unquote(p) for p in parts]


def key_values(topic: TopicSpec, record: dict[str, Any]) -> list[Any]:
    """The values of ``topic``'s key fields in ``record`` (None where a field is absent)."""
    parts = []
    for path in topic.key:
        value: Any = record
        for name in path.split("."):
            value = value.get(name) if isinstance(value, dict) else None
        parts.append(value)
    return parts


def record_key(topic: TopicSpec, record: dict[str, Any]) -> bytes | None:
    """The partitioning key of ``record`` on ``topic`` (None if the topic has no key)."""
    return join_key(key_values(topic, record)) if topic.key else None
