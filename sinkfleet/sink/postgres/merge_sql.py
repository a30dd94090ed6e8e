"""The SQL of merge sinks (pure: strings only): their table, and the statement that joins
a batch into it (docs/merge-mode.md; the CRDT functions are migration 0011's).

A CRDT column ``c`` is stored as its value ``c`` and, where the value is not the state
itself, its state ``c_state`` (jsonb). A batch is COPYed into a staging table as the
records carry it, joined per id by the CRDT aggregates, then upserted with the join of
the stored state and the batch's: one statement, in the worker's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinkfleet.catalogue import Sink
from sinkfleet.catalogue.models import STATEFUL_CRDTS, merge_state_column
from sinkfleet.sink.postgres.ddl import create_table_sql
from sinkfleet.sink.postgres.ddl import quote_ident as q


@dataclass(frozen=True)
class _Kind:
    value_type: str | None  # None: the input column's type
    empty: str | None  # the value (and state) of an id that got no update of it
    state_empty: str | None  # None: no state column (the value is the state)
    merge: str  # f(stored, batch) → joined state
    value: str  # f(state) → value
    agg: str  # aggregate of one batch's inputs, as {} formatted with the input column


_KINDS = {
    "g_counter": _Kind("bigint", "0", "'{}'::jsonb", "sinkfleet.crdt_g_merge({}, {})",
                       "sinkfleet.crdt_g_value({})::bigint",
                       "sinkfleet.crdt_g_agg(jsonb_build_object(s.{r}, s.{c}))"),
    "pn_counter": _Kind("bigint", "0", "'{}'::jsonb", "sinkfleet.crdt_pn_merge({}, {})",
                        "sinkfleet.crdt_pn_value({})::bigint",
                        "sinkfleet.crdt_pn_agg(jsonb_build_object(s.{r}, jsonb_build_array("
                        "s.{c}->'increments', s.{c}->'decrements')))"),
    "g_set": _Kind("text[]", "'{}'::text[]", None, "sinkfleet.crdt_union({}, {})", "{}",
                   "sinkfleet.crdt_union_agg(s.{c})"),
    "or_set": _Kind("text[]", "'{}'::text[]", """'{"adds": {}, "removes": []}'::jsonb""",
                    "sinkfleet.crdt_orset_merge({}, {})", "sinkfleet.crdt_orset_value({})",
                    "sinkfleet.crdt_orset_agg(s.{c})"),
    "max": _Kind(None, None, None, "GREATEST({}, {})", "{}", "max(s.{c})"),
}
assert {k for k, v in _KINDS.items() if v.state_empty} == STATEFUL_CRDTS


def _table_columns(sink: Sink) -> list[tuple[str, str]]:
    """(name, definition) of the table's columns: ids, CRDT values (and states), defaults."""
    spec = sink.spec
    assert spec.merge is not None
    out = []
    for col in sink.columns:
        kind_name = spec.merge.crdts.get(col.name)
        if col.name == spec.merge.replica:
            continue  # an input of the merge; the row belongs to every replica
        if kind_name is None:
            line = col.pg_type
            if not col.nullable:
                line += " NOT NULL"
            if col.default == "now()":
                line += " DEFAULT now()"
            out.append((col.name, line))
            continue
        kind = _KINDS[kind_name]
        line = kind.value_type or col.pg_type
        if kind.empty is not None:
            line += f" NOT NULL DEFAULT {kind.empty}"
        out.append((col.name, line))
        if kind.state_empty is not None:
            out.append((merge_state_column(col.name),
                        f"jsonb NOT NULL DEFAULT {kind.state_empty}"))
    return out


def merge_column_lines(sink: Sink) -> list[str]:
    """The table's column definitions, as CREATE TABLE lines."""
    return [f"    {q(name)} {definition}" for name, definition in _table_columns(sink)]


def merge_columns(sink: Sink) -> list[str]:
    """The names of the merge sink's table columns, in table order."""
    return [name for name, _ in _table_columns(sink)]


def merge_table_sql(sink: Sink) -> str:
    """The merge sink's table: one row per id."""
    return create_table_sql(sink, merge_column_lines(sink))


def stage_sql(sink: Sink, stage: str, columns: list[str]) -> str:
    """The per-connection staging table of the batch's inputs."""
    types = {c.name: c.pg_type for c in sink.columns}
    cols = ", ".join(f"{q(c)} {types[c]}" for c in columns)
    return f"CREATE TEMP TABLE IF NOT EXISTS {q(stage)} ({cols}) ON COMMIT DELETE ROWS"


def upsert_sql(sink: Sink, stage: str) -> str:
    """Join the staged batch per id, then into the stored rows. Returns one row per id
    whose stored row was created or changed (an id the batch changes nothing of — a
    re-delivery — is not written at all)."""
    spec = sink.spec
    assert spec.merge is not None
    ids = ", ".join(q(c) for c in spec.id)
    replica = q(spec.merge.replica)
    # per CRDT: (state column, its batch aggregate, merge, value column, value)
    inner, cols, vals, sets, old, new = [], [], [], [], [], []
    for name, kind_name in spec.merge.crdts.items():
        kind = _KINDS[kind_name]
        state = merge_state_column(name) if kind.state_empty else name
        agg = kind.agg.format(r=replica, c=q(name))
        inner.append(f"{agg} FILTER (WHERE s.{q(name)} IS NOT NULL) AS {q(state)}")
        joined = kind.merge.format(f"l.{q(state)}", f"EXCLUDED.{q(state)}")
        if kind.state_empty:
            cols += [q(name), q(state)]
            vals += [kind.value.format(f"m.{q(state)}"), f"m.{q(state)}"]
            sets += [f"{q(name)} = {kind.value.format(joined)}", f"{q(state)} = {joined}"]
        else:
            cols.append(q(name))
            empty = f"coalesce(m.{q(name)}, {kind.empty})" if kind.empty else f"m.{q(name)}"
            vals.append(empty)
            sets.append(f"{q(name)} = {joined}")
        old.append(f"l.{q(state)}")
        new.append(joined)
    m_ids = ", ".join(f"m.{q(c)}" for c in spec.id)
    s_ids = ", ".join(f"s.{q(c)}" for c in spec.id)
    return (
        f"INSERT INTO {spec.qualified_table} AS l ({ids}, {', '.join(cols)})"
        f" SELECT {m_ids}, {', '.join(vals)} FROM (SELECT {s_ids},"
        f" {', '.join(inner)} FROM {q(stage)} s GROUP BY {ids}) m"
        # one lock order for every writer: concurrent batches cannot deadlock
        f" ORDER BY {m_ids}"
        f" ON CONFLICT ({ids}) DO UPDATE SET {', '.join(sets)}"
        f" WHERE ({', '.join(old)}) IS DISTINCT FROM ({', '.join(new)})"
        f" RETURNING {ids}")
