"""Avro container files of a sink's rows: the schema derived from its columns, a
streaming writer that hashes what it writes, and a verifying reader (no database).

Column types map to Avro as: smallint/integer → int, bigint → long, real → float,
double precision → double, boolean, text → string, bytea → bytes, uuid → string
(uuid), timestamptz → long (timestamp-micros), timestamp → long
(local-timestamp-micros), time → long (time-micros), date → int (date), jsonb and numeric →
string (the exact text), arrays → arrays; a nullable column is a union with null.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, cast

import fastavro
from fastavro.write import Writer

from sinkfleet.catalogue import Column, Sink
from sinkfleet.errors import SinkfleetError
from sinkfleet.private_files import open_private, private_dirs

FORMAT = "sinkfleet-archive/1"
ZSTD_LEVEL = 3  # benchmarks/retention.py: 9 saves ~1.5 % for 2.5x the compression CPU
BLOCK_BYTES = 1 << 20  # bigger blocks give zstd more context than fastavro's 16 KB

_SCALAR: dict[str, Any] = {
    "smallint": "int", "integer": "int", "bigint": "long", "real": "float",
    "double precision": "double", "numeric": "string", "boolean": "boolean",
    "text": "string", "bytea": "bytes", "jsonb": "string",
    "uuid": {"type": "string", "logicalType": "uuid"},
    "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
    "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"},
    "time": {"type": "long", "logicalType": "time-micros"},
    "date": {"type": "int", "logicalType": "date"},
}


class ArchiveError(SinkfleetError):
    """An archive file is missing, damaged, or does not match its manifest."""


def _items_nullable(column: Column) -> bool:
    src = column.source
    if src is None or not isinstance(src.avro_type, dict) or src.index is not None:
        return False
    items = src.avro_type.get("items")
    return isinstance(items, list) and "null" in items


def avro_type(column: Column) -> Any:
    if column.pg_type.endswith("[]"):
        item = _SCALAR[column.pg_type[:-2]]
        kind: Any = {"type": "array",
                     "items": ["null", item] if _items_nullable(column) else item}
    else:
        kind = _SCALAR[column.pg_type]
    return ["null", kind] if column.nullable else kind


def archive_schema(sink: Sink) -> dict[str, Any]:
    """The Avro schema of one archived row of ``sink``: every column, in table order."""
    return {
        "type": "record", "name": sink.spec.name, "namespace": "sinkfleet.archive",
        "doc": f"rows of {sink.spec.db_schema}.{sink.spec.table} (sinkfleet retention)",
        "fields": [{"name": c.name, "type": avro_type(c)} for c in sink.columns],
    }


def select_list(sink: Sink) -> str:
    """The SELECT list that reads rows in the archive's field order and value types."""
    out = []
    for col in sink.columns:
        name = f'"{col.name}"'  # catalogue identifiers: [a-z_][a-z0-9_]*
        out.append(f"{name}::text AS {name}" if col.pg_type == "numeric" else name)
    return ", ".join(out)


def row_converter(sink: Sink, names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """Archived record → the tuple COPY takes for columns ``names`` of the sink."""
    numeric = {c.name for c in sink.columns if c.pg_type == "numeric"} & set(names)

    def convert(rec: Mapping[str, Any]) -> tuple[Any, ...]:
        if not numeric:
            return tuple(rec[n] for n in names)
        return tuple(Decimal(rec[n]) if n in numeric and rec[n] is not None else rec[n]
                     for n in names)
    return convert


@functools.cache
def best_codec() -> str:
    """zstandard if fastavro can use it here (it needs ``backports.zstd`` before Python
    3.14, older fastavro the ``zstandard`` package), else deflate."""
    schema = fastavro.parse_schema({"type": "record", "name": "probe",
                                    "fields": [{"name": "x", "type": "long"}]})
    try:
        fastavro.writer(io.BytesIO(), schema, [{"x": 1}], codec="zstandard")
    except ValueError:
        return "deflate"
    return "zstandard"


class _Hashing:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.sha, self.bytes = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def seekable(self) -> bool:  # fastavro asks: a fresh file, not one to append to
        return False


class ArchiveWriter:
    """Streams rows into ``path`` + ``.tmp``; :meth:`close` verifies and renames."""

    def __init__(self, path: Path, schema: dict[str, Any], metadata: dict[str, str],
                 codec: str | None = None) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.codec = codec or best_codec()
        self.rows = 0
        private_dirs(path.parent)
        self._fh = os.fdopen(open_private(self.tmp), "wb")  # closed in close()/abort()
        self._out = _Hashing(self._fh)
        level = ZSTD_LEVEL if self.codec == "zstandard" else None
        self._writer = Writer(cast(BinaryIO, self._out), fastavro.parse_schema(schema),
                              codec=self.codec, sync_interval=BLOCK_BYTES,
                              metadata=metadata, compression_level=level)

    def write(self, names: list[str], rows: list[Any]) -> None:
        """Write rows (tuples, or asyncpg Records) whose values are columns ``names``.
        Dicts first: fastavro writes a dict twice as fast as it reads a Record."""
        write = self._writer.write
        for row in rows:
            write(dict(zip(names, row, strict=True)))
        self.rows += len(rows)

    def close(self) -> tuple[int, str]:
        """Flush, fsync, re-read and check; rename into place. Returns (bytes, sha256)."""
        self._writer.flush()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        sha = self._out.sha.hexdigest()
        verify_file(self.tmp, self.rows, sha)
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self._out.bytes, sha

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def verify_file(path: Path, rows: int, sha256: str) -> None:
    """Re-read ``path``: its SHA-256, then every block (header, sync markers,
    decompression) and the records the blocks hold, counted."""
    if not path.is_file():
        raise ArchiveError(f"{path}: archive file is missing")
    found = file_sha256(path)
    if found != sha256:
        raise ArchiveError(f"{path}: SHA-256 {found[:12]}… does not match the manifest's"
                           f" {sha256[:12]}… (the file changed or is damaged)")
    try:
        with open(path, "rb") as fh:
            count = sum(block.num_records for block in fastavro.block_reader(fh))
    except (ValueError, EOFError, OSError) as exc:
        raise ArchiveError(f"{path}: not a readable Avro container file: {exc}") from None
    if count != rows:
        raise ArchiveError(f"{path}: {count:,} records, the manifest says {rows:,}")


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for rec in fastavro.reader(fh):
            assert isinstance(rec, dict)
            yield rec
