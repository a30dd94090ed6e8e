"""Redis side of `sinkfleet stats`: keys and memory per sink prefix, and the hit rate.

One bounded SCAN over ``sinkfleet:*`` (never KEYS) counts keys per sink and per cache
(``latest``/``recent``); memory is ``MEMORY USAGE`` of a sample of each sink's keys,
scaled to its key count when the sample is smaller. The hit rate is Redis's own
``keyspace_hits``/``keyspace_misses``: readers keep their hit counts in-process
(``Reader.cache_stats``), so no per-family count is shared. It covers the whole instance
since its start (or ``CONFIG RESETSTAT``): every client's reads, including the cache
writer's compare-and-set lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sinkfleet.cache.layout import PREFIX
from sinkfleet.cache.store import REDIS_ERRORS, redis_client, redis_error
from sinkfleet.config import Settings

SCAN_COUNT = 1000
MEMORY_SAMPLE = 200  # keys per sink whose MEMORY USAGE is measured


@dataclass
class CacheUsage:
    sink: str
    keys: int = 0
    by_cache: dict[str, int] = field(default_factory=dict)  # latest / recent → keys
    memory_bytes: int = 0
    memory_estimated: bool = False  # scaled from a sample
    _sample: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_sample")
        return d


@dataclass
class HitRate:
    hits: int
    misses: int
    scope: str = "instance"  # whole Redis instance, not per family (see module doc)

    @property
    def rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}


@dataclass
class RedisStats:
    available: bool = True
    error: str | None = None
    version: str | None = None
    used_memory: int | None = None
    keys_total: int | None = None  # DBSIZE
    scanned: int = 0  # keys under sinkfleet:* seen
    truncated: bool = False  # stopped at the bound: counts are lower bounds
    hit_rate: HitRate | None = None
    sinks: dict[str, CacheUsage] = field(default_factory=dict)
    other_sinkfleet_keys: int = 0  # sinkfleet:* keys of sinks not in this catalogue

    def as_dict(self) -> dict[str, Any]:
        return {"available": self.available, "error": self.error, "version": self.version,
                "used_memory": self.used_memory, "keys_total": self.keys_total,
                "scanned": self.scanned, "truncated": self.truncated,
                "hit_rate": self.hit_rate.as_dict() if self.hit_rate else None,
                "sinks": {n: u.as_dict() for n, u in self.sinks.items()},
                "other_sinkfleet_keys": self.other_sinkfleet_keys}


def split_key(key: str) -> tuple[str, str] | None:
    """``sinkfleet:<sink>:<cache>:…`` → (sink, cache)."""
    parts = key.split(":", 3)
    if len(parts) < 3 or parts[0] != PREFIX:
        return None
    return parts[1], parts[2]


async def redis_stats(settings: Settings, sinks: Iterable[str], *,
                      max_keys: int = 1_000_000, sample: int = MEMORY_SAMPLE) -> RedisStats:
    """Key counts and memory per sink; a Redis failure is reported, not raised."""
    out = RedisStats(sinks={name: CacheUsage(name) for name in sinks})
    client = redis_client(settings, timeout=5.0)
    try:
        info = await client.info()
        out.version, out.used_memory = info.get("redis_version"), info.get("used_memory")
        out.hit_rate = HitRate(int(info.get("keyspace_hits", 0)),
                               int(info.get("keyspace_misses", 0)))
        out.keys_total = await client.dbsize()
        await _scan(client, out, max_keys, sample)
        await _memory(client, out)
    except REDIS_ERRORS as exc:
        out.available, out.error = False, str(redis_error(settings, exc))
    finally:
        await client.aclose()
    return out


async def _scan(client: Any, out: RedisStats, max_keys: int, sample: int) -> None:
    # Bounded in matched keys and in round trips (a huge keyspace with few of ours).
    cursor, calls, max_calls = 0, 0, max(100, 10 * max_keys // SCAN_COUNT)
    while True:
        cursor, keys = await client.scan(cursor, match=f"{PREFIX}:*", count=SCAN_COUNT)
        calls += 1
        for key in keys:
            parts = split_key(key)
            usage = out.sinks.get(parts[0]) if parts else None
            if usage is None:
                out.other_sinkfleet_keys += 1
                continue
            assert parts is not None
            usage.keys += 1
            usage.by_cache[parts[1]] = usage.by_cache.get(parts[1], 0) + 1
            if len(usage._sample) < sample:
                usage._sample.append(key)
        out.scanned += len(keys)
        if cursor == 0:
            return
        if out.scanned >= max_keys or calls >= max_calls:
            out.truncated = True
            return


async def _memory(client: Any, out: RedisStats) -> None:
    for usage in out.sinks.values():
        if not usage._sample:
            continue
        pipe = client.pipeline(transaction=False)
        for key in usage._sample:
            pipe.memory_usage(key)
        sizes = [s for s in await pipe.execute() if s is not None]  # None: expired since
        if not sizes:
            continue
        measured = sum(sizes)
        if len(sizes) < usage.keys:
            usage.memory_bytes = round(measured / len(sizes) * usage.keys)
            usage.memory_estimated = True
        else:
            usage.memory_bytes = measured
