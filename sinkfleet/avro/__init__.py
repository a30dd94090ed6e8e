"""Avro codecs: framing, schema store, resolution."""

from sinkfleet.avro.codec import Codec, SchemaStore, schema_fingerprint
from sinkfleet.avro.framing import parse_frame

__all__ = ["Codec", "SchemaStore", "parse_frame", "schema_fingerprint"]
