"""Dead-letter records: the original bytes plus headers saying why and where from."""

from __future__ import annotations

import socket
import time

from sinkfleet.kafka_bounds import OversizeBatch
from sinkfleet.worker.batching import DeadLetter

# Headers of the original record that a new dead letter keeps: a replayed record that
# fails again still says which dead letter it came from.
CARRIED_HEADERS = frozenset({"sinkfleet.replayed_from"})


def oversize_dead_letter(batch: OversizeBatch) -> DeadLetter:
    """A record batch that would inflate past SINKFLEET_MAX_BATCH_BYTES, dead-lettered
    whole: its offsets, and the start of its compressed records as the value."""
    assert batch.error is not None
    return DeadLetter(batch.topic, batch.partition, batch.first_offset, batch.timestamp,
                      None, batch.compressed, "decompress", batch.error,
                      last_offset=batch.offset)


def dead_letter_headers(dl: DeadLetter, worker_id: str) -> list[tuple[str, bytes]]:
    message = str(dl.error)[:2000]
    batch = [] if dl.last_offset is None else [
        ("sinkfleet.last_offset", str(dl.last_offset).encode())]
    return [*dl.carried,
        ("sinkfleet.topic", dl.topic.encode()),
        ("sinkfleet.partition", str(dl.partition).encode()),
        ("sinkfleet.offset", str(dl.offset).encode()),
        *batch,
        ("sinkfleet.timestamp", str(dl.timestamp).encode()),
        ("sinkfleet.stage", dl.stage.encode()),
        ("sinkfleet.error.class", type(dl.error).__name__.encode()),
        ("sinkfleet.error.message", message.encode(errors="replace")),
        ("sinkfleet.worker", worker_id.encode()),
        ("sinkfleet.host", socket.gethostname().encode()),
        ("sinkfleet.dead_at_ms", str(int(time.time() * 1000)).encode()),
    ]
