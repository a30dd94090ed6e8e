"""The catalogue refuses bad files with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.errors import CatalogueError
from tests.support.catalogue import ROOT, copy_catalogue, edit_spec


@pytest.fixture
def cat_root(tmp_path: Path) -> Path:
    return copy_catalogue(tmp_path)


def test_project_catalogue_loads() -> None:
    cat = load_catalogue(ROOT)
    assert "experience_event" in cat.schemas
    sink = cat.sinks["experience_events"]
    types = {c.name: c.pg_type for c in sink.columns}
    assert types["event_id"] == "bytea"
    assert types["ts"] == "timestamptz"
    assert [types[f"state_l{i}"] for i in range(1, 9)] == ["real"] * 8
    assert types["event_type"] == "smallint"
    assert types["action_parameters"] == "jsonb"
    assert cat.worker("events").group == "sinkfleet.events"


@pytest.mark.parametrize("override, match", [
    ({"table": "ev; DROP TABLE x"}, "not a safe SQL identifier"),
    ({"columns": {"agent_id": {"name": "Agent-Id"}}}, "not a safe SQL identifier"),
    ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
    ({"columns": {"reward_goal": {"from": "reward.nope"}}}, "has no field 'nope'"),
    ({"columns": {"state_l1": {"type": "bigint"}}}, "cannot be stored as 'bigint'"),
    ({"columns": {"agent_id": {"from": "agent_id[0]"}}}, "'agent_id' is not an array"),
    ({"columns": {"state_l1": {"from": "state[-1]"}}}, "is not a field path"),
    ({"topic": "missing-topic"}, "not declared in topics/"),
])
def test_bad_sink_specs_are_refused(cat_root: Path, override: dict[str, Any], match: str
                                    ) -> None:
    edit_spec(cat_root / "sinks" / "experience_events.yaml", override)
    with pytest.raises(CatalogueError, match=match) as info:
        load_catalogue(cat_root)
    assert "experience_events.yaml" in str(info.value)


def test_hostile_topic_name_is_refused(cat_root: Path) -> None:
    edit_spec(cat_root / "topics" / "experience_events.yaml", {"name": "bad topic/../x"})
    with pytest.raises(CatalogueError, match="not a valid Kafka topic name"):
        load_catalogue(cat_root)


def test_unknown_sink_in_worker_is_refused(cat_root: Path) -> None:
    edit_spec(cat_root / "workers" / "events.yaml",
              {"sinks": lambda sinks: ["nope", *sinks[1:]]})  # was experience_events
    with pytest.raises(CatalogueError, match=r"events.yaml: sink 'nope'"):
        load_catalogue(cat_root)


def test_invalid_schema_file_is_refused(cat_root: Path) -> None:
    (cat_root / "schemas" / "experience_event.avsc").write_text('{"type": "record"')
    with pytest.raises(CatalogueError, match="experience_event.avsc: not a valid Avro schema"):
        load_catalogue(cat_root)


def test_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="SINKFLEET_HOME"):
        load_catalogue(tmp_path)


def test_schema_a_worker_could_not_decode_safely_is_refused(cat_root: Path) -> None:
    (cat_root / "schemas" / "experience_event.avsc").write_text(
        '{"type": "record", "name": "H", "fields": [{"name": "a", "type":'
        ' {"type": "array", "items": "null"}}]}')
    with pytest.raises(CatalogueError, match="experience_event.avsc: .*zero-width"):
        load_catalogue(cat_root)
