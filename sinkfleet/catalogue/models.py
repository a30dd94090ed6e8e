"""Typed, strict models of the catalogue files (unknown keys are errors)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
FIELD_PATH_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\[(0|[1-9][0-9]{0,3})\])?$")


def _ident(value: str) -> str:
    if not IDENT_RE.match(value):
        raise ValueError(
            f"{value!r} is not a safe SQL identifier: use lower-case letters, digits and _"
            " (at most 63, not starting with a digit)"
        )
    return value


def _topic(value: str) -> str:
    if not TOPIC_RE.match(value) or value in {".", ".."}:
        raise ValueError(f"{value!r} is not a valid Kafka topic name ([A-Za-z0-9._-], ≤ 249)")
    return value


def _field_path(value: str) -> str:
    if not FIELD_PATH_RE.match(value):
        raise ValueError(f"{value!r} is not a field path like 'reward.goal' or 'state[0]'")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
TopicName = Annotated[str, AfterValidator(_topic)]
FieldPath = Annotated[str, AfterValidator(_field_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSpec(_Strict):
    """topics/*.yaml: one Kafka topic and the schema of its values."""

    name: TopicName
    schema_: str = Field(alias="schema")
    partitions: int = Field(ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)
    key: list[FieldPath] = Field(default_factory=list)
    config: dict[str, str] = Field(default_factory=dict)
    dead_letter_topic: TopicName | None = None

    @property
    def dlq(self) -> str:
        return self.dead_letter_topic or f"{self.name}.dlq"


ColumnType = Literal[
    "smallint", "integer", "bigint", "real", "double precision", "numeric", "boolean",
    "text", "bytea", "uuid", "timestamptz", "date", "jsonb",
    "smallint[]", "integer[]", "bigint[]", "real[]", "double precision[]", "text[]",
]


class ColumnSpec(_Strict):
    name: Ident
    source: FieldPath | None = Field(None, alias="from")
    type: ColumnType | None = None
    nullable: bool | None = None
    default: Literal["now()"] | None = None

    @model_validator(mode="after")
    def _source_or_default(self) -> ColumnSpec:
        if self.source is None and self.default is None:
            raise ValueError(f"column {self.name!r} needs 'from' (a schema field) or a default")
        return self


class IndexSpec(_Strict):
    columns: list[Ident] = Field(min_length=1)
    using: Literal["btree", "brin", "gin"] = "btree"


class PartitioningSpec(_Strict):
    interval: Literal["hour", "day", "week", "month"] = "day"
    premake: int = Field(7, ge=1, le=366, description="partitions created ahead of now")
    history: int = Field(2, ge=0, le=3660, description="partitions created before now")


class SinkSpec(_Strict):
    """sinks/*.yaml: how one topic's records land in one PostgreSQL table."""

    name: Ident
    topic: TopicName
    table: Ident
    db_schema: Ident = Field("public", alias="schema")
    mode: Literal["append", "audit", "state"]
    id: list[Ident] = Field(min_length=1)
    time_column: Ident | None = None
    partitioning: PartitioningSpec | None = None
    columns: list[ColumnSpec] = Field(min_length=1)
    indexes: list[IndexSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SinkSpec:
        names = [c.name for c in self.columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate columns: {sorted(dupes)}")
        known = set(names)
        for col in self.id:
            if col not in known:
                raise ValueError(f"id column {col!r} is not among the columns")
        if self.partitioning is not None and self.time_column is None:
            raise ValueError("partitioning needs time_column")
        if self.time_column is not None and self.time_column not in known:
            raise ValueError(f"time_column {self.time_column!r} is not among the columns")
        for index in self.indexes:
            for col in index.columns:
                if col not in known:
                    raise ValueError(f"index column {col!r} is not among the columns")
        return self

    @property
    def qualified_table(self) -> str:
        return f'"{self.db_schema}"."{self.table}"'


class BatchPolicySpec(_Strict):
    max_records: int = Field(5000, ge=1, le=1_000_000)
    max_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_age_ms: int = Field(250, ge=1, le=600_000)


class WorkerSpec(_Strict):
    """workers/*.yaml: a consumer group and the sinks it feeds."""

    name: Ident
    group: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    sinks: list[Ident] = Field(min_length=1)
    batch: BatchPolicySpec = Field(default_factory=BatchPolicySpec)
    fetch_max_bytes: int = Field(52_428_800, ge=1024)
