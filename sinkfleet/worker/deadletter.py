"""Dead letters: the one module that writes and reads their ``sinkfleet.*`` headers.

The worker builds a dead letter with ``dead_letter_record`` and sends it with
``DLQ_PRODUCER_KWARGS``; ``sinkfleet dlq inspect|replay`` read the headers back with
``parse_dead_letter``, which trusts nothing (anyone who can write to a dead-letter topic
can forge a dead letter). A dead letter always fits its topic: every header is bounded,
and a key or value that would not fit is replaced by its first bytes (an excerpt) plus
its size and SHA-256; the original stays in the source topic at the coordinates the
headers give. See docs/dead-letters.md.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sinkfleet.kafka.bounds import OversizeBatch
from sinkfleet.worker.batching import DeadLetter

# The headers, spelled here only.
TOPIC = "sinkfleet.topic"
PARTITION = "sinkfleet.partition"
OFFSET = "sinkfleet.offset"
TIMESTAMP = "sinkfleet.timestamp"
STAGE = "sinkfleet.stage"
ERROR_CLASS = "sinkfleet.error.class"
ERROR_MESSAGE = "sinkfleet.error.message"
WORKER = "sinkfleet.worker"
HOST = "sinkfleet.host"
DEAD_AT_MS = "sinkfleet.dead_at_ms"
REPLAYED_FROM = "sinkfleet.replayed_from"
LAST_OFFSET = "sinkfleet.last_offset"  # a whole record batch (stage decompress): its end
# Set by `dlq inspect` on a batch of the dead-letter topic itself too big to inflate.
DLQ_LAST_OFFSET = "sinkfleet.dlq_last_offset"
KEY_SIZE = "sinkfleet.key.size"
KEY_SHA256 = "sinkfleet.key.sha256"
KEY_TRUNCATED = "sinkfleet.key.truncated"  # the excerpt's length in bytes
VALUE_SIZE = "sinkfleet.value.size"
VALUE_SHA256 = "sinkfleet.value.sha256"
VALUE_TRUNCATED = "sinkfleet.value.truncated"
KEY_HEADERS = (KEY_SIZE, KEY_SHA256, KEY_TRUNCATED)
VALUE_HEADERS = (VALUE_SIZE, VALUE_SHA256, VALUE_TRUNCATED)
_CUT_HEADERS = sum(map(len, VALUE_HEADERS)) + 19 + 64 + 19  # their names and values, at most

# Where a record can fail, in the order a worker meets them (the STAGE header's values).
STAGES = ("decompress", "decode", "validate", "write")

# Headers of the original record that a new dead letter keeps: a replayed record that
# fails again still says which dead letter it came from.
CARRIED_HEADERS = frozenset({REPLAYED_FROM})

# Dead-letter topics get max.message.bytes = DLQ_RECORD_LIMIT (ops/setup/topics.py), and the
# producer refuses a record whose size estimate passes max_request_size. aiokafka's
# estimate is key + value + header names and values + at most ~200 bytes of batch header
# and varints (17 headers); RECORD_OVERHEAD leaves room for that. Compression only ever
# shrinks a batch (aiokafka sends it uncompressed when zstd does not help), and
# compression.type=producer on the topic stops the broker from recompressing it.
DLQ_RECORD_LIMIT = 1024 * 1024
RECORD_OVERHEAD = 1024
DLQ_PRODUCER_KWARGS: dict[str, Any] = {"max_request_size": DLQ_RECORD_LIMIT,
                                       "compression_type": "zstd"}
ERROR_MESSAGE_CHARS = 1000
HEADER_VALUE_LIMIT = 256  # every other header; a Kafka topic name is at most 249
KEY_LIMIT = 16 * 1024  # a longer key is cut (it only spreads dead letters over partitions)
KEY_EXCERPT = 1024
VALUE_EXCERPT = 16 * 1024  # enough to see the framing and the start of the payload


class DeadLetterRecord(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _clip(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, never ending inside a UTF-8 character."""
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", errors="ignore").encode()


def _text(text: str, limit: int = HEADER_VALUE_LIMIT) -> bytes:
    return _clip(text.encode(errors="replace"), limit)


def _message(error: BaseException) -> bytes:
    text = str(error)
    if len(text) > ERROR_MESSAGE_CHARS:
        text = f"{text[:ERROR_MESSAGE_CHARS]} … ({len(text):,} characters, cut)"
    return text.encode(errors="replace")


def _size(headers: Iterable[tuple[str, bytes]]) -> int:
    return sum(len(k.encode()) + len(v) for k, v in headers)


def _cut(data: bytes, excerpt: int, names: tuple[str, str, str]
         ) -> tuple[bytes, list[tuple[str, bytes]]]:
    size, sha, truncated = names
    part = data[:excerpt]
    return part, [(size, str(len(data)).encode()),
                  (sha, hashlib.sha256(data).hexdigest().encode()),
                  (truncated, str(len(part)).encode())]


def oversize_dead_letter(batch: OversizeBatch) -> DeadLetter:
    """A record batch that would inflate past SINKFLEET_MAX_BATCH_BYTES, dead-lettered
    whole: its offsets, and the start of its compressed records as the value."""
    assert batch.error is not None
    return DeadLetter(batch.topic, batch.partition, batch.first_offset, batch.timestamp,
                      None, batch.compressed, "decompress", batch.error,
                      last_offset=batch.offset)


def dead_letter_record(dl: DeadLetter, worker_id: str, *, limit: int = DLQ_RECORD_LIMIT
                       ) -> DeadLetterRecord:
    """The dead letter of ``dl``: key, value and headers of at most ``limit`` bytes, less
    ``RECORD_OVERHEAD``, counting header names. The value (and a key over ``KEY_LIMIT``)
    is kept whole when it fits, else cut to an excerpt with ``*.size``, ``*.sha256`` and
    ``*.truncated`` headers.

    >>> rec = dead_letter_record(dl, "events-host-1")
    >>> await producer.send(dlq_topic, rec.value, key=rec.key, headers=rec.headers)
    """
    carried: dict[str, bytes] = {}
    for name, data in dl.carried:
        if name in CARRIED_HEADERS and name not in carried:
            carried[name] = _clip(data or b"", HEADER_VALUE_LIMIT)
    headers = [*carried.items(),
               (TOPIC, _text(dl.topic)),
               (PARTITION, str(dl.partition).encode()),
               (OFFSET, str(dl.offset).encode()),
               *([] if dl.last_offset is None else [(LAST_OFFSET, str(dl.last_offset).encode())]),
               (TIMESTAMP, str(dl.timestamp).encode()),
               (STAGE, _text(dl.stage)),
               (ERROR_CLASS, _text(type(dl.error).__name__)),
               (ERROR_MESSAGE, _message(dl.error)),
               (WORKER, _text(worker_id)),
               (HOST, _text(socket.gethostname())),
               (DEAD_AT_MS, str(int(time.time() * 1000)).encode())]
    key, value = dl.key, dl.value
    if key is not None and len(key) > min(KEY_LIMIT, limit // 4):
        key, more = _cut(key, min(KEY_EXCERPT, limit // 16), KEY_HEADERS)
        headers += more
    room = limit - RECORD_OVERHEAD - _size(headers) - len(key or b"")
    if value is not None and len(value) > room:
        value, more = _cut(value, max(0, min(VALUE_EXCERPT, room - _CUT_HEADERS)),
                           VALUE_HEADERS)
        headers += more
    if _size(headers) + len(key or b"") + len(value or b"") > limit - RECORD_OVERHEAD:
        raise ValueError(f"a dead-letter limit of {limit} bytes cannot hold its headers")
    return DeadLetterRecord(key, value, headers)


# --- reading (hostile input: anyone may write to a dead-letter topic) --------------------
SHOWN_CHARS = 4096  # a header longer than this is shortened when read
_INT = re.compile(r"-?[0-9]{1,19}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last datetime Python has
_MAX_OFFSET = 2**63 - 1


def _int(text: str | None, low: int, high: int) -> int | None:
    """A decimal in [low, high], or None for anything else (1e17, 0x10, ١٢, ' 1')."""
    if text is None or not _INT.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def when(ms: int | None) -> datetime | None:
    """The UTC time of ``ms`` since the epoch, or None if Python has no such datetime."""
    if ms is None or not 0 <= ms <= _MAX_MS:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class Cut:
    """A key or value replaced by an excerpt: the original's size and SHA-256 (hex) as the
    headers say; None where a header is missing or malformed."""

    size: int | None
    sha256: str | None

    def matches(self, data: bytes | None) -> bool:
        return (data is not None and self.size == len(data)
                and self.sha256 == hashlib.sha256(data).hexdigest())

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class DeadLetterInfo:
    """What a dead letter's headers say, each checked: None where absent or unreadable."""

    topic: str | None
    partition: int | None
    offset: int | None
    last_offset: int | None  # a whole record batch (stage decompress)
    timestamp_ms: int | None
    stage: str
    error_class: str
    error_message: str
    worker: str | None
    host: str | None
    dead_at_ms: int | None
    replayed_from: str | None
    key_cut: Cut | None
    value_cut: Cut | None
    headers: dict[str, str]  # every header, as text (bytes that are not UTF-8 as \\xNN)

    @property
    def truncated(self) -> bool:
        return self.key_cut is not None or self.value_cut is not None

    @property
    def dead_at(self) -> datetime | None:
        return when(self.dead_at_ms)

    @property
    def where(self) -> str:
        """``topic[partition]@offset`` of the original record (``?`` for unknown;
        ``@first..last`` for a whole batch)."""
        p, o = self.partition, self.offset
        span = "" if self.last_offset is None else f"..{self.last_offset}"
        return (f"{self.topic or '?'}[{'?' if p is None else p}]"
                f"@{'?' if o is None else o}{span}")

    @property
    def is_batch(self) -> bool:
        """A whole record batch too big to inflate (stage decompress), not a record."""
        return self.stage == "decompress"


def _decode(value: bytes | None) -> str:
    text = (value or b"")[:SHOWN_CHARS * 4].decode("utf-8", errors="backslashreplace")
    if len(text) > SHOWN_CHARS or len(value or b"") > SHOWN_CHARS * 4:
        text = f"{text[:SHOWN_CHARS]} … ({len(value or b''):,} bytes, shortened)"
    return text


def _cut_of(headers: dict[str, str], names: tuple[str, str, str]) -> Cut | None:
    size, sha, _ = names
    if not any(n in headers for n in names):
        return None  # any of them: never take a claimed excerpt for the whole record
    digest = headers.get(sha)
    return Cut(_int(headers.get(size), 0, _MAX_OFFSET),
               digest if digest is not None and _SHA256.fullmatch(digest) else None)


def parse_dead_letter(headers: Iterable[tuple[str, bytes | None]] | None
                      ) -> DeadLetterInfo:
    """Read a dead letter's headers without trusting them.

    >>> info = parse_dead_letter(msg.headers)
    >>> info.where, info.stage, info.dead_at, info.truncated
    """
    text = {str(k): _decode(v) for k, v in headers or ()}
    return DeadLetterInfo(
        topic=text.get(TOPIC) or None,
        partition=_int(text.get(PARTITION), 0, 2**31 - 1),
        offset=_int(text.get(OFFSET), 0, _MAX_OFFSET),
        last_offset=_int(text.get(LAST_OFFSET), 0, _MAX_OFFSET),
        timestamp_ms=_int(text.get(TIMESTAMP), 0, _MAX_MS),
        stage=text.get(STAGE, "?"),
        error_class=text.get(ERROR_CLASS, "?"),
        error_message=text.get(ERROR_MESSAGE, ""),
        worker=text.get(WORKER),
        host=text.get(HOST),
        dead_at_ms=_int(text.get(DEAD_AT_MS), 0, _MAX_MS),
        replayed_from=text.get(REPLAYED_FROM),
        key_cut=_cut_of(text, KEY_HEADERS),
        value_cut=_cut_of(text, VALUE_HEADERS),
        headers=text,
    )
