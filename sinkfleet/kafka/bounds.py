"""A bound on what one compressed Kafka record batch may inflate to (docs/compression.md).

aiokafka inflates a whole batch in one call (``aiokafka.codec.*_decode``) before any
record of it reaches us, so a batch of ≤ 1 MiB can become gigabytes (gzip inflates up
to a thousandfold, zstd far more) long before ``max_message_bytes`` is checked. aiokafka
has no hook for this, so ``install()`` replaces its four decoders with bounded streaming
ones (the record modules, pure Python and Cython, look them up as module globals) and
wraps the fetcher's batch iterator: a batch that would inflate past ``SINKFLEET_MAX_BATCH_BYTES``
is not inflated, and comes out of ``getmany`` in its place, in offset order, as one
``OversizeBatch`` record (offset = its last offset, value ``b""``). Consumers that know
it dead-letter or report it by coordinates; the position moves past it either way, and
no record before or after it is lost (an exception out of ``getmany`` would drop the
records already drained from other partitions).

``install()`` runs when ``sinkfleet.kafka.client`` is imported, so every sinkfleet client is
bounded; ``kafka_client_kwargs`` sets the limit from the settings. If aiokafka no longer
has what is patched, ``install()`` refuses to run rather than run unbounded.
"""

from __future__ import annotations

import importlib
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cramjam
from aiokafka.errors import CorruptRecordException
from aiokafka.structs import ConsumerRecord, TopicPartition

from sinkfleet.errors import SinkfleetError

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdDecompressor
else:
    from backports.zstd import ZstdDecompressor

DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024
EXCERPT_BYTES = 256 * 1024  # of the compressed records, kept in the dead letter
CODECS = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}  # Kafka's compression types

_limit = DEFAULT_MAX_BATCH_BYTES


class BatchTooLarge(SinkfleetError):
    """A compressed record batch would inflate past the limit; it was not inflated."""

    def __init__(self, message: str, *, codec: str, limit: int,
                 compressed: bytes = b"", compressed_size: int = 0) -> None:
        super().__init__(message)
        self.codec = codec
        self.limit = limit
        self.compressed = compressed  # the first EXCERPT_BYTES of the compressed records
        self.compressed_size = compressed_size


def _too_large(codec: str, data: Any, limit: int) -> BatchTooLarge:
    view = memoryview(data)
    return BatchTooLarge(f"{codec} data decompresses to more than {limit} bytes",
                         codec=codec, limit=limit, compressed=bytes(view[:EXCERPT_BYTES]),
                         compressed_size=view.nbytes)


# --- bounded decoders (pure): at most ``limit`` bytes out, else BatchTooLarge -------------
def _inflate_frames(codec: str, data: Any, limit: int, new: Callable[[], Any],
                    skip_padding: bool = False) -> bytes:
    """Concatenated members (gzip) or frames (zstd), each streamed with an output cap."""
    out = bytearray()
    rest = memoryview(data)
    while True:
        dec = new()
        out += dec.decompress(rest, limit - len(out) + 1)
        if len(out) > limit:
            raise _too_large(codec, data, limit)
        if not dec.eof:  # input used up inside a member
            raise CorruptRecordException(f"{codec} data ends inside a compressed stream")
        rest = memoryview(dec.unused_data)
        if skip_padding:  # gzip members may be followed by zero padding
            rest = memoryview(bytes(rest).lstrip(b"\x00"))
        if not rest:
            return bytes(out)


def inflate_gzip(data: Any, limit: int) -> bytes:
    return _inflate_frames("gzip", data, limit,
                           lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), skip_padding=True)


def inflate_zstd(data: Any, limit: int) -> bytes:
    return _inflate_frames("zstd", data, limit, ZstdDecompressor)


_LZ4_MAGIC = 0x184D2204
_U32 = struct.Struct("<I")


def inflate_lz4(data: Any, limit: int) -> bytes:
    """LZ4 frames (Kafka's framing, KIP-57), block by block; each block inflates to at
    most the frame's block size, so memory stays within ``limit`` + one block (≤ 4 MiB).
    Checksums are not verified: the batch's CRC-32C already covers these bytes."""
    buf, pos, out = memoryview(data), 0, bytearray()
    while pos < buf.nbytes:
        magic = _U32.unpack_from(buf, pos)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame
            pos += 8 + _U32.unpack_from(buf, pos + 4)[0]
            continue
        if magic != _LZ4_MAGIC:
            raise CorruptRecordException("lz4 data is not an LZ4 frame")
        flg, bd = buf[pos + 4], buf[pos + 5]
        if not flg & 0x20:  # Kafka refuses these on produce (KafkaLZ4BlockInputStream)
            raise CorruptRecordException("lz4 frame with dependent blocks")
        block = bytearray(1 << (2 * ((bd >> 4) & 7) + 8))  # the frame's block size
        pos += 7 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0)
        while True:
            size = _U32.unpack_from(buf, pos)[0]
            pos += 4
            if size == 0:
                break
            raw, size = size & 0x80000000, size & 0x7FFFFFFF
            packed = buf[pos:pos + size]
            pos += size + (4 if flg & 0x10 else 0)
            n = size if raw else cramjam.lz4.decompress_block_into(packed, block)
            if len(out) + n > limit:
                raise _too_large("lz4", data, limit)
            out += packed if raw else memoryview(block)[:n]
        pos += 4 if flg & 0x04 else 0
    return bytes(out)


_XERIAL_HEADER = struct.pack("!bccccccBii", -126, b"S", b"N", b"A", b"P", b"P", b"Y", 0, 1, 1)


def inflate_snappy(data: Any, limit: int) -> bytes:
    """Raw or xerial-framed snappy: each block states its inflated size; check the sum
    before inflating anything."""
    buf = bytes(data)
    blocks = [buf]
    if len(buf) > 16 and buf[:16] == _XERIAL_HEADER:
        blocks, pos = [], 16
        while pos < len(buf):
            size = struct.unpack_from("!i", buf, pos)[0]
            blocks.append(buf[pos + 4:pos + 4 + size])
            pos += 4 + size
    if sum(cramjam.snappy.decompress_raw_len(b) for b in blocks) > limit:
        raise _too_large("snappy", data, limit)
    return b"".join(bytes(cramjam.snappy.decompress_raw(b)) for b in blocks)


INFLATE: dict[str, Callable[[Any, int], bytes]] = {
    "gzip": inflate_gzip, "snappy": inflate_snappy, "lz4": inflate_lz4, "zstd": inflate_zstd}


def set_max_batch_bytes(limit: int) -> None:
    """The most one record batch may inflate to, in this process."""
    global _limit
    if limit < 1:
        raise ValueError("max_batch_bytes must be positive")
    _limit = limit


def max_batch_bytes() -> int:
    return _limit


# --- what getmany() yields instead of an oversize batch -----------------------------------
@dataclass
class OversizeBatch(ConsumerRecord[Any, Any]):
    """Stands for a whole record batch that was not inflated. ``offset`` is the batch's
    last offset (so "next offset = offset + 1" moves past it), ``first_offset`` the first
    one this consumer had not read yet; ``value`` is ``b""`` (never a tombstone)."""

    first_offset: int = 0
    error: BatchTooLarge | None = None

    @property
    def compressed(self) -> bytes:
        return self.error.compressed if self.error is not None else b""


def oversize_batch(tp: TopicPartition, batch: Any, first: int, exc: BatchTooLarge
                   ) -> OversizeBatch:
    """The record that replaces ``batch`` (whose inflation raised ``exc``)."""
    last = batch.next_offset - 1
    first = min(first, last)
    ts = getattr(batch, "max_timestamp", -1)
    message = (f"the {exc.codec} record batch at {tp.topic}[{tp.partition}] offsets"
               f" {first}..{last} ({exc.compressed_size} compressed bytes) decompresses to"
               f" more than {exc.limit} bytes (SINKFLEET_MAX_BATCH_BYTES); it was not"
               " inflated: raise SINKFLEET_MAX_BATCH_BYTES and replay these offsets to"
               " read its records")
    error = BatchTooLarge(message, codec=exc.codec, limit=exc.limit,
                          compressed=exc.compressed, compressed_size=exc.compressed_size)
    return OversizeBatch(tp.topic, tp.partition, last, ts, getattr(batch, "timestamp_type", 0),
                         None, b"", None, -1, 0, (), first_offset=first, error=error)


# --- installing into aiokafka ---------------------------------------------------------------
# Every module of aiokafka that calls a decoder, and the decoders it imports by name.
PATCHED_MODULES: dict[str, tuple[str, ...]] = {
    "aiokafka.codec": ("gzip_decode", "snappy_decode", "lz4_decode", "zstd_decode"),
    "aiokafka.record.default_records": (
        "gzip_decode", "snappy_decode", "lz4_decode", "zstd_decode"),
    "aiokafka.record.legacy_records": ("gzip_decode", "snappy_decode", "lz4_decode"),
    "aiokafka.record._crecords.default_records": (
        "gzip_decode", "snappy_decode", "lz4_decode", "zstd_decode"),
    "aiokafka.record._crecords.legacy_records": ("gzip_decode", "snappy_decode", "lz4_decode"),
}
_installed = False


def _bounded(codec: str) -> Callable[[Any], bytes]:
    inflate = INFLATE[codec]

    def decode(payload: Any) -> bytes:
        return inflate(payload, _limit)

    decode.__name__ = decode.__qualname__ = f"{codec}_decode"
    decode.sinkfleet_bounded = True  # type: ignore[attr-defined]
    return decode


class _Tracked:
    """aiokafka's MemoryRecords, remembering the batch handed out last."""

    def __init__(self, records: Any) -> None:
        self._records = records
        self.last: Any = None

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        self.last = self._records.next_batch()
        return self.last

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())


def _bounded_unpack(original: Callable[[Any], Iterator[Any]]
                    ) -> Callable[[Any], Iterator[Any]]:
    def _unpack_records(self: Any) -> Iterator[Any]:
        tracked = self._records = _Tracked(self._records)
        while True:
            try:
                yield from original(self)
                return
            except BatchTooLarge as exc:
                # The original iterator died inside the batch; the records object is
                # already past it, so a fresh iterator carries on with the next batch.
                batch = tracked.last
                marker = oversize_batch(self._tp, batch, self.next_fetch_offset, exc)
                self.next_fetch_offset = batch.next_offset
                yield marker

    _unpack_records.sinkfleet_bounded = True  # type: ignore[attr-defined]
    return _unpack_records


def install() -> None:
    """Bound every aiokafka batch inflation in this process (idempotent).

    Raises RuntimeError naming what is missing when aiokafka's internals changed."""
    global _installed
    if _installed:
        return
    from aiokafka.consumer import fetcher

    targets: list[tuple[Any, str]] = []
    for name, functions in PATCHED_MODULES.items():
        try:
            module = importlib.import_module(name)
        except ImportError:
            if "._crecords." in name:  # aiokafka built without its C extension
                continue
            raise
        for fn in functions:
            if not callable(getattr(module, fn, None)):
                raise RuntimeError(f"aiokafka changed: {name}.{fn} is gone; sinkfleet cannot"
                                   " bound batch decompression (sinkfleet/kafka/bounds.py)")
            targets.append((module, fn))
    unpack = getattr(getattr(fetcher, "PartitionRecords", None), "_unpack_records", None)
    if unpack is None:
        raise RuntimeError("aiokafka changed: PartitionRecords._unpack_records is gone;"
                           " sinkfleet cannot bound batch decompression")
    for module, fn in targets:
        setattr(module, fn, _bounded(fn.removesuffix("_decode")))
    fetcher.PartitionRecords._unpack_records = _bounded_unpack(unpack)
    _installed = True
