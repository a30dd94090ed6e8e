"""storage: settings of a sink spec, and the SQL they make (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sinkfleet.catalogue import load_catalogue
from sinkfleet.catalogue.models import SinkSpec
from sinkfleet.sink.postgres.layout import stored_columns
from sinkfleet.sink.postgres.migrate import sink_migrations
from tests.support.catalogue import ROOT, copy_catalogue, edit_spec

ALIGNED_EVENTS = [
    "ts", "episode_id", "ingested_at",  # 8-byte
    "step_number", "sequence_number",  # 4-byte, as listed
    *(f"state_l{i}" for i in range(1, 9)), *(f"action_l{i}" for i in range(1, 9)),
    "reward_homeostasis", "reward_curiosity", "reward_efficiency", "reward_goal",
    "policy_version_hash",
    "event_type", "flags",  # 2-byte
    "event_id", "agent_id", "action_intent", "action_executor", "action_parameters",
]


def test_project_events_layout() -> None:
    sink = load_catalogue(ROOT).sinks["experience_events"]
    assert sink.spec.key_columns == ["ts", "event_id"]
    assert sink.spec.id == ["event_id", "ts"]  # the id (and what readers see) is unchanged
    assert [c.name for c in stored_columns(sink)] == ALIGNED_EVENTS
    assert sorted(c.name for c in sink.columns) == sorted(ALIGNED_EVENTS)


def test_first_migration_text_unchanged_by_storage(tmp_path: Path) -> None:
    """A database made before ``storage:`` keeps its recorded checksum: the settings
    change nothing in the sink's first migration, they add one of their own."""
    with_storage = load_catalogue(ROOT).sinks["experience_events"]
    root = copy_catalogue(tmp_path / "old")
    from tests.support.catalogue import DELETE

    edit_spec(root / "sinks" / "experience_events.yaml", {"storage": DELETE})
    without = load_catalogue(root).sinks["experience_events"]
    new, old = sink_migrations(with_storage), sink_migrations(without)
    assert new[0] == old[0]
    digest = with_storage.spec.storage.digest() if with_storage.spec.storage else ""
    assert [m.id for m in new] == [m.id for m in old[:1]] + [
        f"sink:experience_events:key-{digest}"] + [m.id for m in old[1:]]
    assert "ADD PRIMARY KEY (\"ts\", \"event_id\") WITH (fillfactor = 100)" in new[1].sql


def test_key_settings_change_is_a_new_migration() -> None:
    spec = yaml.safe_load((ROOT / "sinks" / "experience_events.yaml").read_text())
    a = SinkSpec.model_validate(spec)
    b = SinkSpec.model_validate({**spec, "storage": {"key": "time_first"}})
    c = SinkSpec.model_validate({**spec, "storage": {"column_order": "aligned"}})
    assert a.storage and b.storage and c.storage
    assert a.storage.digest() != b.storage.digest()
    assert not c.storage.reshapes_key and c.key_columns == ["event_id", "ts"]


def test_time_first_needs_the_time_column_in_the_id() -> None:
    spec = yaml.safe_load((ROOT / "sinks" / "experience_events.yaml").read_text())
    spec.update(id=["event_id"])
    with pytest.raises(ValidationError, match="list time_column among the id columns"):
        SinkSpec.model_validate(spec)


def test_compact_needs_partitioning() -> None:
    spec = yaml.safe_load((ROOT / "sinks" / "experience_events.yaml").read_text())
    spec.update(partitioning=None, retention=None, storage={"compact": True})
    with pytest.raises(ValidationError, match="storage.compact packs closed time partitions"):
        SinkSpec.model_validate(spec)
