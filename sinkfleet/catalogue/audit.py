"""Which record field holds an audited family's content hash (from its audit sink)."""

from __future__ import annotations

from sinkfleet.catalogue.loader import Catalogue, Sink


def hash_field(sink: Sink) -> str:
    """The record field an audit sink's hash column comes from."""
    assert sink.spec.audit is not None
    column = next(c for c in sink.columns if c.name == sink.spec.audit.hash)
    assert column.source is not None
    return column.source.path[0]


def audit_hash_fields(catalogue: Catalogue) -> dict[str, str]:
    """family -> the field holding its content hash, for every audited family."""
    return {sink.topic.schema_: hash_field(sink) for sink in catalogue.sinks.values()
            if sink.spec.audit is not None}
