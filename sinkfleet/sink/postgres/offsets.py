"""The offsets table: next offset per (group, topic, partition), written with the rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
