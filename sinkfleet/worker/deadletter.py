"""Dead-letter records: the original bytes plus headers saying why and where from."""

from __future__ import annotations

import socket
import time

from sinkfleet.worker.batching import DeadLetter

# The sinkfleet.* headers of a dead letter: spelled here only (docs/dead-letters.md).
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

# Headers of the original record that a new dead letter keeps: a replayed record that
# fails again still says which dead letter it came from.
CARRIED_HEADERS = frozenset({REPLAYED_FROM})


def dead_letter_headers(dl: DeadLetter, worker_id: str) -> list[tuple[str, bytes]]:
    message = str(dl.error)[:2000]
    return [*dl.carried,
        (TOPIC, dl.topic.encode()),
        (PARTITION, str(dl.partition).encode()),
        (OFFSET, str(dl.offset).encode()),
        (TIMESTAMP, str(dl.timestamp).encode()),
        (STAGE, dl.stage.encode()),
        (ERROR_CLASS, type(dl.error).__name__.encode()),
        (ERROR_MESSAGE, message.encode(errors="replace")),
        (WORKER, worker_id.encode()),
        (HOST, socket.gethostname().encode()),
        (DEAD_AT_MS, str(int(time.time() * 1000)).encode()),
    ]
