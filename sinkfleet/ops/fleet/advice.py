"""`sinkfleet scale-advice`: measure a group's inputs to ``scaling.workers_needed``.

Two samples ``window`` seconds apart of: the log-end offsets of the group's topics
(ingress), the group's offsets in PostgreSQL (what it stored; the lag), and, with
``--metrics``, each worker's ``sinkfleet_records_consumed_total``.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from rich.table import Table

from sinkfleet.catalogue import Catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.kafka.client import explain_kafka_error, kafka_client_kwargs
from sinkfleet.ops.fleet.scaling import (
    Advice,
    backlog,
    cap_at_current,
    consumed_total,
    counter_increase,
    rate,
    workers_needed,
)
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.offsets import group_offsets


@dataclass
class Report:
    group: str
    topics: list[str]
    partitions: int
    members: int
    window: float  # seconds between the two samples
    ingress: float  # records/s
    stored_rate: float  # records/s, the whole group, from PostgreSQL offsets
    lag: int
    per_worker_rate: float
    per_worker_source: str
    drain_seconds: float
    headroom: float
    advice: Advice
    notes: list[str] = field(default_factory=list)

    @property
    def change(self) -> int:
        return self.advice.workers - self.members

    def as_dict(self) -> dict[str, Any]:
        a = self.advice
        return {"group": self.group, "topics": self.topics, "partitions": self.partitions,
                "members": self.members, "window_seconds": round(self.window, 3),
                "ingress_rate": round(self.ingress, 3), "lag_records": self.lag,
                "stored_rate": round(self.stored_rate, 3),
                "per_worker_rate": round(self.per_worker_rate, 3),
                "per_worker_source": self.per_worker_source,
                "drain_seconds": self.drain_seconds, "headroom": self.headroom,
                "demand_rate": round(a.demand, 3), "workers_needed": a.workers,
                "workers_uncapped": a.uncapped, "capped_by_partitions": a.capped,
                "change": self.change, "notes": [*a.notes, *self.notes]}


def metrics_url(url: str) -> str:
    """``host:port`` or ``http://host:port`` → ``http://host:port/metrics``."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urllib.parse.urlunsplit(parts)


def _scrape(url: str, group: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SinkfleetError(f"cannot read worker metrics from {url}: {exc}") from None
    total = consumed_total(text, group)
    if total is None:
        raise SinkfleetError(f"{url} has no sinkfleet metrics of group {group!r}: is it a"
                             " worker of that group, and has it joined yet?")
    return total


class GroupProbe:
    """Kafka and PostgreSQL clients for one group's measurements."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        kw = {**kafka_client_kwargs(settings), "request_timeout_ms": 10_000}
        self.admin = AIOKafkaAdminClient(**kw)
        self.consumer = AIOKafkaConsumer(enable_auto_commit=False, **kw)
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> GroupProbe:
        try:
            await self.admin.start()
            await self.consumer.start()
        except KafkaError as exc:
            await self.__aexit__()
            raise SinkfleetError(await explain_kafka_error(self.settings, exc)) from None
        self.conn = await connect(self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.conn.close()
        await self.consumer.stop()
        await self.admin.close()

    async def members(self) -> tuple[int, set[str]]:
        """Live members of the group and the topics assigned to them."""
        response = (await self.admin.describe_consumer_groups([self.group]))[0].to_object()
        described = response["groups"][0]
        topics: set[str] = set()
        for member in described["members"]:
            if member["member_assignment"]:
                decoded = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
                topics.update(tp.topic for tp in decoded.partitions())
        return len(described["members"]), topics

    async def stored(self, topics: list[str] | None = None) -> dict[TopicPartition, int]:
        assert self.conn is not None
        try:
            return await group_offsets(self.conn, self.group, topics)
        except asyncpg.UndefinedTableError:
            raise SinkfleetError("PostgreSQL has no sinkfleet.consumer_offsets table:"
                                 " run `sinkfleet db migrate`") from None

    async def positions(self, topics: list[str]) -> dict[TopicPartition, int]:
        """Where the group resumes: PostgreSQL's offsets (the truth), else the offsets
        committed to Kafka, as a worker does on assignment."""
        committed = await self.admin.list_consumer_group_offsets(self.group)
        found = {tp: meta.offset for tp, meta in committed.items()
                 if tp.topic in topics and meta.offset >= 0}
        return {**found, **await self.stored(topics)}

    async def topics(self, catalogue: Catalogue | None) -> list[str]:
        """The group's topics: from workers/ if a spec has this group, else from what
        Kafka (members, committed offsets) and PostgreSQL (stored offsets) know of it."""
        found: set[str] = set()
        if catalogue is not None:
            found = {catalogue.sinks[s].topic.name for w in catalogue.workers.values()
                     if w.group == self.group for s in w.sinks}
        if found:
            return sorted(found)
        _, assigned = await self.members()
        committed = await self.admin.list_consumer_group_offsets(self.group)
        stored = await self.stored()
        found = assigned | {tp.topic for tp in committed} | {tp.topic for tp in stored}
        if not found:
            groups = sorted({w.group for w in catalogue.workers.values()}) if catalogue else []
            raise SinkfleetError(
                f"unknown consumer group {self.group!r}: no spec in workers/ has it"
                f" ({', '.join(groups) or 'none there'}), and neither Kafka nor PostgreSQL"
                " hold offsets or members for it")
        return sorted(found)

    async def partitions(self, topics: list[str]) -> list[TopicPartition]:
        tps: list[TopicPartition] = []
        for meta in await self.admin.describe_topics(topics):
            if meta["error_code"] or not meta["partitions"]:
                raise SinkfleetError(f"topic {meta['topic']!r} of group {self.group!r} does not"
                                     " exist in Kafka; run `sinkfleet topics apply`")
            tps += [TopicPartition(meta["topic"], p["partition"]) for p in meta["partitions"]]
        return sorted(tps)


def _positions(tps: list[TopicPartition], starts: dict[TopicPartition, int],
               stored: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Where the group reads each partition: its stored offset, else the log start."""
    return {tp: max(stored.get(tp, starts.get(tp, 0)), starts.get(tp, 0)) for tp in tps}


async def advise(settings: Settings, catalogue: Catalogue | None, group: str, *,
                 window: float = 10.0, metrics: list[str] | None = None,
                 per_worker_rate: float | None = None, drain_seconds: float = 300.0,
                 headroom: float = 0.8) -> Report:
    urls = [metrics_url(u) for u in metrics or []]
    async with GroupProbe(settings, group) as probe:
        try:
            topics = await probe.topics(catalogue)
            if not topics:
                raise SinkfleetError(f"group {group!r} has no topics")
            tps = await probe.partitions(topics)
            members_before, _ = await probe.members()
            if members_before == 0 and per_worker_rate is None and not urls:
                raise SinkfleetError(
                    f"group {group!r} has no running workers, so their throughput cannot be"
                    " measured: pass --per-worker-rate R (records/s one worker stores, e.g."
                    " from `make bench`) or start workers first")
            t0 = time.monotonic()
            ends0, pos0 = await probe.consumer.end_offsets(tps), await probe.positions(topics)
            scraped0 = await asyncio.gather(*(asyncio.to_thread(_scrape, u, group) for u in urls))
            starts0 = await probe.consumer.beginning_offsets(tps)
            lag0 = backlog(ends0, starts0, pos0)
            await asyncio.sleep(window)
            t1 = time.monotonic()
            ends1, pos1 = await probe.consumer.end_offsets(tps), await probe.positions(topics)
            scraped1 = await asyncio.gather(*(asyncio.to_thread(_scrape, u, group) for u in urls))
            starts1 = await probe.consumer.beginning_offsets(tps)
            members, _ = await probe.members()
        except KafkaError as exc:
            raise SinkfleetError(f"Kafka refused a request for group {group!r}: {exc}") from None
    seconds = t1 - t0
    ingress = rate(ends0, ends1, seconds)
    stored_rate = rate(_positions(tps, starts0, pos0), _positions(tps, starts1, pos1),
                       seconds)
    lag = backlog(ends1, starts1, pos1)
    notes: list[str] = []
    kept_up = False
    if members != members_before:
        notes.append(f"the group's membership changed during the window ({members_before} →"
                     f" {members}): measured rates may be skewed; run again once it is stable")
    if per_worker_rate is not None:
        per_worker, source = per_worker_rate, "given (--per-worker-rate)"
    else:
        if urls:
            done = sum(counter_increase(a, b) for a, b in zip(scraped0, scraped1, strict=True))
            per_worker = done / seconds / len(urls)
            source = f"metrics ({len(urls)} worker(s), records consumed)"
        else:
            done = stored_rate * seconds
            per_worker = stored_rate / members if members else 0.0
            source = f"postgres ({stored_rate:,.0f} stored/s ÷ {members} member(s))"
        demand = ingress + lag / drain_seconds
        if per_worker <= 0 and demand > 0:
            raise SinkfleetError(
                f"group {group!r} processed nothing in the {seconds:.0f}s window while"
                f" {lag:,} records wait: are its workers stuck? pass --per-worker-rate R to"
                " get advice anyway")
        # Backlog at the start no bigger than what they did: they ran out of work.
        idle = per_worker > 0 and lag0 <= done
        kept_up = idle and lag <= lag0 + ingress  # (a second of arrivals: batching slack)
        if idle and not kept_up:
            notes.append("the workers were not saturated (they ran out of backlog during the"
                         f" window), so {per_worker:,.0f} records/s per worker is what they"
                         " were given, not what they can do: the advice is an upper bound;"
                         " measure under a backlog or pass --per-worker-rate")
    advice = workers_needed(ingress=ingress, lag=lag, per_worker_rate=per_worker,
                            partitions=len(tps), drain_seconds=drain_seconds, headroom=headroom)
    if per_worker_rate is None and kept_up:
        advice = cap_at_current(advice, members, per_worker)
    return Report(group, topics, len(tps), members, seconds, ingress, stored_rate, lag,
                  per_worker, source, drain_seconds, headroom, advice, notes)


def advice_table(r: Report) -> Table:
    a = r.advice
    t = Table(title=f"scale advice for group {r.group}", show_header=False)
    t.add_row("topics", f"{', '.join(r.topics)} ({r.partitions} partitions)")
    t.add_row("workers now", f"{r.members} (live members of the group)")
    t.add_row("ingress", f"{r.ingress:,.1f} records/s (over {r.window:.1f}s)")
    t.add_row("lag", f"{r.lag:,} records → {r.lag / r.drain_seconds:,.1f} records/s to clear"
                     f" it in {r.drain_seconds:g}s")
    t.add_row("per-worker rate", f"{r.per_worker_rate:,.1f} records/s, {r.per_worker_source}")
    t.add_row("planned per worker", f"{a.planned_per_worker:,.1f} records/s"
                                    f" (headroom {r.headroom:g})")
    change = (f"scale up by {r.change}" if r.change > 0 else
              f"scale down by {-r.change}" if r.change < 0 else "no change")
    t.add_row("[bold]workers needed[/]", f"[bold]{a.workers}[/] ({change};"
              f" ceil({a.demand:,.1f} / {a.planned_per_worker:,.1f}) = {a.uncapped})")
    for note in (*a.notes, *r.notes):
        t.add_row("note", note)
    return t
