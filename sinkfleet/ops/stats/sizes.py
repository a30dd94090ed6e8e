"""Where a table's bytes are: heap, free-space and visibility maps, TOAST, each index —
summed over its partition tree, so they add up to ``pg_total_relation_size``."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# pg_partition_tree() has no rows for a relation that is not partitioned: use it alone.
_TREE = ("WITH tree AS (SELECT relid FROM pg_partition_tree($1::regclass)"
         " UNION ALL SELECT $1::regclass"
         " WHERE NOT EXISTS (SELECT FROM pg_partition_tree($1::regclass)))")
_TABLE = (_TREE + " SELECT coalesce(sum(pg_relation_size(t.relid, 'main')), 0)::bigint AS heap,"
          " coalesce(sum(pg_relation_size(t.relid, 'fsm') + pg_relation_size(t.relid, 'vm')),"
          "   0)::bigint AS maps,"
          " coalesce(sum(CASE WHEN c.reltoastrelid = 0 THEN 0"
          "   ELSE pg_total_relation_size(c.reltoastrelid) END), 0)::bigint AS toast"
          " FROM tree t JOIN pg_class c ON c.oid = t.relid")
# Each index of the (parent) table, with the bytes of its partitions' indexes, every fork
# (a BRIN index has a free-space map of its own, often bigger than the index).
_INDEXES = (
    "SELECT ic.relname AS name, am.amname AS method,"
    " (SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0) FROM"
    "   (SELECT relid FROM pg_partition_tree(i.indexrelid) UNION ALL SELECT i.indexrelid"
    "    WHERE NOT EXISTS (SELECT FROM pg_partition_tree(i.indexrelid))) p)::bigint AS bytes"
    " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
    " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = $1::regclass ORDER BY ic.relname")


@dataclass(frozen=True)
class Component:
    name: str  # heap, maps, toast, or "index <name> (<method>)"
    bytes: int


async def components(conn: asyncpg.Connection, qualified: str) -> list[Component]:
    """The parts of ``qualified`` (an existing table, quoted) and their bytes."""
    row = await conn.fetchrow(_TABLE, qualified)
    out = [Component("heap", row["heap"]), Component("fsm+vm", row["maps"]),
           Component("toast", row["toast"])]
    out += [Component(f"index {r['name']} ({r['method']})", r["bytes"])
            for r in await conn.fetch(_INDEXES, qualified)]
    return out
