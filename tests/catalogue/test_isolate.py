"""isolated_copy: the project's catalogue under fresh names, references included."""

from __future__ import annotations

from pathlib import Path

from sinkfleet.catalogue.isolate import isolated_copy
from tests.support.catalogue import ROOT


def test_a_whole_copy_loads_with_its_references_pointing_into_the_copy(tmp_path: Path) -> None:
    """The benchmarks copy every family; a reference naming the original sink made the
    copy fail to load (architectures.parent_id → architectures)."""
    iso = isolated_copy(ROOT, tmp_path, "iso1")
    assert len(iso.sinks) == len(list((ROOT / "sinks").glob("*.yaml")))
    refs = {(sink.spec.name, ref.sink, tuple(ref.columns))
            for sink in iso.catalogue.sinks.values() for ref in sink.spec.references}
    assert ("architectures_iso1", "architectures_iso1", ("parent_id",)) in refs
    assert ("causal_edges_iso1", "memories_iso1", ("from_memory",)) in refs
    assert ("causal_edges_iso1", "memories_iso1", ("to_memory",)) in refs
    assert all(target.endswith("_iso1") for _, target, _ in refs)


def test_a_subset_copy_leaves_out_references_to_sinks_not_copied(tmp_path: Path) -> None:
    iso = isolated_copy(ROOT, tmp_path, "iso2", sinks=["causal_edges", "architectures"])
    by_name = {s.spec.name: s.spec for s in iso.catalogue.sinks.values()}
    assert set(by_name) == {"causal_edges_iso2", "architectures_iso2"}
    assert by_name["causal_edges_iso2"].references == []  # memories was not copied
    [ref] = by_name["architectures_iso2"].references
    assert (ref.sink, list(ref.columns)) == ("architectures_iso2", ["parent_id"])
