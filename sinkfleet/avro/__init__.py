"""Avro codecs: framing, schema store, resolution, bounded decoding of untrusted bytes."""

from sinkfleet.avro.bounds import check_bounded
from sinkfleet.avro.codec import DEFAULT_MAX_MESSAGE_BYTES, Codec, SchemaStore, schema_fingerprint
from sinkfleet.avro.framing import parse_frame

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Codec", "SchemaStore", "check_bounded", "parse_frame",
           "schema_fingerprint"]
