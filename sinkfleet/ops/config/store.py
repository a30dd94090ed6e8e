"""What PostgreSQL holds of one id of a state sink: its newest version (history, deletions
included), its current row, its versions, and how far the sink's workers have stored.

Identifiers come from the catalogue (quoted); every value is bound.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.errors import CatalogueError, MigrationError, ValidationError
from sinkfleet.sink.postgres.ddl import quote_ident as q

_ID_PARSERS = {"text": str, "smallint": int, "integer": int, "bigint": int}


def family_sink(catalogue: Catalogue, family: str, name: str | None = None) -> Sink:
    """The state sink storing ``family`` (the schema's name in schemas/): ``name`` if
    given, else the only one; an error naming the candidates otherwise."""
    fitting = {n: s for n, s in catalogue.sinks.items()
               if s.spec.mode == "state" and s.topic.schema_ == family}
    if name is not None:
        if name in fitting:
            return fitting[name]
        raise CatalogueError(f"no state sink {name!r} stores {family} records (sinks that"
                             f" do: {', '.join(sorted(fitting)) or 'none'})")
    if len(fitting) == 1:
        return next(iter(fitting.values()))
    if not fitting:
        raise CatalogueError(f"no state sink in sinks/ stores {family} records; add one"
                             " (see sinks/configuration.yaml and sinks/policies.yaml)")
    raise CatalogueError(f"several sinks store {family} records ({', '.join(sorted(fitting))}):"
                         " pick one with --sink")


def groups_of(catalogue: Catalogue, sink: Sink) -> list[str]:
    """The consumer groups whose workers store ``sink``."""
    return sorted({w.group for w in catalogue.workers.values() if sink.spec.name in w.sinks})


def json_columns(sink: Sink) -> set[str]:
    return {c.name for c in sink.columns if c.pg_type == "jsonb"}


class SinkRows:
    """The queries of one state sink, for one id at a time."""

    def __init__(self, sink: Sink) -> None:
        spec = sink.spec
        assert spec.state is not None, f"{spec.name} is not a state sink"
        self.sink = sink
        self.ids = list(spec.id)
        self.version = spec.state.version
        types = {c.name: c.pg_type for c in sink.columns}
        self._id_parsers = [_ID_PARSERS.get(types[c], str) for c in self.ids]
        self._json = json_columns(sink)
        where = " AND ".join(f"{q(c)} = ${i + 1}" for i, c in enumerate(self.ids))
        n = len(self.ids)
        hist = f"{q(spec.db_schema)}.{q(spec.history_table)}"
        ver = q(self.version)
        self._max = f"SELECT max({ver}) FROM {hist} WHERE {where}"
        self._latest = f"SELECT * FROM {spec.qualified_table} WHERE {where}"
        self._history = (f"SELECT * FROM {hist} WHERE {where}"
                         f" ORDER BY {ver} DESC, op = 'upsert' LIMIT ${n + 1}")
        self._at = (f"SELECT * FROM {hist} WHERE {where} AND {ver} = ${n + 1}"
                    " AND op = 'upsert'")

    def id_values(self, parts: list[str]) -> list[Any]:
        """The id's parts (as typed) in the sink's id order, parsed to the columns' types."""
        if len(parts) != len(self.ids):
            raise ValidationError(f"{self.sink.spec.name} is keyed by {', '.join(self.ids)}:"
                                  f" give {len(self.ids)} id part(s), got {len(parts)}")
        values = []
        for name, parse, part in zip(self.ids, self._id_parsers, parts, strict=True):
            if part == "" or "\x00" in part:
                raise ValidationError(f"{name}: an id part must be non-empty text without"
                                      " NUL characters")
            try:
                values.append(parse(part))
            except ValueError:
                raise ValidationError(f"{name}: {part[:60]!r} is not an integer") from None
        return values

    def plain(self, record: asyncpg.Record | None) -> dict[str, Any] | None:
        """A row as a dict, jsonb columns parsed (asyncpg hands them over as text)."""
        if record is None:
            return None
        row = dict(record)
        for name in self._json & row.keys():
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        return row

    async def newest_version(self, conn: asyncpg.Connection, ids: list[Any]) -> int:
        """The highest version ever recorded for the id (deletions count: a version at
        or below a recorded deletion would never become current); 0 if none."""
        return int(await _fetch(conn.fetchval, self._max, *ids) or 0)

    async def latest(self, conn: asyncpg.Connection, ids: list[Any]) -> asyncpg.Record | None:
        """The current row (None if the id has none, or it was deleted)."""
        rows = await _fetch(conn.fetch, self._latest, *ids)
        return rows[0] if rows else None

    async def history(self, conn: asyncpg.Connection, ids: list[Any], limit: int
                      ) -> list[asyncpg.Record]:
        """Recorded versions, newest first (a deletion before the upsert it covers)."""
        return list(await _fetch(conn.fetch, self._history, *ids, limit))

    async def at(self, conn: asyncpg.Connection, ids: list[Any], version: int
                 ) -> asyncpg.Record | None:
        """The history's upsert at ``version`` (None if none was recorded)."""
        rows = await _fetch(conn.fetch, self._at, *ids, version)
        return rows[0] if rows else None


async def stored_through(conn: asyncpg.Connection, groups: list[str], topic: str,
                         partition: int) -> int | None:
    """The highest next offset any of ``groups`` stored for the partition (None: none)."""
    value = await _fetch(
        conn.fetchval, "SELECT max(next_offset) FROM sinkfleet.consumer_offsets"
        " WHERE group_id = ANY($1::text[]) AND topic = $2 AND partition = $3",
        groups, topic, partition)
    return None if value is None else int(value)


async def _fetch(call: Any, query: str, *args: Any) -> Any:
    try:
        return await call(query, *args)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
        raise MigrationError(f"{exc}: the database does not match the catalogue; run"
                             " `sinkfleet db migrate`") from None
