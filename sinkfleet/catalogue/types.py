"""Map Avro field paths to PostgreSQL column types (pure logic, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sinkfleet.errors import CatalogueError

_PRIMITIVE = {
    "long": "bigint",
    "int": "integer",
    "float": "real",
    "double": "double precision",
    "string": "text",
    "boolean": "boolean",
    "bytes": "bytea",
}
# Each maps to the column type that holds every value sinkfleet decodes exactly
# (docs/avro.md, "Extreme values"); without an entry a logical type maps as its base type.
# A logical type on another base type is ignored by Avro readers (and so here).
_LOGICAL = {
    ("long", "timestamp-micros"): "timestamptz",
    ("long", "timestamp-millis"): "timestamptz",
    ("long", "local-timestamp-micros"): "timestamp",
    ("long", "local-timestamp-millis"): "timestamp",
    ("int", "date"): "date",
    ("long", "time-micros"): "time",
    ("int", "time-millis"): "time",
    ("bytes", "decimal"): "numeric",
    ("fixed", "decimal"): "numeric",
    ("string", "uuid"): "uuid",
}
# Column types a value of the natural type may be stored as, besides the natural one.
_WIDENINGS = {
    "integer": {"smallint", "bigint"},
    "bigint": set(),
    "text": {"jsonb"},
    "real": {"double precision"},
    "real[]": {"double precision[]"},
    "jsonb": set(),
}


@dataclass(frozen=True)
class ResolvedField:
    """A schema field reached by a dotted path."""

    path: tuple[str, ...]
    avro_type: Any
    nullable: bool  # the field, or a record on the way to it, may be null
    natural_type: str
    nullable_path: tuple[bool, ...] = ()  # per step: may this field be null?
    index: int | None = None  # `state[3]`: one element of an array field


def _strip_null(avro_type: Any) -> tuple[Any, bool]:
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if len(branches) != 1:
            raise CatalogueError(f"union {avro_type} has more than one non-null branch")
        return branches[0], len(branches) != len(avro_type)
    return avro_type, False


def natural_pg_type(avro_type: Any) -> str:
    """The column type a value of ``avro_type`` maps to without conversion."""
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVE:
            return _PRIMITIVE[avro_type]
        raise CatalogueError(f"Avro type {avro_type!r} has no column mapping")
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        logical = (kind, avro_type.get("logicalType"))
        if logical in _LOGICAL:
            return _LOGICAL[logical]
        if kind == "fixed":
            return "bytea"
        if kind == "enum":
            return "text"
        if kind in ("record", "map"):
            return "jsonb"
        if kind == "array":
            item, _ = _strip_null(avro_type["items"])
            return natural_pg_type(item) + "[]"
        if isinstance(kind, str):
            return natural_pg_type(kind)
    raise CatalogueError(f"Avro type {avro_type!r} has no column mapping")


def resolve_path(schema: dict[str, Any], path: str) -> ResolvedField:
    """Follow ``a.b.c`` (or ``a.b[3]``, an array element) through nested records."""
    index: int | None = None
    if path.endswith("]"):
        path, _, raw = path[:-1].partition("[")
        index = int(raw)
    current: Any = schema
    nullable = False
    steps: list[bool] = []
    parts = tuple(path.split("."))
    for depth, name in enumerate(parts):
        if not (isinstance(current, dict) and current.get("type") == "record"):
            walked = ".".join(parts[:depth])
            raise CatalogueError(f"{walked!r} is not a record, so it has no field {name!r}")
        fields = {f["name"]: f for f in current["fields"]}
        if name not in fields:
            raise CatalogueError(
                f"schema {current.get('name')!r} has no field {name!r}"
                f" (fields: {', '.join(fields)})"
            )
        current, is_null = _strip_null(fields[name]["type"])
        nullable = nullable or is_null
        steps.append(is_null)
    if index is not None:
        if not (isinstance(current, dict) and current.get("type") == "array"):
            raise CatalogueError(f"{path!r} is not an array, so it has no element [{index}]")
        current, is_null = _strip_null(current["items"])
        nullable = nullable or is_null
    return ResolvedField(parts, current, nullable, natural_pg_type(current), tuple(steps),
                         index)


def check_column_type(natural: str, declared: str, where: str) -> None:
    """Refuse a declared column type that the Avro value cannot be stored as."""
    if declared == natural or declared in _WIDENINGS.get(natural, set()):
        return
    raise CatalogueError(f"{where}: an Avro value of column type {natural!r} cannot be stored as"
                         f" {declared!r}")
