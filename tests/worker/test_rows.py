import json
from pathlib import Path

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import ValidationError
from sinkfleet.worker.rows import RowBuilder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def builder() -> RowBuilder:
    return RowBuilder(load_catalogue(ROOT).sinks["experience_events"])


def test_row_follows_the_sink_columns(builder: RowBuilder) -> None:
    event = next(e for e in ExperienceLoad(seed=3) if e["action_metadata"])
    row = dict(zip(builder.names, builder(event), strict=True))
    assert row["event_id"] == event["event_id"]
    assert row["reward_goal"] == event["reward"]["goal"]
    assert row["action_intent"] == event["action_metadata"]["intent_type"]
    assert json.loads(row["action_parameters"]) == json.loads(
        event["action_metadata"]["parameters"])
    assert "ingested_at" not in row  # filled by the database default


def test_missing_optional_record_gives_nulls(builder: RowBuilder) -> None:
    event = next(e for e in ExperienceLoad(seed=3) if not e["action_metadata"])
    row = dict(zip(builder.names, builder(event), strict=True))
    assert row["action_intent"] is None and row["action_parameters"] is None


@pytest.mark.parametrize("mutate, match", [
    (lambda e: e.update(event_type=70000), "smallint"),
    (lambda e: e.update(agent_id="a\x00b"), "NUL"),
    (lambda e: e.update(action_metadata={"intent_type": "x", "executor_id": "y",
                                         "parameters": "{not json"}), "JSON"),
    (lambda e: e.update(action_metadata={"intent_type": "x", "executor_id": "y",
                                         "parameters": '{"a": "\\u0000"}'}), "u0000"),
])
def test_values_postgres_would_refuse_are_validation_errors(builder, mutate, match) -> None:
    event = next(iter(ExperienceLoad(seed=4)))
    mutate(event)
    with pytest.raises(ValidationError, match=match):
        builder(event)


@pytest.mark.parametrize("length", [7, 9])
def test_vectors_must_have_exactly_the_stored_dimensions(builder: RowBuilder,
                                                         length: int) -> None:
    event = next(iter(ExperienceLoad(seed=5)))
    event["action"] = [0.5] * length
    with pytest.raises(ValidationError, match=f"action has {length} elements; the sink stores"
                                              " exactly 8"):
        builder(event)


def test_vectors_are_spread_over_columns(builder: RowBuilder) -> None:
    event = next(iter(ExperienceLoad(seed=6)))
    row = dict(zip(builder.names, builder(event), strict=True))
    assert [row[f"state_l{i}"] for i in range(1, 9)] == event["state"]
    assert [row[f"action_l{i}"] for i in range(1, 9)] == event["action"]
