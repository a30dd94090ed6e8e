"""`sinkfleet produce`: publish a synthetic agent load, optionally rate-limited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.producer import Publisher


@dataclass
class ProduceResult:
    family: str
    count: int
    seconds: float
    records: list[dict[str, Any]] | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


async def produce(settings: Settings, catalogue: Catalogue, family: str,
                  records: Iterator[dict[str, Any]], count: int, *, rate: float | None = None,
                  keep: bool = False, progress: Callable[[int], None] | None = None,
                  ) -> ProduceResult:
    """Publish ``count`` records and wait until Kafka acknowledged every one."""
    kept: list[dict[str, Any]] | None = [] if keep else None
    started = time.monotonic()
    async with Publisher(settings, catalogue=catalogue) as pub:
        for i in range(count):
            record = next(records)
            await pub.publish(family, record)
            if kept is not None:
                kept.append(record)
            if rate:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if progress is not None and (i + 1) % 1000 == 0:
                progress(1000)
        await pub.flush()
    if progress is not None and count % 1000:
        progress(count % 1000)
    return ProduceResult(family, count, time.monotonic() - started, kept)
