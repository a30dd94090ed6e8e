"""Compatibility levels and the messages that name the field (sinkfleet.avro.compat), and
old writer schemas decoding into the current reader schema (Codec + SchemaStore)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.compat import LEVELS, Prior, problems
from sinkfleet.errors import CatalogueError, DecodeError, UnknownWriterSchema

ROOT = Path(__file__).resolve().parents[2]
EXPERIENCE = json.loads((ROOT / "schemas" / "experience_event.avsc").read_text())


def changed(edit: Any) -> dict[str, Any]:
    new = copy.deepcopy(EXPERIENCE)
    edit({f["name"]: f for f in new["fields"]}, new)
    return new


V3 = [Prior("version 1", EXPERIENCE), Prior("version 3", EXPERIENCE)]


@pytest.mark.parametrize("edit", [
    lambda f, s: s["fields"].append({"name": "foo", "type": "string", "default": ""}),
    lambda f, s: s["fields"].remove(f["flags"]),  # had a default
    lambda f, s: f["step_number"].update(type="long"),  # int → long is a promotion
    lambda f, s: f["agent_id"].update(type=["null", "string"]),  # widened to nullable
    lambda f, s: f["reward"]["type"]["fields"].append({"name": "bonus", "type": "float",
                                                       "default": 0.0}),
], ids=["added-with-default", "removed-with-default", "int-to-long", "nullable", "nested"])
def test_backward_compatible_changes_pass(edit: Any) -> None:
    assert problems("experience_event", changed(edit), V3, "BACKWARD") == []


@pytest.mark.parametrize("edit, message", [
    (lambda f, s: s["fields"].append({"name": "foo", "type": "string"}),
     "experience_event: field 'foo' was added without a default: records written with"
     " version 3 cannot be read"),
    (lambda f, s: f["agent_id"].update(type="int"),
     "experience_event: field 'agent_id': the new type int cannot read string: records"
     " written with version 3 cannot be read"),
    (lambda f, s: f["episode_id"].update(type="int"),
     "field 'episode_id': the new type int cannot read long"),
    (lambda f, s: f["reward"]["type"]["fields"][0].update(type="string"),
     "field 'reward.homeostasis': the new type string cannot read float"),
    (lambda f, s: f["state"]["type"].update(items="string"),
     "field 'state[]': the new type string cannot read float"),
    # a change inside a nullable record: the checker reports the union; we name the field
    (lambda f, s: f["action_metadata"]["type"][1]["fields"].append(
        {"name": "bar", "type": "int"}),
     "field 'action_metadata.bar' was added without a default"),
    # null dropped from a union: the avro checker alone would say location "/"
    (lambda f, s: (f["action_metadata"].update(type=f["action_metadata"]["type"][1]),
                   f["action_metadata"].pop("default")),
     "field 'action_metadata': the new type sinkfleet.events.ActionMetadata cannot read null"),
    (lambda f, s: f["event_id"]["type"].update(size=8),
     "field 'event_id': the fixed size changed from 16 to 8"),
    (lambda f, s: s.update(name="Renamed"),
     "type sinkfleet.events.ExperienceEvent was renamed to sinkfleet.events.Renamed"),
], ids=["added-no-default", "type", "long-to-int", "nested", "array-items", "in-union",
        "null-dropped", "fixed-size", "renamed"])
def test_backward_incompatible_changes_name_the_field(edit: Any, message: str) -> None:
    found = problems("experience_event", changed(edit), V3, "BACKWARD")
    assert len(found) == 1, found
    assert message in found[0]
    assert found[0].endswith("records written with version 3 cannot be read")


def test_every_problem_is_reported_once() -> None:
    def edit(f: dict[str, Any], s: dict[str, Any]) -> None:
        f["agent_id"]["type"] = "int"
        f["event_type"]["type"] = "string"
        s["fields"].append({"name": "foo", "type": "string"})

    found = problems("experience_event", changed(edit), V3, "BACKWARD")
    assert sorted(found) == sorted([
        "experience_event: field 'agent_id': the new type int cannot read string: records"
        " written with version 3 cannot be read",
        "experience_event: field 'event_type': the new type string cannot read int: records"
        " written with version 3 cannot be read",
        "experience_event: field 'foo' was added without a default: records written with"
        " version 3 cannot be read"])


def test_forward_asks_whether_old_readers_read_new_records() -> None:
    removed = changed(lambda f, s: s["fields"].remove(f["agent_id"]))
    assert problems("e", removed, V3, "BACKWARD") == []
    assert problems("e", removed, V3, "FORWARD") == [
        "e: field 'agent_id' was removed, and the old schema has no default for it: readers"
        " still on version 3 cannot read records written with the new schema"]
    added = changed(lambda f, s: s["fields"].append({"name": "foo", "type": "string"}))
    assert problems("e", added, V3, "FORWARD") == []
    assert len(problems("e", added, V3, "FULL")) == 1
    assert len(problems("e", removed, V3, "FULL")) == 1


def test_transitive_levels_check_every_version_not_only_the_last() -> None:
    v1 = changed(lambda f, s: f["agent_id"].update(type="int"))
    priors = [Prior("version 1", v1), Prior("version 2", EXPERIENCE)]
    assert problems("e", EXPERIENCE, priors, "BACKWARD") == []
    assert problems("e", EXPERIENCE, priors, "BACKWARD_TRANSITIVE") == [
        "e: field 'agent_id': the new type string cannot read int: records written with"
        " version 1 cannot be read"]
    both = [Prior("version 1", v1), Prior("version 2", v1)]
    assert problems("e", EXPERIENCE, both, "FULL_TRANSITIVE") == [
        "e: field 'agent_id': the new type string cannot read int: records written with"
        " version 1 and version 2 cannot be read",
        "e: field 'agent_id': the old type int cannot read the new string: readers"
        " still on version 1 and version 2 cannot read records written with the new schema"]


def test_none_and_first_versions_check_nothing() -> None:
    broken = changed(lambda f, s: f["agent_id"].update(type="int"))
    assert problems("e", broken, V3, "NONE") == []
    assert all(problems("e", broken, [], level) == [] for level in LEVELS)


def test_recursive_schemas_terminate() -> None:
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None}]}
    wider = copy.deepcopy(node)
    wider["fields"].insert(1, {"name": "w", "type": "int"})
    assert problems("n", wider, [Prior("version 1", node)], "FULL") == [
        "n: field 'w' was added without a default: records written with version 1 cannot"
        " be read"]


def test_a_schema_the_avro_package_cannot_parse_is_a_catalogue_error() -> None:
    with pytest.raises(CatalogueError, match="version 1 is not a schema"):
        problems("e", EXPERIENCE, [Prior("version 1", {"type": "record"})], "BACKWARD")


# --- decoding old writer schemas ---------------------------------------------------------
V1 = {"type": "record", "name": "R", "namespace": "t", "fields": [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "int"},
    {"name": "gone", "type": {"type": "array", "items": "float"}},
    {"name": "meta", "type": ["null", {"type": "record", "name": "M", "fields": [
        {"name": "a", "type": "string"}]}], "default": None}]}
V2 = {"type": "record", "name": "R", "namespace": "t", "fields": [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "long"},  # promoted
    {"name": "note", "type": "string", "default": "n/a"},  # added with a default
    {"name": "meta", "type": ["null", {"type": "record", "name": "M", "fields": [
        {"name": "a", "type": "string"},
        {"name": "b", "type": "int", "default": 7}]}], "default": None}]}


def test_records_of_an_old_writer_schema_decode_into_the_reader_field_by_field() -> None:
    assert problems("r", V2, [Prior("version 1", V1)], "BACKWARD") == []
    store = SchemaStore()
    old, new = Codec(V1, store), Codec(V2, store)
    written = [{"id": "a", "n": 1, "gone": [1.5, 2.5], "meta": None},
               {"id": "b", "n": -(2**31), "gone": [], "meta": {"a": "x"}}]
    assert [new.decode(old.encode(r)) for r in written] == [
        {"id": "a", "n": 1, "note": "n/a", "meta": None},
        {"id": "b", "n": -(2**31), "note": "n/a", "meta": {"a": "x", "b": 7}}]
    # The other way round is not compatible, and the checker and fastavro agree on it.
    assert problems("r", V2, [Prior("version 1", V1)], "FORWARD") == [
        "r: field 'n': the old type int cannot read the new long: readers still on version 1"
        " cannot read records written with the new schema",
        "r: field 'gone' was removed, and the old schema has no default for it: readers still"
        " on version 1 cannot read records written with the new schema"]
    with pytest.raises(DecodeError, match="does not resolve"):
        old.decode(new.encode({"id": "c", "n": 5, "note": "hi", "meta": None}))


def test_an_unregistered_writer_schema_is_an_unknown_writer_schema_error() -> None:
    other = Codec(V1, SchemaStore())  # the writer's store, not the reader's
    reader = Codec(V2, SchemaStore())
    with pytest.raises(UnknownWriterSchema, match="unknown writer schema") as caught:
        reader.decode(other.encode({"id": "a", "n": 1, "gone": [], "meta": None}))
    assert caught.value.fingerprint == other.fingerprint
    assert not reader.store.knows(other.fingerprint)
