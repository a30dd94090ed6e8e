"""Compression bombs: Kafka v2 record batches whose records are mostly zeros, built
(compressed) in a stream so that a 1 GiB bomb never exists uncompressed in the test."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cramjam
from aiokafka import TopicPartition
from aiokafka.record.util import calc_crc32c
from backports.zstd import ZstdCompressor

CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_HEADER = struct.Struct(">qiibIhiqqqhii")  # the v2 batch header, base offset .. count
_CHUNK = bytes(1 << 20)


def varint(n: int) -> bytes:
    """Kafka's zigzag varint."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _records(values: list[int | bytes], timestamp_delta: int = 0) -> Iterator[bytes]:
    """The records section, in pieces: record i's value is ``values[i]`` (or that many
    zero bytes)."""
    for i, value in enumerate(values):
        size = value if isinstance(value, int) else len(value)
        body_head = (b"\x00" + varint(timestamp_delta) + varint(i) + varint(-1)
                     + varint(size))
        yield varint(len(body_head) + size + 1) + body_head
        if isinstance(value, bytes):
            yield value
        else:
            for _ in range(size // len(_CHUNK)):
                yield _CHUNK
            yield bytes(size % len(_CHUNK))
        yield varint(0)  # no headers


class _Stream:
    def __init__(self, codec: str) -> None:
        self.codec = codec
        if codec == "gzip":
            self._c: Any = zlib.compressobj(6, zlib.DEFLATED, 31)
        elif codec == "lz4":  # Kafka's framing: independent blocks (KIP-57)
            self._c = cramjam.lz4.Compressor(level=1, content_checksum=False,
                                             block_linked=False)
        elif codec == "zstd":
            self._c = ZstdCompressor(level=1)
        else:
            raise ValueError(codec)
        self._out: list[bytes] = []

    def write(self, data: bytes) -> None:
        got = self._c.compress(data)  # cramjam's lz4 keeps its output until finish()
        if isinstance(got, bytes) and got:
            self._out.append(got)

    def finish(self) -> bytes:
        tail = self._c.finish() if self.codec == "lz4" else self._c.flush()
        return b"".join([*self._out, bytes(tail)])


@dataclass(frozen=True)
class Bomb:
    codec: str
    records: int
    inflated: int  # bytes of the records section, uncompressed
    compressed: bytes  # the records section, compressed
    batch: bytes  # the whole v2 record batch (base offset 0)


def build(codec: str, values: list[int | bytes], timestamp_ms: int | None = None) -> Bomb:
    """A v2 record batch of ``values`` compressed with ``codec`` (no producer id)."""
    stream, inflated = _Stream(codec), 0
    for piece in _records(values):
        inflated += len(piece)
        stream.write(piece)
    compressed = stream.finish()
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    n = len(values)
    header = _HEADER.pack(0, _HEADER.size - 12 + len(compressed), 0, 2, 0, CODEC_IDS[codec],
                          n - 1, ts, ts, -1, -1, -1, n)
    body = header[21:] + compressed  # the CRC covers attributes .. end
    batch = header[:17] + struct.pack(">I", calc_crc32c(body)) + body
    return Bomb(codec, n, inflated, compressed, batch)


def rebase(batch: bytes, base_offset: int) -> bytes:
    """The batch at another base offset (not covered by its CRC)."""
    return struct.pack(">q", base_offset) + batch[8:]


async def produce_batch(bootstrap: str, topic: str, partition: int, batch: bytes) -> None:
    """Send a ready-made record batch to Kafka as it is (a ProduceRequest of our own):
    aiokafka's producer would never build a batch like this."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import for_code
    from aiokafka.protocol.produce import ProduceRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=60_000)
    await client.bootstrap()
    try:
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        response = await client.send(leader, ProduceRequest(
            None, -1, 60_000, [(topic, [(partition, batch)])]))
        for _topic, parts in response.topics:
            for part in parts:
                if part[1] != 0:
                    raise for_code(part[1])(f"producing a raw batch to {topic}[{partition}]")
    finally:
        await client.close()
