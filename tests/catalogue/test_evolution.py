"""Schema evolution of the catalogue without a database: levels from topics/*.yaml,
earlier versions from a directory (`schemas check --against DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sinkfleet.catalogue.evolution import check_against_dir, level_of, refuse_incompatible
from sinkfleet.config import load_settings
from sinkfleet.errors import CatalogueError, ConfigError, SchemaIncompatible
from tests.support.evolution import EXTRA, NOTE, Evo


@pytest.fixture
def evo(tmp_path: Path) -> Evo:
    return Evo(tmp_path, load_settings(home=tmp_path), "cat0000001")


def previous(tmp: Path, evo: Evo, *schemas: dict) -> Path:
    """DIR/<family>/<N>.avsc for each schema, N = 1, 2, …"""
    folder = tmp / "previous"
    (folder / evo.family).mkdir(parents=True)
    for n, schema in enumerate(schemas, 1):
        (folder / evo.family / f"{n}.avsc").write_text(json.dumps(schema))
    return folder


def test_compatible_evolution_passes_and_says_against_what(evo: Evo, tmp_path: Path) -> None:
    _, cat = evo.version(evo.schema(NOTE, EXTRA))
    [status] = check_against_dir(cat, previous(tmp_path, evo, evo.schema(), evo.schema(NOTE)))
    assert status.problems == [] and status.is_new_version and status.next_version == 3
    assert status.summary() == f"{evo.family}: compatible with version 2 (BACKWARD)"
    refuse_incompatible([status])  # nothing to refuse


def test_an_added_field_without_default_is_refused_naming_it(evo: Evo, tmp_path: Path) -> None:
    _, cat = evo.version(evo.schema({"name": "foo", "type": "string"}))
    statuses = check_against_dir(cat, previous(tmp_path, evo, evo.schema()))
    with pytest.raises(SchemaIncompatible) as caught:
        refuse_incompatible(statuses)
    first, hint = str(caught.value).splitlines()
    assert first == (f"{evo.family}: field 'foo' was added without a default: records written"
                     " with version 1 cannot be read")
    assert "BACKWARD" in hint and "compatibility:" in hint


def test_per_topic_override_none_accepts_it(evo: Evo, tmp_path: Path) -> None:
    schema = evo.schema({"name": "foo", "type": "string"})
    _, cat = evo.version(schema, compatibility="NONE")
    assert level_of(cat, evo.family) == "NONE"
    [status] = check_against_dir(cat, previous(tmp_path, evo, evo.schema()))
    assert status.problems == [] and status.is_new_version


def test_forward_override_applies_the_other_direction(evo: Evo, tmp_path: Path) -> None:
    v1 = evo.schema(NOTE)
    v1["fields"][-1] = {"name": "note", "type": "string"}  # no default in version 1
    _, cat = evo.version(evo.schema(), compatibility="FORWARD")  # note removed
    [status] = check_against_dir(cat, previous(tmp_path, evo, v1))
    assert status.problems == [
        f"{evo.family}: field 'note' was removed, and the old schema has no default for it:"
        " readers still on version 1 cannot read records written with the new schema"]


def test_unchanged_and_new_families(evo: Evo, tmp_path: Path) -> None:
    _, cat = evo.version(evo.schema())
    [status] = check_against_dir(cat, previous(tmp_path, evo, evo.schema()))
    assert status.summary() == f"{evo.family}: unchanged (version 1)"
    assert not status.is_new_version
    (tmp_path / "empty").mkdir()
    [status] = check_against_dir(cat, tmp_path / "empty")
    assert status.summary() == f"{evo.family}: new family (nothing to check against)"


def test_a_flat_directory_holds_the_latest_version(evo: Evo, tmp_path: Path) -> None:
    """E.g. `git show main:schemas/…` into a folder: DIR/<family>.avsc."""
    _, cat = evo.version(evo.schema())
    flat = tmp_path / "main-schemas"
    flat.mkdir()
    old = evo.schema()
    old["fields"][2]["type"] = "string"  # n was a string
    (flat / f"{evo.family}.avsc").write_text(json.dumps(old))
    [status] = check_against_dir(cat, flat)
    assert status.problems == [
        f"{evo.family}: field 'n': the new type int cannot read string: records written with"
        f" the schema in {flat / (evo.family + '.avsc')} cannot be read"]


def test_wrong_level_and_wrong_directory_are_clear(evo: Evo, tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="compatibility: Input should be 'BACKWARD'"):
        evo.version(evo.schema(), compatibility="SIDEWAYS")
    _, cat = evo.version(evo.schema())
    with pytest.raises(ConfigError, match="not a directory"):
        check_against_dir(cat, tmp_path / "nope")
    with pytest.raises(CatalogueError, match="no schema nope in schemas/"):
        check_against_dir(cat, tmp_path, ["nope"])
