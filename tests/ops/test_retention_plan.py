"""Retention without servers: the catalogue's `retention:` rules, plans, the archive's
Avro schema for every sink of the project, and a written file read back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.errors import CatalogueError, ConfigError
from sinkfleet.ops.lifecycle.archive.avro import (
    ArchiveError,
    ArchiveWriter,
    archive_schema,
    best_codec,
    read_records,
    verify_file,
)
from sinkfleet.ops.lifecycle.partitions import Partition
from sinkfleet.ops.lifecycle.retention.plan import plan_sink
from sinkfleet.ops.lifecycle.retention.schedule import parse_every
from tests.support.catalogue import DELETE, ROOT, copy_catalogue, edit_spec

SINK = "sinks/experience_events.yaml"
POLICY = {"keep": "7d", "archive": True}  # experience_events' retention


@pytest.fixture
def cat_root(tmp_path: Path) -> Path:
    return copy_catalogue(tmp_path)


def test_seed_families_have_their_policies() -> None:
    cat = load_catalogue(ROOT)
    policies = {name: (s.spec.retention.keep, s.spec.retention.archive)
                for name, s in cat.sinks.items() if s.spec.retention}
    assert policies["experience_events"] == ("7d", True)  # seed 000: 7 days, then cold
    assert policies["worker_events"][0] == policies["learning_metrics"][0] == "90d"
    assert all(cat.sinks[n].spec.partitioning for n in policies)


@pytest.mark.parametrize("new, match", [
    ({"keep": "7 days"}, "not a duration like 48h, 7d or 2w"),
    ({"keep": "0d"}, "not a duration"),
    ({"keep": "7d", "archive": True, "delete": True}, "Extra inputs are not permitted"),
    ({"keep": "1d"}, "shorter than partitioning.history"),
])
def test_bad_policies_are_refused(cat_root: Path, new: dict[str, Any], match: str) -> None:
    assert load_catalogue(cat_root).sinks["experience_events"].spec.retention is not None
    edit_spec(cat_root / SINK, {"retention": lambda _: new})  # the whole policy replaced
    with pytest.raises(CatalogueError, match=match) as info:
        load_catalogue(cat_root)
    assert "experience_events.yaml" in str(info.value)


def test_only_partitioned_sinks_have_retention(cat_root: Path) -> None:
    edit_spec(cat_root / SINK, {"partitioning": DELETE})
    with pytest.raises(CatalogueError, match="retention needs partitioning"):
        load_catalogue(cat_root)
    # a state sink: one row per id, nothing to age out by partition
    edit_spec(cat_root / "sinks/jobs.yaml", {"retention": POLICY})
    edit_spec(cat_root / SINK, {"retention": DELETE, "storage": DELETE})  # compact: too
    with pytest.raises(CatalogueError, match="jobs.yaml.*retention needs partitioning"):
        load_catalogue(cat_root)


def _part(day: int, now: datetime, rows_bytes: int = 8192) -> Partition:
    start = (now - timedelta(days=day)).replace(hour=0, minute=0, second=0, microsecond=0)
    return Partition(f"ev_p{start:%Y%m%d}", start, start + timedelta(days=1), False, False,
                     rows_bytes)


def test_plan_takes_whole_partitions_past_the_horizon() -> None:
    sink = load_catalogue(ROOT).sinks["experience_events"]
    now = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    parts = [Partition("ev_default", None, None, True, False, 0),
             *(_part(d, now) for d in range(10, -3, -1))]
    restored = {_part(9, now).name: now - timedelta(days=1)}
    pending = {"ev_p20261101": (datetime(2026, 11, 1, tzinfo=UTC),
                                datetime(2026, 11, 2, tzinfo=UTC))}
    plan = plan_sink(sink, parts, now, restored, pending)
    assert plan.horizon == datetime(2026, 11, 18, 9, 30, tzinfo=UTC)
    # day -7 ends on the 19th, after the horizon: kept; -8 ends on the 18th 00:00: goes
    by_name = {s.partition: s for s in plan.steps}
    assert sorted(by_name) == ["ev_p20261101", "ev_p20261115", "ev_p20261116",
                               "ev_p20261117"]
    assert by_name["ev_p20261116"].action == "hold"
    assert "kept until 2026-12-01" in by_name["ev_p20261116"].note
    assert by_name["ev_p20261101"].note == "detached by an interrupted run"
    assert {s.action for s in plan.acting} == {"archive+drop"}
    assert plan.kept == 10  # -7 … +2; DEFAULT is never a step


def test_every_is_parsed() -> None:
    assert parse_every("1h") == timedelta(hours=1)
    assert parse_every("30s") == timedelta(seconds=30)
    for bad in ("", "1", "h", "1 hour", "0m"):
        with pytest.raises(ConfigError, match="--every"):
            parse_every(bad)


def test_every_sink_of_the_project_has_an_archive_schema() -> None:
    cat = load_catalogue(ROOT)
    for name, sink in cat.sinks.items():
        schema = archive_schema(sink)
        fastavro.parse_schema(schema)  # valid Avro
        assert [f["name"] for f in schema["fields"]] == [c.name for c in sink.columns], name
    fields = {f["name"]: f["type"]
              for f in archive_schema(cat.sinks["experience_events"])["fields"]}
    assert fields["ts"] == {"type": "long", "logicalType": "timestamp-micros"}
    assert fields["event_id"] == "bytes" and fields["state_l1"] == "float"
    assert fields["event_type"] == "int" and fields["episode_id"] == "long"
    assert fields["action_parameters"] == ["null", "string"]  # jsonb as its text
    tags = {f["name"]: f["type"] for f in archive_schema(cat.sinks["memory_entries"])["fields"]}
    assert tags["tags"] in ({"type": "array", "items": "string"},
                            ["null", {"type": "array", "items": "string"}])


def test_written_file_reads_back_and_damage_is_found(tmp_path: Path) -> None:
    sink = load_catalogue(ROOT).sinks["memory_entries"]
    row = {c.name: None for c in sink.columns}
    row.update(entry_id=uuid.UUID(int=1), tenant_id="t", ts=datetime(2026, 1, 1, tzinfo=UTC),
               entry_type="note", content='{"a": 1}', tags=["x", "y"],
               ingested_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    names = [c.name for c in sink.columns]
    path = tmp_path / "a.avro"
    writer = ArchiveWriter(path, archive_schema(sink), {"sinkfleet.sink": "memory_entries"})
    assert writer.codec == best_codec() == "zstandard"
    writer.write(names, [tuple(row[n] for n in names)] * 3)
    size, sha = writer.close()
    assert path.stat().st_size == size and not path.with_name("a.avro.tmp").exists()
    assert list(read_records(path)) == [row] * 3
    with pytest.raises(ArchiveError, match="3 records, the manifest says 4"):
        verify_file(path, 4, sha)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="SHA-256"):
        verify_file(path, 3, sha)
