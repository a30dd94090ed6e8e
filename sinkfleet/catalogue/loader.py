"""Load and cross-check schemas/, topics/, sinks/ and workers/ under a catalogue root."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from sinkfleet.avro.codec import SchemaStore
from sinkfleet.avro.hashing import JSON_PROP
from sinkfleet.catalogue.merge import check_merge
from sinkfleet.catalogue.models import (
    CUBE_MAX_DIMENSION,
    ColumnSpec,
    SinkSpec,
    TopicSpec,
    WorkerSpec,
)
from sinkfleet.catalogue.references import check_references
from sinkfleet.catalogue.retention import summary_problems
from sinkfleet.catalogue.types import ResolvedField, check_column_type, resolve_path
from sinkfleet.errors import CatalogueError, DecodeError


@dataclass(frozen=True)
class Column:
    """A sink column with its type and source resolved against the schema."""

    name: str
    pg_type: str
    nullable: bool
    source: ResolvedField | None
    default: str | None
    dimension: int | None = None  # a vector: exactly this many finite elements
    max_bytes: int | None = None  # bytea/text: the longest value stored


@dataclass
class Sink:
    spec: SinkSpec
    topic: TopicSpec
    schema: dict[str, Any]
    columns: list[Column]


@dataclass
class Catalogue:
    root: Path
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> parsed schema
    topics: dict[str, TopicSpec] = field(default_factory=dict)  # topic name -> spec
    sinks: dict[str, Sink] = field(default_factory=dict)
    workers: dict[str, WorkerSpec] = field(default_factory=dict)

    def topic_for_family(self, family: str) -> TopicSpec:
        for topic in self.topics.values():
            if topic.schema_ == family:
                return topic
        known = ", ".join(sorted(self.schemas)) or "none"
        raise CatalogueError(f"no topic carries family {family!r} (families: {known})")

    def worker(self, name: str) -> WorkerSpec:
        if name not in self.workers:
            known = ", ".join(sorted(self.workers)) or "none"
            raise CatalogueError(f"no worker spec {name!r} in workers/ (known: {known})")
        return self.workers[name]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogueError(f"{path}: expected a mapping at the top level")
    return data


def _model(cls: type[BaseModel], path: Path) -> Any:
    try:
        return cls.model_validate(_read_yaml(path))
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CatalogueError(f"{path}: {problems}") from None


def _load_schema(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
        parsed = fastavro.parse_schema(raw, _write_hint=False)
    except (json.JSONDecodeError, fastavro.schema.SchemaParseException, KeyError,
            TypeError, ValueError) as exc:
        raise CatalogueError(f"{path}: not a valid Avro schema: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise CatalogueError(f"{path}: the top-level schema must be a record")
    try:  # the same admission rules a worker applies (depth, zero-width arrays, …)
        SchemaStore().add(raw)
    except DecodeError as exc:
        raise CatalogueError(f"{path}: {exc}") from None
    return raw


def _resolve_columns(spec: SinkSpec, schema: dict[str, Any], where: Path) -> list[Column]:
    columns = []
    for col in spec.columns:
        ctx = f"{where}: column {col.name!r}"
        if col.source is None:
            columns.append(Column(col.name, col.type or "timestamptz", False, None, col.default))
            continue
        try:
            resolved = resolve_path(schema, col.source)
        except CatalogueError as exc:
            raise CatalogueError(f"{ctx}: from {col.source!r}: {exc}") from None
        pg_type = col.type or resolved.natural_type
        check_column_type(resolved.natural_type, pg_type, ctx)
        nullable = resolved.nullable if col.nullable is None else col.nullable
        if resolved.nullable and not nullable:
            raise CatalogueError(f"{ctx}: {col.source!r} may be null; drop 'nullable: false'")
        _check_limits(col, pg_type, ctx)
        columns.append(Column(col.name, pg_type, nullable, resolved, col.default,
                              col.dimension, col.max_bytes))
    _check_cube_indexes(spec, columns, where)
    for id_col in spec.id:
        if next(c for c in columns if c.name == id_col).nullable:
            raise CatalogueError(f"{where}: id column {id_col!r} must not be nullable")
    return columns


_VECTOR_TYPES = {"real[]", "double precision[]"}
_SIZED_TYPES = {"bytea", "text"}


def _check_limits(col: ColumnSpec, pg_type: str, ctx: str) -> None:
    if col.dimension is not None and pg_type not in _VECTOR_TYPES:
        raise CatalogueError(f"{ctx}: 'dimension' needs a real[] or double precision[]"
                             f" column (an array of float or double); it is {pg_type}")
    if col.max_bytes is not None and pg_type not in _SIZED_TYPES:
        raise CatalogueError(f"{ctx}: 'max_bytes' needs a bytea or text column; it is"
                             f" {pg_type}")


def _check_cube_indexes(spec: SinkSpec, columns: list[Column], where: Path) -> None:
    by_name = {c.name: c for c in columns}
    for index in spec.indexes:
        if index.using != "cube":
            continue
        col = by_name[index.columns[0]]
        if col.dimension is None or col.dimension > CUBE_MAX_DIMENSION:
            raise CatalogueError(
                f"{where}: cube index on {col.name!r}: the column needs 'dimension' of at"
                f" most {CUBE_MAX_DIMENSION} (cube's limit; docs/column-types.md)")


_KEY_TYPES = {"text", "smallint", "integer", "bigint", "uuid"}
_VERSION_TYPES = {"smallint", "integer", "bigint"}


def _check_mode(spec: SinkSpec, topic: TopicSpec, schema: dict[str, Any],
                columns: list[Column], where: Path) -> None:
    """The rules a state or audit sink adds on top of the column mapping."""
    by_name = {c.name: c for c in columns}
    if spec.state is not None:
        version = by_name[spec.state.version]
        if version.pg_type not in _VERSION_TYPES or version.nullable:
            raise CatalogueError(f"{where}: state.version {version.name!r} must be a non-null"
                                 f" integer column (it is {version.pg_type})")
        sources = []
        for name in spec.id:
            col = by_name[name]
            if col.pg_type not in _KEY_TYPES or col.source is None:
                raise CatalogueError(f"{where}: id column {name!r} must come from a text,"
                                     " integer or uuid field to be a state key")
            sources.append(".".join(col.source.path))
        if list(topic.key) != sources:
            # A tombstone carries only the Kafka key: it must spell out the id.
            raise CatalogueError(
                f"{where}: a state sink's id must be its topic's key: topic {topic.name!r}"
                f" has key {list(topic.key)}, the id columns come from {sources}")
    if spec.merge is not None:
        check_merge(spec, columns, where)
    if spec.audit is not None:
        tenant, hashed = by_name[spec.audit.tenant], by_name[spec.audit.hash]
        if tenant.nullable:
            raise CatalogueError(f"{where}: audit.tenant {tenant.name!r} must not be nullable")
        if hashed.pg_type != "bytea" or hashed.source is None or len(hashed.source.path) != 1:
            raise CatalogueError(f"{where}: audit.hash {hashed.name!r} must come from a"
                                 " top-level bytes or fixed field")
        covered = {}
        for col in columns:
            if col.source is None:
                continue
            if len(col.source.path) != 1 or col.source.index is not None:
                raise CatalogueError(
                    f"{where}: column {col.name!r}: an audit sink maps whole top-level"
                    " fields (so `audit verify` can rebuild the hashed record from the row)")
            covered[col.source.path[0]] = col.name
        for f in schema["fields"]:
            column = by_name.get(covered.get(f["name"], ""))
            if (column is not None and column.pg_type == "jsonb" and column.source is not None
                    and column.source.natural_type == "text" and not f.get(JSON_PROP)):
                raise CatalogueError(
                    f"{where}: column {column.name!r}: a string stored as jsonb in an audit"
                    f" sink needs \"{JSON_PROP}\": true on field {f['name']!r}, so its"
                    " content hash covers the JSON value rather than its spelling")
        missing = [f["name"] for f in schema["fields"] if f["name"] not in covered]
        if missing:
            raise CatalogueError(f"{where}: an audit sink must store every field of the"
                                 f" record; no column comes from {missing}")
        if topic.key != [".".join(tenant.source.path)] if tenant.source else True:
            raise CatalogueError(
                f"{where}: topic {topic.name!r} must be keyed by the tenant"
                f" ({tenant.name!r}) so one partition, hence one writer, owns each chain")


def load_catalogue(root: Path) -> Catalogue:
    """Read and validate the whole catalogue; every error names its file and key."""
    root = Path(root)
    cat = Catalogue(root=root)
    for sub in ("schemas", "topics", "sinks", "workers"):
        if not (root / sub).is_dir():
            raise CatalogueError(f"{root / sub}: missing; run sinkfleet from the project root"
                                 " or set SINKFLEET_HOME")
    for path in sorted((root / "schemas").glob("*.avsc")):
        cat.schemas[path.stem] = _load_schema(path)
    for path in sorted((root / "topics").glob("*.yaml")):
        topic = _model(TopicSpec, path)
        if topic.schema_ not in cat.schemas:
            raise CatalogueError(f"{path}: schema {topic.schema_!r} has no schemas/"
                                 f"{topic.schema_}.avsc")
        for key in topic.key:
            try:
                resolve_path(cat.schemas[topic.schema_], key)
            except CatalogueError as exc:
                raise CatalogueError(f"{path}: key {key!r}: {exc}") from None
        if topic.name in cat.topics:
            raise CatalogueError(f"{path}: topic {topic.name!r} is declared twice")
        cat.topics[topic.name] = topic
    for path in sorted((root / "sinks").glob("*.yaml")):
        spec = _model(SinkSpec, path)
        if spec.topic not in cat.topics:
            raise CatalogueError(f"{path}: topic {spec.topic!r} is not declared in topics/")
        if spec.name in cat.sinks:
            raise CatalogueError(f"{path}: sink {spec.name!r} is declared twice")
        topic = cat.topics[spec.topic]
        schema = cat.schemas[topic.schema_]
        columns = _resolve_columns(spec, schema, path)
        _check_mode(spec, topic, schema, columns, path)
        if spec.retention is not None and spec.retention.summary is not None:
            problems = summary_problems(spec.retention.summary,
                                        {c.name: c.pg_type for c in columns})
            if problems:
                raise CatalogueError(f"{path}: " + "; ".join(problems))
        cat.sinks[spec.name] = Sink(spec, topic, schema, columns)
    for path in sorted((root / "workers").glob("*.yaml")):
        worker = _model(WorkerSpec, path)
        for sink in worker.sinks:
            if sink not in cat.sinks:
                raise CatalogueError(f"{path}: sink {sink!r} is not declared in sinks/")
        cat.workers[worker.name] = worker
    check_references(cat)
    return cat
