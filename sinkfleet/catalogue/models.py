"""Typed, strict models of the catalogue files (unknown keys are errors)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sinkfleet.avro.compat import Level
from sinkfleet.catalogue.retention import RetentionSpec, parse_keep  # noqa: F401 (re-exported)
from sinkfleet.catalogue.storage import StorageSpec

# Whole-string patterns: \A…\Z, never ^…$ ($ also matches before a final "\n", so
# "events\n" would pass); callers use fullmatch, the anchors keep any .match() safe too.
IDENT_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")
TOPIC_RE = re.compile(r"\A[A-Za-z0-9._-]{1,249}\Z")
FIELD_PATH_RE = re.compile(
    r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\[(0|[1-9][0-9]{0,3})\])?\Z")


def _ident(value: str) -> str:
    if not IDENT_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a safe SQL identifier: use lower-case letters, digits and _"
            " (at most 63, not starting with a digit)"
        )
    return value


def _topic(value: str) -> str:
    if not TOPIC_RE.fullmatch(value) or value in {".", ".."}:
        raise ValueError(f"{value!r} is not a valid Kafka topic name ([A-Za-z0-9._-], ≤ 249)")
    return value


def _field_path(value: str) -> str:
    if not FIELD_PATH_RE.fullmatch(value):
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
    replication_factor: int | None = Field(None, ge=1, le=32, description=(
        "unset: by the cluster's size (replication())"))
    key: list[FieldPath] = Field(default_factory=list)
    config: dict[str, str] = Field(default_factory=dict)
    dead_letter_topic: TopicName | None = None
    compatibility: Level | None = Field(None, description="schema evolution rule (Confluent's"
                                        " levels); default BACKWARD (docs/avro.md)")

    @property
    def dlq(self) -> str:
        return self.dead_letter_topic or f"{self.name}.dlq"

    def replication(self, brokers: int) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) on a cluster of ``brokers``: as this
        spec sets them, else 3 replicas of which 2 must acknowledge on three brokers or
        more (one broker may fail without losing an acknowledged record or refusing
        writes), and every broker with 1 on fewer."""
        factor = self.replication_factor or min(3, max(1, brokers))
        default_isr = factor - 1 if factor >= 3 else 1
        return factor, int(self.config.get("min.insync.replicas", default_isr))


ColumnType = Literal[
    "smallint", "integer", "bigint", "real", "double precision", "numeric", "boolean",
    "text", "bytea", "uuid", "timestamptz", "timestamp", "date", "time", "jsonb",
    "smallint[]", "integer[]", "bigint[]", "real[]", "double precision[]", "text[]",
]


class ColumnSpec(_Strict):
    name: Ident
    source: FieldPath | None = Field(None, alias="from")
    type: ColumnType | None = None
    nullable: bool | None = None
    default: Literal["now()"] | None = None
    dimension: int | None = Field(None, ge=1, le=16_000, description=(
        "a real[] or double precision[] column as a vector (an embedding, coordinates):"
        " exactly this many finite elements, or the record is dead-lettered"))
    max_bytes: int | None = Field(None, ge=1, le=1 << 30, description=(
        "a bytea or text column: values longer than this are dead-lettered"))

    @model_validator(mode="after")
    def _source_or_default(self) -> ColumnSpec:
        if self.source is None and self.default is None:
            raise ValueError(f"column {self.name!r} needs 'from' (a schema field) or a default")
        return self


# `cube`: a GiST index over cube(column) (PostgreSQL's contrib extension, created by the
# sink's migration) for region (<@) and nearest-neighbour (<->) queries on a vector
# column of at most 100 dimensions (docs/column-types.md).
CUBE_MAX_DIMENSION = 100


class IndexSpec(_Strict):
    columns: list[Ident] = Field(min_length=1)
    using: Literal["btree", "brin", "gin", "cube"] = "btree"

    @model_validator(mode="after")
    def _one_vector(self) -> IndexSpec:
        if self.using == "cube" and len(self.columns) != 1:
            raise ValueError("a cube index covers exactly one vector column")
        return self


class PartitioningSpec(_Strict):
    interval: Literal["hour", "day", "week", "month"] = "day"
    premake: int = Field(7, ge=1, le=366, description="partitions created ahead of now")
    history: int = Field(2, ge=0, le=3660, description="partitions created before now")


class StateSpec(_Strict):
    """mode: state — latest version per id, guarded by ``version``, plus full history."""

    version: Ident = Field(description="column holding the record's version (integer)")
    history_table: Ident | None = Field(None, description="default: <table>_history")


CrdtKind = Literal["g_counter", "pn_counter", "g_set", "or_set", "max"]


class MergeSpec(_Strict):
    """mode: merge — one row per id whose columns are CRDTs, merged in SQL
    (docs/merge-mode.md): any delivery order, duplicate or replay gives the same row."""

    replica: Ident = Field(description="column naming the replica that wrote the record"
                                       " (an input of the merge, not stored)")
    crdts: dict[Ident, CrdtKind] = Field(min_length=1, description="column → CRDT kind")


class AuditSpec(_Strict):
    """mode: audit — content hash checked on ingest, one hash chain per tenant."""

    tenant: Ident = Field(description="column whose value owns a hash chain")
    hash: Ident = Field(description="column holding the record's SHA-256 content hash")


class RecentCacheSpec(_Strict):
    """The newest ``keep`` rows per ``by`` key in Redis, expiring ``ttl_seconds`` after
    the last write (seed 001's default TTL is one hour)."""

    by: list[Ident] = Field(min_length=1)
    keep: int = Field(100, ge=1, le=100_000)
    ttl_seconds: int = Field(3600, ge=1, le=30 * 86400)
    order_by: Ident | None = Field(None, description="default: the sink's time_column")


class CacheSpec(_Strict):
    """Redis caches written after the PostgreSQL commit (never instead of it)."""

    latest: bool = Field(False, description="state: the latest version per id")
    recent: RecentCacheSpec | None = None


# The longest a partition of each interval spans (a month: 31 days).
INTERVAL_SPAN = {"hour": timedelta(hours=1), "day": timedelta(days=1),
                 "week": timedelta(weeks=1), "month": timedelta(days=31)}


# CRDTs whose value is not their state: a second column holds the state (per replica
# counts, or-set tags); a g_set and a max register are their own state.
STATEFUL_CRDTS = frozenset({"g_counter", "pn_counter", "or_set"})


def merge_state_column(name: str) -> str:
    """The column holding a merge sink's CRDT state beside its value column ``name``."""
    return f"{name}_state"


class ReferenceSpec(_Strict):
    """``columns`` of this sink name a row of sink ``sink`` by its id (in id order).
    Not a foreign key: records of different topics arrive in any order, so a reference
    is checked after the fact and a row whose target is missing is an orphan, reported
    by `sinkfleet stats` (docs/references.md). A null reference is no reference."""

    columns: list[Ident] = Field(min_length=1)
    sink: Ident = Field(description="the sink whose id the columns hold")


class SinkSpec(_Strict):
    """sinks/*.yaml: how one topic's records land in one PostgreSQL table."""

    name: Ident
    topic: TopicName
    table: Ident
    db_schema: Ident = Field("public", alias="schema")
    mode: Literal["append", "audit", "state", "merge"]
    id: list[Ident] = Field(min_length=1)
    time_column: Ident | None = None
    partitioning: PartitioningSpec | None = None
    columns: list[ColumnSpec] = Field(min_length=1)
    indexes: list[IndexSpec] = Field(default_factory=list)
    state: StateSpec | None = None
    audit: AuditSpec | None = None
    merge: MergeSpec | None = None
    cache: CacheSpec | None = None
    retention: RetentionSpec | None = None
    tenant: Ident | None = Field(None, description="column naming the row's tenant: readers"
                                 " see a tenant's rows only (docs/reads.md)")
    references: list[ReferenceSpec] = Field(default_factory=list)
    storage: StorageSpec | None = None  # on-disk layout (sinkfleet/catalogue/storage.py)

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
        if self.tenant is not None and self.tenant not in known:
            raise ValueError(f"tenant {self.tenant!r} is not among the columns")
        if (self.tenant is not None and self.audit is not None
                and self.tenant != self.audit.tenant):
            raise ValueError(f"tenant {self.tenant!r} differs from audit.tenant"
                             f" {self.audit.tenant!r}: a chain belongs to one tenant")
        for index in self.indexes:
            for col in index.columns:
                if col not in known:
                    raise ValueError(f"index column {col!r} is not among the columns")
        for ref in self.references:
            for col in ref.columns:
                if col not in known:
                    raise ValueError(f"references: column {col!r} is not among the columns")
        self._check_mode(known)
        self._check_retention()
        if self.storage is not None and self.storage.compact and self.partitioning is None:
            raise ValueError("storage.compact packs closed time partitions: it needs"
                             " partitioning")
        if self.storage is not None and self.storage.key == "time_first" \
                and self.time_column not in self.id:
            raise ValueError("storage.key: time_first puts the time column first in the"
                             " primary key: list time_column among the id columns")
        return self

    def _check_retention(self) -> None:
        if self.retention is None:
            return
        if self.partitioning is None:
            raise ValueError("retention needs partitioning: retention drops whole time"
                             " partitions (never a table-wide DELETE), so only a"
                             " time-partitioned sink can have a 'retention:' section")
        span = self.partitioning.history * INTERVAL_SPAN[self.partitioning.interval]
        detail = self.retention.detail_delta
        if detail is not None and detail < span:
            raise ValueError(
                f"retention.keep {self.retention.keep} is shorter than partitioning.history"
                f" ({self.partitioning.history} {self.partitioning.interval} partitions):"
                " db migrate would re-create partitions that retention drops; raise keep"
                " or lower history")
        summary = self.retention.summary
        if summary is not None:
            named = [*summary.by, *summary.values]
            for col in named:
                if col not in {c.name for c in self.columns}:
                    raise ValueError(f"retention.summary: column {col!r} is not among the"
                                     " columns")
            twice = sorted({c for c in named if named.count(c) > 1})
            if twice:
                raise ValueError(f"retention.summary: {twice} named twice (a column is"
                                 " grouped by or summed, not both)")
            owner = self.tenant_column
            if owner is not None and owner not in summary.by:
                raise ValueError(f"retention.summary.by must list the tenant column"
                                 f" {owner!r}: a summary that adds tenants' rows together"
                                 " could be read by none of them (readers see one tenant)")

    def _check_mode(self, known: set[str]) -> None:
        for mode, section in (("state", self.state), ("audit", self.audit),
                              ("merge", self.merge)):
            if self.mode == mode and section is None:
                raise ValueError(f"mode {mode} needs a '{mode}:' section")
            if self.mode != mode and section is not None:
                raise ValueError(f"a '{mode}:' section needs mode: {mode}")
        named = []
        if self.state is not None:
            named.append(("state.version", self.state.version))
            if self.partitioning is not None:
                raise ValueError("state sinks are not time-partitioned (one row per id)")
            if len(self.history_table) > 63:
                raise ValueError(f"history table {self.history_table!r} is longer than 63"
                                 " characters: set state.history_table")
        if self.audit is not None:
            named += [("audit.tenant", self.audit.tenant), ("audit.hash", self.audit.hash)]
            if self.partitioning is not None:
                raise ValueError("audit sinks are not time-partitioned (chains span time)")
        if self.merge is not None:
            named += self._check_merge(self.merge)
        if self.cache is not None:
            if self.cache.latest and self.mode != "state":
                raise ValueError("cache.latest needs mode: state")
            if self.cache.recent is not None:
                recent = self.cache.recent
                named += [("cache.recent.by", c) for c in recent.by]
                order = recent.order_by or self.time_column
                if order is None:
                    raise ValueError("cache.recent needs order_by (or the sink's time_column)")
                named.append(("cache.recent.order_by", order))
        for where, col in named:
            if col not in known:
                raise ValueError(f"{where}: column {col!r} is not among the columns")

    def _check_merge(self, merge: MergeSpec) -> list[tuple[str, str]]:
        if self.partitioning is not None:
            raise ValueError("merge sinks are not time-partitioned (one row per id)")
        if self.cache is not None:
            raise ValueError("merge sinks have no Redis cache (yet): drop 'cache:'")
        if merge.replica in merge.crdts:
            raise ValueError(f"merge: the replica column {merge.replica!r} is not a CRDT")
        inputs = {merge.replica, *merge.crdts}
        for col in self.columns:
            if col.name in self.id:
                if col.name in inputs:
                    raise ValueError(f"merge: id column {col.name!r} cannot be the replica"
                                     " or a CRDT")
            elif col.name not in inputs and col.source is not None:
                raise ValueError(
                    f"merge: column {col.name!r} is neither an id, the replica nor a CRDT"
                    " (merge.crdts): a plain column would depend on delivery order; make it"
                    " a CRDT (max keeps the greatest value) or drop it")
        names = {c.name for c in self.columns}
        for name, kind in merge.crdts.items():
            if kind not in STATEFUL_CRDTS:
                continue
            state = merge_state_column(name)
            if state in names:
                raise ValueError(f"merge: column {state!r} would hold the state of CRDT"
                                 f" {name!r}; rename one of them")
            if len(state) > 63:
                raise ValueError(f"merge: CRDT column {name!r} is too long for its state"
                                 f" column {state!r} (at most 57 characters)")
        return [("merge.replica", merge.replica),
                *((f"merge.crdts.{n}", n) for n in merge.crdts)]

    @property
    def history_table(self) -> str:
        """The state sink's history table."""
        assert self.state is not None
        return self.state.history_table or f"{self.table}_history"

    @property
    def tenant_column(self) -> str | None:
        """The column whose value owns a row (``tenant``, or an audit sink's chain
        owner): readers see one tenant's rows of such a sink, through its tenant view."""
        if self.tenant is not None:
            return self.tenant
        return self.audit.tenant if self.audit is not None else None

    @property
    def key_columns(self) -> list[str]:
        """The primary key's columns in index order (``storage.key``)."""
        if self.storage is None or self.storage.key == "as_id" or self.time_column is None:
            return list(self.id)
        return [self.time_column, *(c for c in self.id if c != self.time_column)]

    @property
    def qualified_table(self) -> str:
        return f'"{self.db_schema}"."{self.table}"'


class BatchPolicySpec(_Strict):
    max_records: int = Field(5000, ge=1, le=1_000_000)
    max_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_age_ms: int = Field(100, ge=1, le=600_000)


class WorkerSpec(_Strict):
    """workers/*.yaml: a consumer group and the sinks it feeds."""

    name: Ident
    group: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    sinks: list[Ident] = Field(min_length=1)
    batch: BatchPolicySpec = Field(default_factory=BatchPolicySpec)
    fetch_max_bytes: int = Field(52_428_800, ge=1024)
