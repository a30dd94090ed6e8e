"""`sinkfleet produce --family …`: which records a run publishes (pure: no servers)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.dev.produce import ProduceResult, summary, synthetic_load
from sinkfleet.dev.synthetic.loads import FAMILIES
from sinkfleet.errors import CatalogueError, SinkfleetError

ROOT = Path(__file__).resolve().parents[2]
CAT = load_catalogue(ROOT)


def test_one_family() -> None:
    load = synthetic_load(CAT, ["policy"], 50)
    assert (load.label, load.total) == ("policy", 50)
    assert Counter(f for f, _ in load.items) == {"policy": 50}


def test_several_families_and_all_publish_count_of_each() -> None:
    load = synthetic_load(CAT, ["job", "audit_entry"], 20)
    assert load.total == 40 and Counter(f for f, _ in load.items) == {"job": 20, "audit_entry": 20}
    everything = synthetic_load(CAT, ["all"], 10)
    assert everything.families == list(FAMILIES) and everything.total == 10 * len(FAMILIES)
    assert Counter(f for f, _ in everything.items) == dict.fromkeys(FAMILIES, 10)


def test_mixed_is_count_in_all_over_the_families_the_catalogue_carries(tmp_path: Path) -> None:
    load = synthetic_load(CAT, ["mixed"], 3000)
    assert set(Counter(f for f, _ in load.items)) == set(FAMILIES)
    for sub in ("schemas", "topics", "sinks", "workers"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    for name in ("topics/audit_entries.yaml", "sinks/audit_entries.yaml", "workers/audit.yaml"):
        (tmp_path / name).unlink()
    small = synthetic_load(load_catalogue(tmp_path), ["mixed"], 3000)
    assert "audit_entry" not in small.families
    assert "audit_entry" not in {f for f, _ in small.items}


@pytest.mark.parametrize("families, error, match", [
    (["nope"], CatalogueError, "no topic carries family 'nope'"),
    (["mixed", "policy"], SinkfleetError, "cannot be combined"),
    ([], SinkfleetError, "name a family"),
])
def test_mistakes_are_explained(families: list[str], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        synthetic_load(CAT, families, 1)


def test_summary_names_each_family_and_the_tombstones() -> None:
    one = ProduceResult("policy", 10, 2.0, by_family={"policy": 10})
    assert summary(one).startswith("produced 10 policy records in 2.0s (5/s)")
    mixed = ProduceResult("mixed", 3, 1.0, by_family={"job": 2, "policy": 1}, tombstones=1)
    assert "3 records (job 2, policy 1) incl. 1 tombstones" in summary(mixed)
