"""Sending dead letters: acknowledged by Kafka before any offset moves past them.

While the dead-letter topic cannot take them (Kafka down, the topic missing, a denied
ACL), the send is retried with back-off and the worker says so at once (health
component ``dead-letters``, a metric, the log): the batch waits, its partitions stop
being fetched, nothing is skipped and nothing crashes. A dead letter the broker finds
too large is rebuilt smaller (the record's bytes are an excerpt then; the original
stays in the source topic at its coordinates).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from sinkfleet.config import Settings
from sinkfleet.http import Health
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.worker.batching import DeadLetter
from sinkfleet.worker.deadletter import DLQ_PRODUCER_KWARGS, DLQ_RECORD_LIMIT, dead_letter_record
from sinkfleet.worker.metrics import WorkerMetrics

log = logging.getLogger("sinkfleet.worker")
SMALLEST_LIMIT = 16 * 1024  # rebuilding a refused dead letter stops shrinking here
SEND_ERRORS = (KafkaError, TimeoutError, OSError)


class DeadLetterQueue:
    """The worker's dead-letter producer (``dlq_of``: source topic → its DLQ topic)."""

    def __init__(self, settings: Settings, dlq_of: Mapping[str, str], worker_id: str,
                 health: Health, metrics: WorkerMetrics, group: str,
                 attempt_timeout: float = 15.0, max_delay: float = 10.0) -> None:
        self.settings, self.dlq_of, self.worker_id = settings, dict(dlq_of), worker_id
        self.health, self.metrics, self.group = health, metrics, group
        self.attempt_timeout, self.max_delay = attempt_timeout, max_delay
        self._producer: AIOKafkaProducer | None = None
        self._limit: dict[tuple[str, int, int], int] = {}  # coordinates -> shrunk limit

    async def start(self) -> None:
        """Connect lazily: a worker whose DLQ is unreachable still starts and stores
        good records; only a batch with dead letters waits for the DLQ."""
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                **kafka_client_kwargs(self.settings), acks="all", enable_idempotence=True,
                request_timeout_ms=int(self.attempt_timeout * 1000), **DLQ_PRODUCER_KWARGS)
            await self._producer.start()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 15)
            except TimeoutError:
                log.warning("closing the dead-letter producer timed out")

    async def send(self, dead: list[DeadLetter]) -> None:
        """Send ``dead`` and wait for every ack; retry (forever, with back-off) what the
        broker did not take. Returns only when all are acknowledged."""
        pending = list(dead)
        delay = 0.2
        while pending:
            failed = await self._attempt(pending)
            if not failed:
                break
            pending = [dl for dl, _ in failed]
            dl, exc = failed[0]
            topics = sorted({self.dlq_of[d.topic] for d in pending})
            self.health.degrade("dead-letters", f"cannot send {len(pending)} dead letter(s)"
                                f" to {', '.join(topics)} ({type(exc).__name__}: {exc});"
                                " their partitions wait — is Kafka up and the topic there"
                                " (sinkfleet topics apply)?")
            self.metrics.dlq_send_failures.labels(self.group).inc()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_delay)
        self.health.recover("dead-letters")
        for dl in dead:
            log.warning("dead letter %s[%d]@%d (%s): %s", dl.topic, dl.partition, dl.offset,
                        dl.stage, str(dl.error)[:500])

    async def _attempt(self, dead: list[DeadLetter]
                       ) -> list[tuple[DeadLetter, BaseException]]:
        try:
            await asyncio.wait_for(self.start(), self.attempt_timeout)
        except SEND_ERRORS as exc:
            await self._reset()
            return [(dl, exc) for dl in dead]
        assert self._producer is not None
        sent: list[tuple[DeadLetter, asyncio.Future[object] | BaseException]] = []
        for dl in dead:
            coords = (dl.topic, dl.partition, dl.offset)
            record = dead_letter_record(dl, self.worker_id,
                                        limit=self._limit.get(coords, DLQ_RECORD_LIMIT))
            try:
                future = await asyncio.wait_for(self._producer.send(
                    self.dlq_of[dl.topic], record.value, key=record.key,
                    headers=record.headers), self.attempt_timeout)
            except SEND_ERRORS as exc:
                sent.append((dl, exc))
            else:
                sent.append((dl, future))
        failed: list[tuple[DeadLetter, BaseException]] = []
        for dl, outcome in sent:
            if isinstance(outcome, BaseException):
                failed.append((dl, outcome))
                continue
            try:
                await asyncio.wait_for(outcome, self.attempt_timeout)
            except SEND_ERRORS as exc:
                failed.append((dl, exc))
        for dl, error in failed:
            if isinstance(error, MessageSizeTooLargeError):
                coords = (dl.topic, dl.partition, dl.offset)
                smaller = max(SMALLEST_LIMIT, self._limit.get(coords, DLQ_RECORD_LIMIT) // 4)
                self._limit[coords] = smaller
        for dl, _ in sent:
            if not any(dl is f for f, _ in failed):
                self._limit.pop((dl.topic, dl.partition, dl.offset), None)
        return failed

    async def _reset(self) -> None:
        """Start over with a new producer next time (a failed start leaves it unusable)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 5)
            except Exception as exc:  # a half-started producer: nothing to keep from it
                log.debug("dead-letter producer reset: %s", exc)
