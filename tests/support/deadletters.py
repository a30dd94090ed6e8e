"""Dead letters in tests: read a dead-letter topic, the replay header, records of a size."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer

from sinkfleet.producer import Publisher


async def read_all(settings: Any, topic: str, n: int, timeout: float = 30) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < n and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(msgs)
        # Anything beyond n would be a duplicate dead letter.
        for msgs in (await consumer.getmany(timeout_ms=1000)).values():
            got.extend(msgs)
    finally:
        await consumer.stop()
    return got


def replayed_from(msg: Any) -> str | None:
    value = dict(msg.headers).get("sinkfleet.replayed_from")
    return None if value is None else value.decode()


def event_of_size(pub: Publisher, event: dict[str, Any], size: int, filler: str) -> bytes:
    """``event`` encoded with action parameters padded so the value is ``size`` bytes."""
    def encode(n: int) -> bytes:
        params = json.dumps({"pad": (filler * (n // len(filler) + 1))[:n]})
        meta = {"intent_type": "i", "executor_id": "e", "parameters": params}
        return pub.encode("experience_event", event | {"action_metadata": meta})[2]

    n = size - len(encode(0))
    for _ in range(3):  # the string's length prefix grows with it
        n += size - len(encode(n))
    value = encode(n)
    assert len(value) == size
    return value
