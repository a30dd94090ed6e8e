"""`sinkfleet produce`: publish a synthetic agent load, optionally rate-limited.

Records are dicts; a state family's ``Tombstone`` is published as a deletion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.dev.synthetic.base import Item, Tombstone
from sinkfleet.dev.synthetic.loads import FAMILIES, MIX, MixedLoad, synthetic_records
from sinkfleet.errors import SinkfleetError
from sinkfleet.producer import Publisher


@dataclass
class ProduceResult:
    family: str
    count: int
    seconds: float
    records: list[Any] | None = None
    by_family: dict[str, int] | None = None  # produce_mixed: records per family
    tombstones: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


class Pacing:
    """Holds a publishing loop to ``rate`` records/s (None: as fast as it goes) and reports
    ``progress`` every 1,000 records; ``finish`` reports the rest."""

    STEP = 1000

    def __init__(self, rate: float | None, progress: Callable[[int], None] | None) -> None:
        self.rate = rate
        self.progress = progress
        self.started = time.monotonic()

    async def after(self, done: int) -> None:
        """Call after each record, with the number published so far."""
        if self.rate:
            ahead = done / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        if self.progress is not None and done % self.STEP == 0:
            self.progress(self.STEP)

    def finish(self, count: int) -> None:
        if self.progress is not None and count % self.STEP:
            self.progress(count % self.STEP)


async def produce(settings: Settings, catalogue: Catalogue, family: str,
                  records: Iterator[Item], count: int, *, rate: float | None = None,
                  keep: bool = False, progress: Callable[[int], None] | None = None,
                  ) -> ProduceResult:
    """Publish ``count`` records of one family and wait until Kafka acknowledged every one."""
    result = await produce_mixed(settings, catalogue, ((family, r) for r in records), count,
                                 rate=rate, keep=keep, progress=progress)
    kept = None if result.records is None else [r for _, r in result.records]
    return ProduceResult(family, count, result.seconds, kept, tombstones=result.tombstones)


async def produce_mixed(settings: Settings, catalogue: Catalogue,
                        items: Iterator[tuple[str, Item]], count: int, *,
                        rate: float | None = None, keep: bool = False,
                        progress: Callable[[int], None] | None = None) -> ProduceResult:
    """Publish ``count`` ``(family, record or Tombstone)`` items (a ``MixedLoad``, or
    several families in turn); ``records`` keeps the items when ``keep``."""
    kept: list[Any] | None = [] if keep else None
    by_family: dict[str, int] = {}
    tombstones = 0
    pacing = Pacing(rate, progress)
    async with Publisher(settings, catalogue=catalogue) as pub:
        for i in range(count):
            family, record = next(items)
            if isinstance(record, Tombstone):
                await pub.delete(family, *record.key)
                tombstones += 1
            else:
                await pub.publish(family, record)
            by_family[family] = by_family.get(family, 0) + 1
            if kept is not None:
                kept.append((family, record))
            await pacing.after(i + 1)
        await pub.flush()
    pacing.finish(count)
    return ProduceResult("mixed", count, time.monotonic() - pacing.started, kept, by_family,
                         tombstones)


@dataclass
class SyntheticLoad:
    """What `sinkfleet produce --family …` publishes: ``total`` items of ``families``."""

    label: str
    families: list[str]
    items: Iterator[tuple[str, Item]]
    total: int


def synthetic_load(catalogue: Catalogue, families: list[str], count: int, *, seed: int = 0,
                   agents: int = 32) -> SyntheticLoad:
    """``mixed``: ``count`` items of every family in an agent platform's proportions;
    ``all`` or several families: ``count`` of each in turn; one family: ``count`` of it.
    Only families the catalogue has a topic for are produced by ``all`` and ``mixed``."""
    if not families:
        raise SinkfleetError("name a family with --family (or --family all / mixed)")
    for word in ("all", "mixed"):
        if word in families and families != [word]:
            raise SinkfleetError(f"--family {word} cannot be combined with other families")
    carried = {t.schema_ for t in catalogue.topics.values()}
    if families == ["mixed"]:
        mix = {f: w for f, w in MIX.items() if f in carried}
        if not mix:
            raise SinkfleetError("the catalogue carries none of the synthetic families"
                                 f" ({', '.join(FAMILIES)})")
        return SyntheticLoad("mixed", sorted(mix),
                             islice(MixedLoad(seed, agents=agents, mix=mix), count), count)
    names = [f for f in FAMILIES if f in carried] if families == ["all"] else families
    for name in names:
        catalogue.topic_for_family(name)  # says which families exist
        if name not in FAMILIES:
            raise SinkfleetError(f"no synthetic load for family {name!r} (have:"
                                 f" {', '.join(FAMILIES)})")

    def each() -> Iterator[tuple[str, Item]]:
        for name in names:
            for record in islice(synthetic_records(name, seed, agents=agents), count):
                yield name, record

    label = names[0] if len(names) == 1 else f"{len(names)} families"
    return SyntheticLoad(label, names, each(), count * len(names))


def summary(result: ProduceResult) -> str:
    """One line for the CLI: how many of what, how fast, all acknowledged."""
    counts = result.by_family or {result.family: result.count}
    what = (f"{result.count:,} {next(iter(counts))} records" if len(counts) == 1 else
            f"{result.count:,} records ({', '.join(f'{f} {n:,}' for f, n in counts.items())})")
    if result.tombstones:
        what += f" incl. {result.tombstones:,} tombstones"
    return (f"produced {what} in {result.seconds:.1f}s ({result.rate:,.0f}/s),"
            " all acknowledged")
