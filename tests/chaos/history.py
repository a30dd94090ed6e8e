"""An independent check of a run's history: what the publisher was told was acknowledged,
against what PostgreSQL holds, compared by record id in plain SQL.

Independent of the code under test: the publisher side appends each acknowledged record's
id to a plain text file (:class:`AckLog`) when Kafka acknowledges it; the checker
(:func:`check_history`) loads that file into temporary tables over its own asyncpg
connection and counts — it uses none of the project's readers, workers, catalogue or
settings, only a DSN and table names.

Per family, with each acknowledged id counted once:

* append families (:class:`AppendTable`): *lost* — acknowledged, not stored; *duplicated*
  — stored rows beyond the first per id (counted by id alone, which a primary key that
  also holds e.g. the timestamp would not forbid); *unacknowledged* — stored, never
  acknowledged.
* state families (:class:`StateTable`): the same over the history table's (key, version,
  op) rows, and *out of order* — keys whose latest row is not the highest acknowledged
  version (or is there although that version was deleted, or is missing).

The log is one line per acknowledgement: ``family<TAB>JSON array of the id's parts``
(state families: the key's values, the version, and ``upsert`` or ``delete``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import asyncpg


# --- the publisher's side ------------------------------------------------------------------
class AckLog:
    """Appends each acknowledged record's id to ``path`` as its delivery completes.

    ``track(fut, family, *parts)`` for any record; ``track_item`` for the chaos families'
    records (``tests/chaos/support.py``: an event's ``event_id``, an audit entry's
    ``entry_id``, a workflow state's key and version, a tombstone's key and the newest
    version sent before it — the one it deletes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self._newest: dict[tuple[Any, ...], int] = {}
        self.acked = 0
        self.failed = 0

    def track(self, fut: asyncio.Future[Any], family: str, *parts: Any) -> None:
        line = f"{family}\t{json.dumps([_plain(p) for p in parts])}\n"

        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                self.failed += 1
            else:
                self.acked += 1
                self._fh.write(line)

        fut.add_done_callback(done)

    def track_item(self, fut: asyncio.Future[Any], family: str, item: Any) -> None:
        key = getattr(item, "key", None)  # a Tombstone
        if key is not None:
            self.track(fut, family, *key, self._newest.get(tuple(key), 0), "delete")
        elif family == "experience_event":
            self.track(fut, family, item["event_id"])
        elif family == "audit_entry":
            self.track(fut, family, item["entry_id"])
        else:
            ident = (item["tenant_id"], item["workflow_id"])
            self._newest[ident] = max(self._newest.get(ident, 0), item["version"])
            self.track(fut, family, *ident, item["version"], "upsert")

    def close(self) -> None:
        self._fh.close()


def _plain(value: Any) -> Any:
    """An id part as the log holds it: bytes as hex (as ``encode(col, 'hex')`` shows them),
    numbers as numbers, anything else as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return value if isinstance(value, int | float | str) else str(value)


# --- the checker ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AppendTable:
    family: str
    table: str
    id_column: str


@dataclass(frozen=True)
class StateTable:
    family: str
    table: str  # the latest row per key
    history: str  # one row per (key, version, op)
    key: tuple[str, ...]
    version: str = "version"
    op: str = "op"


@dataclass
class FamilyHistory:
    family: str
    acknowledged: int = 0  # distinct ids acknowledged
    stored: int = 0  # rows (append) or history rows (state)
    lost: int = 0
    duplicated: int = 0
    unacknowledged: int = 0
    out_of_order: int = 0
    samples: list[str] = field(default_factory=list)


@dataclass
class HistoryReport:
    lines: int  # acknowledgements in the log (a re-sent id counts each time)
    families: list[FamilyHistory]

    def total(self, what: str) -> int:
        return sum(int(getattr(f, what)) for f in self.families)

    @property
    def ok(self) -> bool:
        return not any(self.total(w) for w in ("lost", "duplicated", "unacknowledged",
                                               "out_of_order"))

    def __str__(self) -> str:
        parts = [f"{f.family}: {f.acknowledged} acknowledged, {f.stored} stored, {f.lost}"
                 f" lost, {f.duplicated} duplicated, {f.unacknowledged} never acknowledged"
                 + (f", {f.out_of_order} keys out of order" if f.out_of_order else "")
                 + (f" (e.g. {'; '.join(f.samples)})" if f.samples else "")
                 for f in self.families]
        return f"history check of {self.lines} acknowledgements: " + " | ".join(parts)


def read_log(path: Path) -> dict[str, list[list[Any]]]:
    """family → the id parts of every acknowledgement, in log order."""
    out: dict[str, list[list[Any]]] = {}
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            family, sep, parts = line.rstrip("\n").partition("\t")
            if not sep:
                raise ValueError(f"{path}:{n}: not 'family<TAB>[id parts]': {line!r}")
            out.setdefault(family, []).append(json.loads(parts))
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _as_text(conn: asyncpg.Connection, table: str, column: str) -> str:
    """SQL for ``column`` as the log writes it (bytea as hex, anything else as text)."""
    kind = await conn.fetchval(
        "SELECT data_type FROM information_schema.columns WHERE table_name = $1"
        " AND column_name = $2 AND table_schema = ANY (current_schemas(false))",
        table, column)
    if kind is None:
        raise ValueError(f"no column {column} in table {table}")
    return f"encode({_q(column)}, 'hex')" if kind == "bytea" else f"{_q(column)}::text"


def _counted(family: str, row: asyncpg.Record) -> FamilyHistory:
    return FamilyHistory(family, int(row["acknowledged"]), int(row["stored"]),
                         int(row["lost"]), int(row["duplicated"]), int(row["unacknowledged"]))


async def _append(conn: asyncpg.Connection, spec: AppendTable, ids: list[list[Any]]
                  ) -> FamilyHistory:
    await conn.execute("DROP TABLE IF EXISTS pg_temp.acked, pg_temp.stored;"
                       " CREATE TEMP TABLE acked (id text)")
    await conn.copy_records_to_table("acked", records=[(str(p[0]),) for p in ids])
    expr = await _as_text(conn, spec.table, spec.id_column)
    await conn.execute(f"CREATE TEMP TABLE stored AS SELECT {expr} AS id, count(*) AS n"
                       f" FROM {_q(spec.table)} GROUP BY 1")
    row = await conn.fetchrow("""
        WITH a AS (SELECT DISTINCT id FROM acked)
        SELECT (SELECT count(*) FROM a) AS acknowledged,
               (SELECT coalesce(sum(n), 0) FROM stored) AS stored,
               (SELECT count(*) FROM a WHERE id NOT IN (SELECT id FROM stored)) AS lost,
               (SELECT coalesce(sum(n - 1), 0) FROM stored WHERE n > 1) AS duplicated,
               (SELECT count(*) FROM stored WHERE id NOT IN (SELECT id FROM a))
                   AS unacknowledged""")
    result = _counted(spec.family, row)
    result.samples += [f"lost {r[0]}" for r in await conn.fetch(
        "SELECT DISTINCT id FROM acked WHERE id NOT IN (SELECT id FROM stored)"
        " ORDER BY 1 LIMIT 3")]
    result.samples += [f"{r[0]} stored {r[1]}x" for r in await conn.fetch(
        "SELECT id, n FROM stored WHERE n > 1 ORDER BY 1 LIMIT 3")]
    return result


async def _state(conn: asyncpg.Connection, spec: StateTable, ids: list[list[Any]]
                 ) -> FamilyHistory:
    k = len(spec.key)
    keys = [f"k{i}" for i in range(k)]
    await conn.execute(
        "DROP TABLE IF EXISTS pg_temp.acked, pg_temp.stored, pg_temp.latest;"
        f" CREATE TEMP TABLE acked ({', '.join(f'{c} text' for c in keys)},"
        " version bigint, op text)")
    await conn.copy_records_to_table("acked", records=[
        (*(str(x) for x in p[:k]), int(p[k]), str(p[k + 1])) for p in ids])
    cols = [await _as_text(conn, spec.history, c) for c in spec.key]
    group = ", ".join(str(i) for i in range(1, k + 3))
    named = ", ".join(f"{c} AS {n}" for c, n in zip(cols, keys, strict=True))
    await conn.execute(
        f"CREATE TEMP TABLE stored AS SELECT {named},"
        f" {_q(spec.version)}::bigint AS version, {_q(spec.op)}::text AS op, count(*) AS n"
        f" FROM {_q(spec.history)} GROUP BY {group}")
    latest_cols = [await _as_text(conn, spec.table, c) for c in spec.key]
    named = ", ".join(f"{c} AS {n}" for c, n in zip(latest_cols, keys, strict=True))
    await conn.execute(
        f"CREATE TEMP TABLE latest AS SELECT {named},"
        f" {_q(spec.version)}::bigint AS version FROM {_q(spec.table)}")
    row_id = f"({', '.join(keys)}, version, op)"
    row = await conn.fetchrow(f"""
        WITH a AS (SELECT DISTINCT {', '.join(keys)}, version, op FROM acked)
        SELECT (SELECT count(*) FROM a) AS acknowledged,
               (SELECT coalesce(sum(n), 0) FROM stored) AS stored,
               (SELECT count(*) FROM a WHERE {row_id} NOT IN
                   (SELECT {', '.join(keys)}, version, op FROM stored)) AS lost,
               (SELECT coalesce(sum(n - 1), 0) FROM stored WHERE n > 1) AS duplicated,
               (SELECT count(*) FROM stored WHERE {row_id} NOT IN
                   (SELECT {', '.join(keys)}, version, op FROM a)) AS unacknowledged""")
    result = _counted(spec.family, row)
    # Per key: the highest acknowledged version, unless a deletion of it (or of a newer
    # one) was acknowledged; the latest table must hold exactly that.
    wrong = await conn.fetch(f"""
        WITH want AS (
            SELECT {', '.join(keys)}, max(version) FILTER (WHERE op = 'upsert') AS top,
                   max(version) FILTER (WHERE op = 'delete') AS deleted
            FROM acked GROUP BY {', '.join(keys)}),
        expected AS (SELECT {', '.join(keys)}, top AS version FROM want
                     WHERE top IS NOT NULL AND (deleted IS NULL OR top > deleted))
        SELECT {', '.join(f'coalesce(e.{c}, l.{c})' for c in keys)}, e.version AS want,
               l.version AS got
        FROM expected e FULL JOIN latest l USING ({', '.join(keys)})
        WHERE e.version IS DISTINCT FROM l.version ORDER BY 1, 2""")
    result.out_of_order = len(wrong)
    result.samples += [f"{tuple(r[i] for i in range(k))}: want {r['want']} got {r['got']}"
                       for r in wrong[:3]]
    return result


async def check_history(log: Path, dsn: str,
                        tables: Sequence[AppendTable | StateTable]) -> HistoryReport:
    """Compare the acknowledgements in ``log`` with the rows of ``tables`` (see the
    module's docstring). A family in the log without a table is an error (nothing it
    acknowledged could be checked); a table without acknowledgements is checked too
    (every row it holds is then unacknowledged)."""
    acked = read_log(log)
    unknown = set(acked) - {t.family for t in tables}
    if unknown:
        raise ValueError(f"{log} has acknowledgements of {sorted(unknown)}, which no"
                         " table given checks")
    # Temporary tables of the same names are made again per family: no cached statements.
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        families = []
        for spec in tables:
            ids = acked.get(spec.family, [])
            families.append(await (_append(conn, spec, ids) if isinstance(spec, AppendTable)
                                   else _state(conn, spec, ids)))
    finally:
        await conn.close()
    return HistoryReport(sum(len(v) for v in acked.values()), families)


def chaos_tables(sinks: dict[str, str]) -> list[AppendTable | StateTable]:
    """The tables of the chaos catalogue's three families (``sinks``: family → table)."""
    return [AppendTable("experience_event", sinks["experience_event"], "event_id"),
            AppendTable("audit_entry", sinks["audit_entry"], "entry_id"),
            StateTable("workflow_state", sinks["workflow_state"],
                       f"{sinks['workflow_state']}_history", ("tenant_id", "workflow_id"))]
