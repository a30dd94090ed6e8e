"""The catalogue's rules for merge sinks: each refused with a message naming the fix."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.errors import CatalogueError

ROOT = Path(__file__).resolve().parents[2]
SINK = "distributed_metrics.yaml"


@pytest.fixture
def cat_root(tmp_path: Path) -> Path:
    for sub in ("schemas", "topics", "sinks", "workers"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_shipped_merge_sinks_load_with_their_crdts() -> None:
    cat = load_catalogue(ROOT)
    merge = cat.sinks["distributed_metrics"].spec.merge
    assert merge is not None and merge.replica == "replica_id"
    assert merge.crdts == {"total": "g_counter", "level": "pn_counter",
                           "reporters": "g_set", "observed_at": "max"}
    caps = cat.sinks["capability_sets"].spec.merge
    assert caps is not None and caps.crdts["capabilities"] == "or_set"


@pytest.mark.parametrize("old, new, match", [
    ("reporters: g_set, ", "", "column 'reporters' is neither an id, the replica nor a CRDT"),
    ("reporters: g_set", "reporters: g_counter",
     "column 'reporters' is a g_counter: it must come from an int or long"),
    ("level: pn_counter", "level: or_set", "column 'level' is a or_set: it must come from a"
     " record {adds: map<array<string>>, removes: array<string>}"),
    ("total: g_counter", "total: g_set", "column 'total' is a g_set: it must come from an"
     " array of strings"),
    ("replica: replica_id", "replica: scope", "id column 'scope' cannot be the replica"),
    ("replica: replica_id", "replica: observed_at",
     "the replica column 'observed_at' is not a CRDT"),
    ("mode: merge", "mode: append", "a 'merge:' section needs mode: merge"),
    ("  - {name: first_seen_at, default: now()}",
     "  - {name: first_seen_at, default: now()}\n  - {name: total_state, default: now()}",
     "column 'total_state' would hold the state of CRDT 'total'"),
    ("id: [scope, metric]", "id: [scope, metric]\ncache: {latest: true}",
     "merge sinks have no Redis cache"),
])
def test_bad_merge_sinks_are_refused(cat_root: Path, old: str, new: str, match: str) -> None:
    _edit(cat_root / "sinks" / SINK, old, new)
    with pytest.raises(CatalogueError, match=re.escape(match)) as info:
        load_catalogue(cat_root)
    assert SINK in str(info.value)


def test_a_replica_must_be_a_string(cat_root: Path) -> None:
    _edit(cat_root / "schemas" / "distributed_metric.avsc",
          '{"name": "replica_id", "type": "string"', '{"name": "replica_id", "type": "long"')
    with pytest.raises(CatalogueError, match="merge.replica 'replica_id' must come from a"
                       " non-null string or uuid field"):
        load_catalogue(cat_root)
