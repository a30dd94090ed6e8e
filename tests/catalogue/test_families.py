"""Every record family of the project catalogue: it loads, its synthetic records fit its
schema, state families are keyed by their ids and audit records hash canonically."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.hashing import content_hash
from sinkfleet.catalogue import load_catalogue
from sinkfleet.catalogue.audit import hash_field
from sinkfleet.dev.synthetic.base import StateLoad
from sinkfleet.dev.synthetic.loads import FAMILIES, LOADS, Tombstone, synthetic_records
from sinkfleet.keys import join_key, record_key

ROOT = Path(__file__).resolve().parents[2]
CAT = load_catalogue(ROOT)
STATE = sorted(f for f, load in LOADS.items() if issubclass(load, StateLoad))
# Families `sinkfleet produce` cannot generate yet (a family's catalogue files may land
# before its synthetic load; keep this empty at a merge).
NO_LOAD_YET: set[str] = set()


def sink_of(family: str) -> Any:
    topic = CAT.topic_for_family(family)
    return next(s for s in CAT.sinks.values() if s.topic.name == topic.name)


def test_every_family_has_a_topic_a_sink_a_worker_and_a_synthetic_load() -> None:
    assert set(CAT.schemas) == set(FAMILIES) | NO_LOAD_YET
    assert not NO_LOAD_YET & set(FAMILIES), "a family with a load is no longer pending"
    sinks = [sink_of(f).spec.name for f in CAT.schemas]
    carried = [s for w in CAT.workers.values() for s in w.sinks]
    assert sorted(carried) == sorted(sinks), "every sink in exactly one worker group"
    assert CAT.worker("events").group == "sinkfleet.events"
    modes = {f: sink_of(f).spec.mode for f in FAMILIES}
    assert {f for f, m in modes.items() if m == "state"} - NO_LOAD_YET == set(STATE)
    assert [f for f, m in modes.items() if m == "audit"] == ["audit_entry"]
    assert {f for f, m in modes.items() if m == "merge"} == {
        "distributed_metric", "capability_set", "skill_use"}


@pytest.mark.parametrize("family", FAMILIES)
def test_synthetic_records_fit_the_schema_and_survive_a_roundtrip(family: str) -> None:
    codec = Codec(CAT.schemas[family], SchemaStore())
    hashed = family == "audit_entry"
    seen = 0
    for record in islice(synthetic_records(family, seed=5), 1500):
        if isinstance(record, Tombstone):
            continue
        if hashed:
            record = {**record, "content_hash": content_hash(record, CAT.schemas[family],
                                                             "content_hash")}
        codec.validate(record)
        payload = codec.encode(record)
        assert codec.encode(codec.decode(payload)) == payload
        seen += 1
    assert seen > 1000


@pytest.mark.parametrize("family", STATE)
def test_state_ids_are_the_topic_keys(family: str) -> None:
    topic, sink = CAT.topic_for_family(family), sink_of(family)
    load = LOADS[family]
    assert isinstance(load.key, tuple)
    assert list(load.key) == topic.key
    assert [c.source.path[0] for c in sink.columns if c.name in sink.spec.id] == topic.key
    assert sink.spec.cache is None or sink.spec.cache.latest
    assert CAT.topics[topic.name].config["cleanup.policy"] == "compact"
    published: set[bytes] = set()
    tombstones = 0
    for item in islice(synthetic_records(family, seed=6), 3000):
        if isinstance(item, Tombstone):
            key = join_key(item.key)
            assert key in published, "a tombstone deletes an id that was published"
            tombstones += 1
        else:
            key = record_key(topic, item)
            assert key == join_key([item[k] for k in topic.key])
            published.add(key)
    assert tombstones > 0 or family == "policy"


def test_audit_hash_is_the_same_before_and_after_the_wire() -> None:
    schema = CAT.schemas["audit_entry"]
    sink = sink_of("audit_entry")
    assert hash_field(sink) == "content_hash"
    # Every top-level field is a column of its own name (audit verify rebuilds rows).
    assert {c.name: c.source.path for c in sink.columns if c.source} == {
        f["name"]: (f["name"],) for f in schema["fields"]}
    assert CAT.topic_for_family("audit_entry").key == ["tenant_id"]
    codec = Codec(schema, SchemaStore())
    for record in islice(synthetic_records("audit_entry", seed=8), 500):
        assert isinstance(record, dict) and record["content_hash"] is None
        digest = content_hash(record, schema, "content_hash")
        decoded = codec.decode(codec.encode({**record, "content_hash": digest}))
        assert decoded["content_hash"] == digest
        assert content_hash(decoded, schema, "content_hash") == digest


async def test_the_publisher_fills_the_audit_hash_the_worker_checks() -> None:
    from sinkfleet.config import load_settings
    from sinkfleet.producer import Publisher

    pub = Publisher(load_settings(home=ROOT), catalogue=CAT)  # never started: no Kafka
    schema = CAT.schemas["audit_entry"]
    codec = Codec(schema, SchemaStore())
    for record in islice(synthetic_records("audit_entry", seed=9), 50):
        assert isinstance(record, dict)
        topic, key, value = pub.encode("audit_entry", record)
        decoded = codec.decode(value)
        assert topic == "agent.audit-entries" and key == record["tenant_id"].encode()
        assert decoded["content_hash"] == content_hash(record, schema, "content_hash")
