"""The offsets table ``sinkfleet.consumer_offsets``: next offset per (group, topic,
partition), written with the rows. Every read and write of it is here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg
from aiokafka import TopicPartition


async def load_offsets(conn: asyncpg.Connection | asyncpg.Pool, group: str,
                       partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    tps = list(partitions)
    if not tps:
        return {}
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM sinkfleet.consumer_offsets"
        " WHERE group_id = $1 AND (topic, partition) IN"
        " (SELECT * FROM unnest($2::text[], $3::int[]))",
        group, [tp.topic for tp in tps], [tp.partition for tp in tps])
    return {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def lock_offsets(conn: asyncpg.Connection, group: str,
                       partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The stored next offsets of ``partitions``, their rows locked until the transaction
    ends: two writers of one partition (an owner and a zombie) take turns, and the second
    sees what the first stored (the fence of ``worker/store.py``)."""
    tps = sorted(partitions)
    if not tps:
        return {}
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM sinkfleet.consumer_offsets"
        " WHERE group_id = $1 AND (topic, partition) IN"
        " (SELECT * FROM unnest($2::text[], $3::int[]))"
        " ORDER BY topic, partition FOR UPDATE",
        group, [tp.topic for tp in tps], [tp.partition for tp in tps])
    return {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def save_offsets(conn: asyncpg.Connection, group: str,
                       offsets: Mapping[TopicPartition, int]) -> None:
    if not offsets:
        return
    tps = list(offsets)
    await conn.execute(
        "INSERT INTO sinkfleet.consumer_offsets AS o (group_id, topic, partition, next_offset)"
        " SELECT $1, t, p, n FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, n)"
        " ON CONFLICT (group_id, topic, partition)"
        # GREATEST fences zombies: a worker that lost a partition without noticing (a
        # long pause) must not move its new owner's position back. Replays move
        # offsets back on purpose, by writing this table directly.
        " DO UPDATE SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset),"
        " updated_at = now()",
        group, [tp.topic for tp in tps], [tp.partition for tp in tps],
        [offsets[tp] for tp in tps])


@dataclass(frozen=True)
class StoredOffset:
    """One row of ``sinkfleet.consumer_offsets``."""

    group: str
    topic: str
    partition: int
    next_offset: int
    updated_at: str | None = None  # ISO-8601

    def key(self) -> tuple[str, str, int]:
        return (self.group, self.topic, self.partition)


async def stored_offsets(conn: asyncpg.Connection) -> list[StoredOffset]:
    """Every stored offset (none if the database was never migrated)."""
    if await conn.fetchval("SELECT to_regclass('sinkfleet.consumer_offsets')") is None:
        return []
    rows = await conn.fetch(
        "SELECT group_id, topic, partition, next_offset, updated_at"
        " FROM sinkfleet.consumer_offsets ORDER BY group_id, topic, partition")
    return [StoredOffset(r["group_id"], r["topic"], r["partition"], r["next_offset"],
                         r["updated_at"].isoformat() if r["updated_at"] else None)
            for r in rows]


def topics_by_group(stored: Iterable[StoredOffset],
                 extra: Mapping[str, Iterable[str]] | None = None) -> dict[str, set[str]]:
    """group → topics: those with stored offsets, plus ``extra`` (e.g. the catalogue's)."""
    wanted: dict[str, set[str]] = {}
    for off in stored:
        wanted.setdefault(off.group, set()).add(off.topic)
    for group, topics in (extra or {}).items():
        wanted.setdefault(group, set()).update(topics)
    return wanted


async def group_offsets(conn: asyncpg.Connection, group: str,
                        topics: Iterable[str] | None = None) -> dict[TopicPartition, int]:
    """Every stored offset of ``group`` (of ``topics`` only, if given)."""
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM sinkfleet.consumer_offsets"
        " WHERE group_id = $1 AND ($2::text[] IS NULL OR topic = ANY($2::text[]))",
        group, None if topics is None else sorted(set(topics)))
    return {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def move_offsets(conn: asyncpg.Connection, group: str,
                       offsets: Mapping[TopicPartition, int]) -> None:
    """Set ``group``'s offsets to exactly ``offsets``, backwards too: a replay's move, not
    ``save_offsets`` (whose GREATEST fence would keep the old positions)."""
    tps = list(offsets)
    await conn.execute(
        "INSERT INTO sinkfleet.consumer_offsets (group_id, topic, partition, next_offset)"
        " SELECT $1, t, p, n FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, n)"
        " ON CONFLICT (group_id, topic, partition)"
        " DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        group, [tp.topic for tp in tps], [tp.partition for tp in tps],
        [offsets[tp] for tp in tps])


async def forget_offsets(conn: asyncpg.Connection, group: str) -> None:
    """Delete every stored offset of ``group`` (its workers then start from Kafka's)."""
    await conn.execute("DELETE FROM sinkfleet.consumer_offsets WHERE group_id = $1", group)


async def add_missing_offsets(conn: asyncpg.Connection,
                              rows: Iterable[tuple[str, str, int, int]]) -> None:
    """Store (group, topic, partition, next offset) rows where none is stored yet."""
    await conn.executemany(
        "INSERT INTO sinkfleet.consumer_offsets (group_id, topic, partition, next_offset)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", list(rows))
