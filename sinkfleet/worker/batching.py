"""When to flush: the batch policy, and the pending batch itself (pure)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition


@dataclass(frozen=True)
class BatchPolicy:
    """Flush when any limit is reached: record count, payload bytes, or age."""

    max_records: int = 5000
    max_bytes: int = 16 * 1024 * 1024
    max_age_ms: int = 100

    def should_flush(self, records: int, nbytes: int, age_s: float) -> bool:
        if records == 0:
            return False
        return (records >= self.max_records or nbytes >= self.max_bytes
                or age_s * 1000 >= self.max_age_ms)

    def wait_ms(self, records: int, age_s: float) -> int:
        """How long the next fetch may block without overrunning the age limit."""
        if records == 0:
            return self.max_age_ms
        return max(0, int(self.max_age_ms - age_s * 1000))


@dataclass
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    stage: str  # decompress | decode | validate | write
    error: BaseException
    carried: tuple[tuple[str, bytes], ...] = ()  # headers kept from the record (replay trail)
    last_offset: int | None = None  # a whole record batch (stage decompress): offset..last


@dataclass
class Batch:
    """Rows per sink, next offsets per partition, and dead letters, since the last flush."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    sources: dict[str, list[Any]] = field(default_factory=dict)  # the record of each row
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    first: dict[TopicPartition, int] = field(default_factory=dict)  # first offset held
    last_timestamp: dict[TopicPartition, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    records: int = 0
    nbytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.monotonic()) - self.started

    def __bool__(self) -> bool:
        return bool(self.offsets)

    def ranges(self) -> str:
        """``topic[p]@first..next`` per partition: what a log line says it held."""
        return " ".join(f"{tp.topic}[{tp.partition}]@{self.first.get(tp, '?')}..{nxt}"
                        for tp, nxt in sorted(self.offsets.items()))
