"""Bounded batch inflation (sinkfleet.kafka.bounds): each decoder gives exactly the data
up to the limit and refuses one byte over; aiokafka's consumer yields an oversize batch
as one OversizeBatch record, in offset order, and nothing around it is lost."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import aiokafka
import cramjam
import pytest
from aiokafka import TopicPartition
from aiokafka.codec import gzip_encode, lz4_encode, snappy_encode, zstd_encode
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record import MemoryRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder

import sinkfleet.kafka.client  # installs the bound, as for every client
from sinkfleet.config import load_settings
from sinkfleet.errors import ConfigError
from sinkfleet.kafka import bounds as kafka_bounds
from sinkfleet.kafka.bounds import (
    EXCERPT_BYTES,
    INFLATE,
    PATCHED_MODULES,
    BatchTooLarge,
    OversizeBatch,
    set_max_batch_bytes,
)
from tests.support.bombs import build, rebase

# Several lz4 blocks of 64 KiB: compressed and stored ones, a short compressed one last.
PAYLOAD = os.urandom(50_000) + bytes(200_000) + os.urandom(70_000) + b"abc" * 3000


def _zstd(data: bytes) -> bytes:
    return zstd_encode(data)


ENCODE = {
    "gzip": gzip_encode,
    "snappy": snappy_encode,  # xerial framing, as Kafka's Java client writes it
    "lz4": lz4_encode,
    "zstd": _zstd,
}


@pytest.mark.parametrize("codec", sorted(ENCODE))
def test_exactly_the_limit_inflates_one_byte_over_is_refused(codec: str) -> None:
    packed = ENCODE[codec](PAYLOAD)
    assert INFLATE[codec](packed, len(PAYLOAD)) == PAYLOAD
    assert INFLATE[codec](packed, len(PAYLOAD) + 1) == PAYLOAD
    with pytest.raises(BatchTooLarge) as caught:
        INFLATE[codec](packed, len(PAYLOAD) - 1)
    exc = caught.value
    assert (exc.codec, exc.limit, exc.compressed_size) == (codec, len(PAYLOAD) - 1, len(packed))
    assert exc.compressed == packed[:EXCERPT_BYTES]
    assert str(exc) == f"{codec} data decompresses to more than {len(PAYLOAD) - 1} bytes"


def test_raw_snappy_and_concatenated_gzip_members_and_zstd_frames() -> None:
    raw = bytes(cramjam.snappy.compress_raw(PAYLOAD))
    assert INFLATE["snappy"](raw, len(PAYLOAD)) == PAYLOAD
    with pytest.raises(BatchTooLarge):
        INFLATE["snappy"](raw, len(PAYLOAD) - 1)
    for codec in ("gzip", "zstd"):
        two = ENCODE[codec](PAYLOAD[:1000]) + ENCODE[codec](PAYLOAD[1000:])
        assert INFLATE[codec](two, len(PAYLOAD)) == PAYLOAD
        with pytest.raises(BatchTooLarge):
            INFLATE[codec](two, len(PAYLOAD) - 1)
    padded = gzip_encode(b"abc") + bytes(10)  # zero padding after a gzip member is allowed
    assert INFLATE["gzip"](padded, 3) == b"abc"


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_a_gigabyte_bomb_is_refused_after_inflating_at_most_the_limit(codec: str) -> None:
    bomb = build(codec, [256 << 20] * 4)  # 1 GiB of zeros
    assert bomb.inflated > 1 << 30 and len(bomb.compressed) < 5 << 20
    with pytest.raises(BatchTooLarge) as caught:
        INFLATE[codec](bomb.compressed, 1 << 20)
    assert caught.value.compressed_size == len(bomb.compressed)


def test_truncated_data_is_corrupt_not_too_large() -> None:
    from aiokafka.errors import CorruptRecordException

    for codec in ("gzip", "zstd"):
        packed = ENCODE[codec](PAYLOAD)
        with pytest.raises(CorruptRecordException):
            INFLATE[codec](packed[: len(packed) // 2], 1 << 30)
    with pytest.raises(zlib.error):
        INFLATE["gzip"](b"\x1f\x8b" + bytes(30), 1 << 30)


def test_the_installed_decoders_are_the_bounded_ones() -> None:
    """Pins what is patched: if aiokafka moves or renames a decoder, or the fetcher's
    batch iterator, this fails (and ``install()`` refuses to run)."""
    import importlib

    assert aiokafka.__version__.startswith("0.14."), (
        "aiokafka changed version: check sinkfleet/kafka/bounds.py still bounds every"
        " decoder (record/default_records.py, legacy_records.py, _crecords) and"
        " PartitionRecords._unpack_records, then widen this pin")
    for name, functions in PATCHED_MODULES.items():
        module = importlib.import_module(name)
        for fn in functions:
            assert getattr(getattr(module, fn), "sinkfleet_bounded", False), f"{name}.{fn}"
    assert getattr(PartitionRecords._unpack_records, "sinkfleet_bounded", False)
    # the C extension is what aiokafka actually uses here, and it is bounded too
    assert MemoryRecords.__module__ == "aiokafka.record._crecords.memory_records"


def _plain_batch(base: int, values: list[bytes]) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k", value=value, headers=[])
    return rebase(bytes(builder.build()), base)


def _unpack(buffer: bytes, fetch_offset: int) -> tuple[list[Any], int]:
    records = PartitionRecords(TopicPartition("t", 3), MemoryRecords(buffer), [],
                               fetch_offset, None, None, True, READ_UNCOMMITTED)
    return list(records), records.next_fetch_offset


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_the_consumer_yields_an_oversize_batch_in_place_and_goes_on(codec: str) -> None:
    set_max_batch_bytes(1 << 20)
    try:
        bomb = build(codec, [8 << 20, b"v", 8 << 20], timestamp_ms=1_700_000_000_123)
        fetched = (_plain_batch(0, [b"a", b"b"]) + rebase(bomb.batch, 2)
                   + _plain_batch(5, [b"c", b"d"]))
        records, next_offset = _unpack(fetched, 0)
    finally:
        set_max_batch_bytes(kafka_bounds.DEFAULT_MAX_BATCH_BYTES)
    assert [(r.offset, r.value) for r in records] == [
        (0, b"a"), (1, b"b"), (4, b""), (5, b"c"), (6, b"d")]
    assert next_offset == 7
    marker = records[2]
    assert isinstance(marker, OversizeBatch)
    assert (marker.topic, marker.partition, marker.first_offset, marker.offset) == ("t", 3, 2, 4)
    assert (marker.key, marker.headers, marker.timestamp) == (None, (), 1_700_000_000_123)
    assert marker.compressed == bomb.compressed[:EXCERPT_BYTES]
    assert marker.error is not None
    assert str(marker.error) == (
        f"the {codec} record batch at t[3] offsets 2..4 ({len(bomb.compressed)} compressed"
        f" bytes) decompresses to more than {1 << 20} bytes (SINKFLEET_MAX_BATCH_BYTES); it"
        " was not inflated: raise SINKFLEET_MAX_BATCH_BYTES and replay these offsets to"
        " read its records")


def test_a_fetch_from_inside_the_batch_names_the_unread_offsets_only() -> None:
    set_max_batch_bytes(1 << 20)
    try:
        bomb = build("zstd", [4 << 20, 4 << 20, 4 << 20])
        records, next_offset = _unpack(rebase(bomb.batch, 10), 11)
    finally:
        set_max_batch_bytes(kafka_bounds.DEFAULT_MAX_BATCH_BYTES)
    [marker] = records
    assert (marker.first_offset, marker.offset, next_offset) == (11, 12, 13)


@pytest.mark.parametrize("codec", sorted(ENCODE))
def test_batches_aiokafkas_producer_builds_inflate_as_before(codec: str) -> None:
    values = [os.urandom(100) + bytes(i) for i in range(300)]  # the last lz4 block is short
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type={"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}[codec],
        is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
        batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1, key=None, value=value, headers=[])
    records, next_offset = _unpack(rebase(bytes(builder.build()), 7), 7)
    assert [(r.offset, r.value) for r in records] == [(7 + i, v) for i, v in enumerate(values)]
    assert next_offset == 307


def test_the_limit_must_hold_one_largest_record(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SINKFLEET_MAX_BATCH_BYTES=2097152 is below"
                       " SINKFLEET_MAX_MESSAGE_BYTES=4194304"):
        load_settings(home=tmp_path, max_batch_bytes=2 << 20, max_message_bytes=4 << 20)
    assert load_settings(home=tmp_path).max_batch_bytes == 64 << 20


def test_client_kwargs_set_the_process_limit(tmp_path: Path) -> None:
    try:
        sinkfleet.kafka.client.kafka_client_kwargs(load_settings(home=tmp_path,
                                                          max_batch_bytes=10 << 20))
        assert kafka_bounds.max_batch_bytes() == 10 << 20
    finally:
        set_max_batch_bytes(kafka_bounds.DEFAULT_MAX_BATCH_BYTES)
