"""Compaction of closed time partitions (``storage: {compact: true}``, docs/storage.md).

A B-tree written by many interleaved key ranges — ``(agent_id, episode_id, ts)`` with
32 agents writing at once — splits its pages 50/50 and leaves them half full for good.
Once a partition's range has ended (and a grace period for late rows has passed), its
B-tree indexes are rebuilt once, packed full: ``fillfactor`` 100, then ``REINDEX INDEX
CONCURRENTLY``, which blocks neither reads nor writes. The fillfactor is also the mark
of a packed index, so each index is rebuilt once (a primary key made with
``key_fillfactor: 100`` counts as packed already: it is written in order).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from sinkfleet.catalogue import Sink
from sinkfleet.ops.lifecycle.partitions import list_partitions, qualified, table_exists

GRACE = timedelta(hours=1)  # late rows still arriving for a range that just ended
PACKED = "fillfactor=100"

_LOOSE = ("SELECT ic.relname AS name FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
          " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = $1::regclass"
          " AND am.amname = 'btree' AND i.indisvalid"
          " AND NOT coalesce(ic.reloptions @> ARRAY[$2], false) ORDER BY ic.relname")


def compacts(sink: Sink) -> bool:
    storage = sink.spec.storage
    return storage is not None and storage.compact and sink.spec.partitioning is not None


async def compact_closed(conn: asyncpg.Connection, sink: Sink, now: datetime | None = None
                         ) -> list[str]:
    """Pack the B-tree indexes of ``sink``'s partitions closed before ``now`` minus GRACE;
    return the indexes rebuilt (schema.name). Runs outside a transaction."""
    if not compacts(sink) or not await table_exists(conn, sink):
        return []
    closed_by = (now or datetime.now(UTC)) - GRACE
    done = []
    for part in await list_partitions(conn, sink):
        if part.is_default or part.detach_pending or part.end is None or part.end > closed_by:
            continue
        table = qualified(part.schema or sink.spec.db_schema, part.name)
        for row in await conn.fetch(_LOOSE, table, PACKED):
            index = qualified(part.schema or sink.spec.db_schema, row["name"])
            await conn.execute(f"ALTER INDEX {index} SET ({PACKED.replace('=', ' = ')})")
            try:
                await conn.execute(f"REINDEX INDEX CONCURRENTLY {index}")
            except BaseException:  # not packed after all: the next cycle tries again
                await conn.execute(f"ALTER INDEX {index} RESET (fillfactor)")
                raise
            done.append(index)
    return done
