"""Configuration and policies written as people do: set, roll back, activate, read back.

Usable from Python as from the CLI (``sinkfleet config …``, ``sinkfleet policy …``)::

    done = await set_config(settings, catalogue, "action_controller", "exploration_rate",
                            "0.1", by="ops@host")
    done.version, done.confirmed          # 3, True: a worker stored it as version 3
    row = await current(settings, catalogue, CONFIGURATION, ["action_controller",
                                                             "exploration_rate"])

Every write is a new version (``VersionedWriter``): a rollback or a re-activation
publishes old content as the next version, it never rewrites history.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.config import Settings
from sinkfleet.errors import ValidationError
from sinkfleet.ops.config.fields import (
    check_json,
    fields_of,
    is_json_field,
    missing_fields,
    visible,
)
from sinkfleet.ops.config.store import SinkRows, family_sink
from sinkfleet.ops.config.versioned import VersionedWriter, Written
from sinkfleet.sink.postgres.connect import pg

Say = Callable[[str], None]


@dataclass(frozen=True)
class Family:
    """How the tool writes one state family: which fields it fills itself."""

    schema: str  # the family's name in schemas/
    noun: str
    stamp: str | None = "updated_at"  # set to the time of the write
    author: str | None = None  # set to --by
    parent: str | None = None  # set to the version the new one derives from

    def sink(self, catalogue: Catalogue, name: str | None = None) -> Sink:
        return family_sink(catalogue, self.schema, name)

    def owned(self, sink: Sink) -> set[str]:
        """Fields nobody sets by hand: the id, the version and what the tool fills."""
        keyed = {*sink.spec.id, sink.spec.state.version if sink.spec.state else ""}
        names = {c.source.path[0] for c in sink.columns
                 if c.name in keyed and c.source is not None}
        return names | {f for f in (self.stamp, self.author, self.parent) if f}

    def stamped(self, content: dict[str, Any], by: str | None) -> dict[str, Any]:
        out = dict(content)
        if self.stamp:
            out[self.stamp] = dt.datetime.now(dt.UTC)
        if self.author:
            out[self.author] = by
        return out


CONFIGURATION = Family("configuration", "configuration entry", author="updated_by")
POLICY = Family("policy", "policy", parent="parent_version")


def content_of(sink: Sink, row: dict[str, Any]) -> dict[str, Any]:
    """A stored row (as asyncpg returns it: jsonb as text) as the record fields it came
    from, without the id and version: the content a new version can carry again."""
    fields = fields_of(sink.schema)
    skip = {*sink.spec.id, sink.spec.state.version if sink.spec.state else ""}
    out: dict[str, Any] = {}
    for col in sink.columns:
        src = col.source
        if col.name in skip or src is None or len(src.path) != 1 or src.index is not None:
            continue
        value = row.get(col.name)
        name = src.path[0]
        if col.pg_type == "jsonb" and isinstance(value, str) and not is_json_field(fields[name]):
            value = json.loads(value)  # a record or map stored as jsonb
        out[name] = value
    return out


async def _version_row(settings: Settings, rows: SinkRows, ids: list[Any], version: int,
                       what: str) -> dict[str, Any]:
    async with pg(settings) as conn:
        row = await rows.at(conn, ids, version)
        if row is not None:
            return dict(row)
        known = sorted({r["version"] for r in await rows.history(conn, ids, 1000)
                        if r["op"] == "upsert"})
    shown = ", ".join(map(str, known[-20:])) or "none"
    raise ValidationError(f"{what} has no version {version} (versions: {shown})")


def _what(family: Family, ids: list[str]) -> str:
    return f"{family.noun} {visible('/'.join(ids))}"


async def set_config(settings: Settings, catalogue: Catalogue, component: str, key: str,
                     value: str, *, by: str | None, sink: str | None = None,
                     wait: bool = True, timeout: float = 30.0, retries: int = 3,
                     say: Say = lambda m: None) -> Written:
    """Publish ``value`` (JSON text) as the next version of (component, key)."""
    s = CONFIGURATION.sink(catalogue, sink)
    value_field = _value_field(s)
    content = {value_field: check_json(value, "VALUE")}
    return await VersionedWriter(settings, catalogue, s, say=say).write(
        [component, key], lambda current, latest: CONFIGURATION.stamped(content, by),
        wait=wait, timeout=timeout, retries=retries)


def _value_field(sink: Sink) -> str:
    fields = fields_of(sink.schema)
    json_fields = [n for n, f in fields.items() if is_json_field(f)]
    if len(json_fields) != 1:
        raise ValidationError(f"sink {sink.spec.name}: `config set` needs exactly one JSON"
                              f" value field in schema {sink.schema['name']}")
    return json_fields[0]


async def rollback_config(settings: Settings, catalogue: Catalogue, component: str,
                          key: str, to: int, *, by: str | None, sink: str | None = None,
                          wait: bool = True, timeout: float = 30.0, retries: int = 3,
                          say: Say = lambda m: None) -> Written:
    """Publish version ``to``'s value again, as the next version (history is kept)."""
    s = CONFIGURATION.sink(catalogue, sink)
    writer = VersionedWriter(settings, catalogue, s, say=say)
    ids = writer.rows.id_values([component, key])
    old = content_of(s, await _version_row(settings, writer.rows, ids, to,
                                           _what(CONFIGURATION, [component, key])))
    return await writer.write([component, key],
                              lambda current, latest: CONFIGURATION.stamped(old, by),
                              wait=wait, timeout=timeout, retries=retries)


async def activate_policy(settings: Settings, catalogue: Catalogue, state_bin: str,
                          changes: dict[str, Any], *, from_version: int | None = None,
                          sink: str | None = None, wait: bool = True, timeout: float = 30.0,
                          retries: int = 3, say: Say = lambda m: None) -> Written:
    """Publish the next version of a policy, which makes it the active one: the active
    version's content (or ``from_version``'s) with ``changes``, its parent link set to
    the version it derives from."""
    if not changes and from_version is None:
        raise ValidationError("nothing to activate: give --set FIELD=VALUE (changes to the"
                              " active version) or --from-version V (activate an earlier"
                              " version again)")
    s = POLICY.sink(catalogue, sink)
    writer = VersionedWriter(settings, catalogue, s, say=say)
    ids = writer.rows.id_values([state_bin])
    what = _what(POLICY, [state_bin])
    base: dict[str, Any] | None = None
    if from_version is not None:
        base = content_of(s, await _version_row(settings, writer.rows, ids, from_version,
                                                what))
    version_column = writer.rows.version

    def build(current: int, latest: dict[str, Any] | None) -> dict[str, Any]:
        start = base if base is not None else (content_of(s, latest) if latest else {})
        content = POLICY.stamped({**start, **changes}, None)
        if POLICY.parent:
            content[POLICY.parent] = (from_version if from_version is not None else
                                      latest[version_column] if latest else None)
        missing = [f for f in missing_fields(s.schema, content) if f not in POLICY.owned(s)]
        if missing:
            raise ValidationError(f"{what} has no active version to start from: give"
                                  f" {' '.join(f'--set {m}=…' for m in missing)}")
        return content

    return await writer.write([state_bin], build, wait=wait, timeout=timeout,
                              retries=retries)


async def current(settings: Settings, catalogue: Catalogue, family: Family,
                  id_parts: list[str], sink: str | None = None) -> dict[str, Any] | None:
    """The current row of an id (jsonb parsed), or None (never written, or deleted)."""
    rows = SinkRows(family.sink(catalogue, sink))
    ids = rows.id_values(id_parts)
    async with pg(settings) as conn:
        return rows.plain(await rows.latest(conn, ids))


async def history(settings: Settings, catalogue: Catalogue, family: Family,
                  id_parts: list[str], sink: str | None = None, limit: int = 100
                  ) -> list[dict[str, Any]]:
    """The recorded versions of an id, newest first (with ``parent_version``, ``op``,
    ``kafka_partition``, ``kafka_offset``, ``recorded_at``)."""
    rows = SinkRows(family.sink(catalogue, sink))
    ids = rows.id_values(id_parts)
    async with pg(settings) as conn:
        found = await rows.history(conn, ids, limit)
    out = []
    for r in found:
        row = rows.plain(r)
        assert row is not None
        for name in ("content_hash",):  # internal: the conflict rule's input
            row.pop(name, None)
        out.append(row)
    return out
