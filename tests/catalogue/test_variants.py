"""Catalogue variants for tests (tests/support/catalogue.py): overrides merged into the
copied specs, so a test says what differs instead of editing YAML text."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sinkfleet.config import load_settings
from tests.support.catalogue import DELETE, ROOT, make_catalogue, merged


def test_merged_by_key_by_name_deleted_or_computed() -> None:
    base = {"a": 1, "batch": {"max_records": 5000, "max_age_ms": 250},
            "columns": [{"name": "x", "from": "x"}, {"name": "y", "from": "y"}],
            "sinks": ["s1", "s2"]}
    assert merged(base, {"batch": {"max_records": 50}, "new": True, "a": DELETE,
                         "columns": {"y": {"type": "bigint"}, "x": DELETE},
                         "sinks": lambda sinks: ["nope", *sinks[1:]]}) == {
        "batch": {"max_records": 50, "max_age_ms": 250},
        "columns": [{"name": "y", "from": "y", "type": "bigint"}],
        "sinks": ["nope", "s2"], "new": True}
    assert base["batch"] == {"max_records": 5000, "max_age_ms": 250}  # not changed in place


@pytest.mark.parametrize("override", [{"missing": DELETE}, {"columns": {"nope": {"a": 1}}}])
def test_a_variant_that_no_longer_applies_fails(override: dict[str, object]) -> None:
    with pytest.raises((KeyError, AssertionError)):
        merged({"columns": [{"name": "x"}]}, override)


def test_make_catalogue_merges_overrides_into_each_folder(tmp_path: Path) -> None:
    settings = load_settings(home=ROOT)
    tc = make_catalogue(tmp_path, settings, partitions=2, max_records=40, overrides={
        "topics": {"config": {"retention.ms": "1000"}},
        "sinks": {"cache": DELETE, "retention": DELETE,
                  "columns": {"action_parameters": {"type": "text"}}},
        "workers": {"batch": {"max_age_ms": 7}}})
    topic = tc.catalogue.topics[tc.topic]
    assert (topic.partitions, topic.config["retention.ms"]) == (2, "1000")
    sink = tc.catalogue.sinks[tc.table]
    assert (sink.spec.cache, sink.spec.retention) == (None, None)
    assert {c.name: c.pg_type for c in sink.columns}["action_parameters"] == "text"
    worker = tc.catalogue.worker("events")
    assert (worker.group, worker.sinks) == (tc.group, [tc.table])
    assert (worker.batch.max_records, worker.batch.max_age_ms) == (40, 7)
    # everything not overridden is the project's spec, under the test's names
    project = yaml.safe_load((ROOT / "sinks" / "experience_events.yaml").read_text())
    copied = yaml.safe_load((tc.root / "sinks" / "events.yaml").read_text())
    assert copied == {**{k: v for k, v in project.items() if k not in ("cache", "retention")},
                      "name": tc.table, "topic": tc.topic, "table": tc.table,
                      "columns": [c | {"type": "text"} if c["name"] == "action_parameters"
                                  else c for c in project["columns"]]}
