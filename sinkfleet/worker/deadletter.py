"""Dead-letter records: the original bytes plus headers saying why and where from."""

from __future__ import annotations

import socket
import time
from typing import Any, NamedTuple

from sinkfleet.worker.batching import DeadLetter

# Headers of the original record that a new dead letter keeps: a replayed record that
# fails again still says which dead letter it came from.
CARRIED_HEADERS = frozenset({"sinkfleet.replayed_from"})
DLQ_RECORD_LIMIT = 1024 * 1024
DLQ_PRODUCER_KWARGS: dict[str, Any] = {}


class DeadLetterRecord(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter_headers(dl: DeadLetter, worker_id: str) -> list[tuple[str, bytes]]:
    message = str(dl.error)[:2000]
    return [*dl.carried,
        ("sinkfleet.topic", dl.topic.encode()),
        ("sinkfleet.partition", str(dl.partition).encode()),
        ("sinkfleet.offset", str(dl.offset).encode()),
        ("sinkfleet.timestamp", str(dl.timestamp).encode()),
        ("sinkfleet.stage", dl.stage.encode()),
        ("sinkfleet.error.class", type(dl.error).__name__.encode()),
        ("sinkfleet.error.message", message.encode(errors="replace")),
        ("sinkfleet.worker", worker_id.encode()),
        ("sinkfleet.host", socket.gethostname().encode()),
        ("sinkfleet.dead_at_ms", str(int(time.time() * 1000)).encode()),
    ]


def dead_letter_record(dl: DeadLetter, worker_id: str, *, limit: int = DLQ_RECORD_LIMIT
                       ) -> DeadLetterRecord:
    return DeadLetterRecord(dl.key, dl.value, dead_letter_headers(dl, worker_id))
