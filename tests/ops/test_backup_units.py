"""Backup, restore and stats logic without servers: the manifest's checks, the libpq
environment (no password on a command line), restore advice per partition, the bounded
Redis scan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from sinkfleet.config import load_settings
from sinkfleet.kafka.positions import PartitionPosition
from sinkfleet.ops.lifecycle.backup.advice import (
    AHEAD,
    CURRENT,
    LOST,
    NO_TOPIC,
    REREAD,
    UNSTORED,
    advise,
    advise_groups,
)
from sinkfleet.ops.lifecycle.backup.manifest import (
    FORMAT,
    BackupError,
    file_entries,
    read_manifest,
    verify_files,
    write_json,
)
from sinkfleet.ops.lifecycle.backup.pgtools import PgToolError, find_tool, libpq_env
from sinkfleet.ops.stats.cli import size
from sinkfleet.ops.stats.redis import CacheUsage, RedisStats, _scan, split_key


def pos(stored: int | None, committed: int | None, start: int | None, end: int | None,
        partition: int = 0) -> PartitionPosition:
    return PartitionPosition("g", "t", partition, stored, committed, start, end)


def test_advice_per_partition() -> None:
    assert (advise(pos(90, 95, 0, 100)).status, advise(pos(90, 95, 0, 100)).reread) == (
        REREAD, 10)
    assert advise(pos(100, 100, 0, 100)).status == CURRENT
    lost = advise(pos(40, None, 50, 100))  # retention deleted 40…49 since the backup
    assert (lost.status, lost.reread, lost.lost) == (LOST, 50, 10)
    assert advise(pos(500, None, 0, 100)).status == AHEAD  # topic recreated
    fresh = advise(pos(None, 70, 5, 100))  # a Kafka commit after the backup must not count
    assert (fresh.status, fresh.reread) == (UNSTORED, 95)
    assert advise(pos(10, None, None, None)).status == NO_TOPIC
    assert pos(None, 70, 5, 100).position == 70 and pos(None, None, 5, 100).lag == 95


def test_group_advice_sums_and_says_what_happens() -> None:
    [group] = advise_groups([pos(90, 95, 0, 100, 0), pos(40, 40, 50, 100, 1),
                             pos(None, 7, 0, 8, 2)])
    assert (group.reread, group.lost, group.unstored, group.kafka_differs) == (68, 10, 1, 1)
    notes = " ".join(group.notes())
    assert "60 record(s) newer than the backup will be re-read" in notes
    assert "10 record(s) newer than the backup were deleted by Kafka's retention" in notes
    assert "from the log start (8 records)" in notes
    assert json.dumps(group.as_dict())


def _backup(tmp: Path) -> Path:
    root = tmp / "b"
    (root / "catalogue" / "sinks").mkdir(parents=True)
    (root / "database.dump").write_bytes(b"PGDMP" + bytes(100))
    (root / "offsets.json").write_text('{"postgres": [], "kafka": {}}')
    (root / "catalogue" / "sinks" / "s.yaml").write_text("name: s\n")
    write_json(root / "manifest.json", {"format": FORMAT, "created_at": "now",
                                        "postgres": {}, "files": file_entries(root)})
    return root


def test_manifest_checks_every_file(tmp_path: Path) -> None:
    root = _backup(tmp_path)
    manifest = read_manifest(root)
    assert set(manifest["files"]) == {"database.dump", "offsets.json",
                                      "catalogue/sinks/s.yaml"}
    assert verify_files(root, manifest).files == 3
    (root / "notes.txt").write_text("extra")
    assert verify_files(root, manifest).extra == ["notes.txt"]

    (root / "catalogue" / "sinks" / "s.yaml").write_text("name: t\n")  # same size
    with pytest.raises(BackupError, match="s.yaml: sha256 differs"):
        verify_files(root, manifest)
    (root / "database.dump").write_bytes(b"PGDMP")
    with pytest.raises(BackupError, match="database.dump: 5 bytes"):
        verify_files(root, manifest)
    (root / "offsets.json").unlink()
    with pytest.raises(BackupError, match="offsets.json: missing"):
        verify_files(root, manifest)
    evil = {**manifest, "files": {"../x": {"sha256": "0", "bytes": 0}}}
    with pytest.raises(BackupError, match="outside the backup"):
        verify_files(root, evil)


def test_manifest_is_required_and_versioned(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(BackupError, match="unknown manifest format 99"):
        read_manifest(tmp_path)


def test_libpq_env_keeps_the_password_in_a_private_pgpass(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-the-environment")
    settings = load_settings(home=tmp_path, pg_password=SecretStr("p:a\\ss"),
                             pg_user="u:1", pg_database="d", pg_host="127.0.0.1",
                             pg_port=15432)  # not the environment's (CI may use others)
    with libpq_env(settings) as env:
        passfile = Path(env["PGPASSFILE"])
        assert oct(passfile.stat().st_mode)[-3:] == "600"
        assert oct(passfile.parent.stat().st_mode)[-3:] == "700"
        assert passfile.read_text() == "127.0.0.1:15432:*:u\\:1:p\\:a\\\\ss\n"
        assert "PGPASSWORD" not in env and "p:a\\ss" not in json.dumps(
            {k: v for k, v in env.items() if k != "PGPASSFILE"})
        assert (env["PGUSER"], env["PGDATABASE"], env["PGSSLMODE"]) == ("u:1", "d", "prefer")
    assert not passfile.exists() and not passfile.parent.exists()


def test_client_tools_match_the_server() -> None:
    tool = find_tool("pg_dump", 15)
    assert tool.major >= 15 and os.access(tool.path, os.X_OK)
    with pytest.raises(PgToolError, match="no pg_dump of PostgreSQL 99 or newer"):
        find_tool("pg_dump", 99)
    with pytest.raises(PgToolError, match="postgresql-client-99"):
        find_tool("pg_restore", 15, at_least=99)


class FakeRedis:
    """SCAN over a fixed keyspace, ``per_call`` keys a call."""

    def __init__(self, keys: list[str], per_call: int) -> None:
        self.keys, self.per_call, self.calls = keys, per_call, 0

    async def scan(self, cursor: int, match: str, count: int) -> tuple[int, list[str]]:
        self.calls += 1
        chunk = self.keys[cursor:cursor + self.per_call]
        nxt = cursor + self.per_call
        return (0 if nxt >= len(self.keys) else nxt), [
            k for k in chunk if k.startswith(match.rstrip("*"))]


async def test_redis_scan_counts_per_sink_and_stops_at_the_bound() -> None:
    keys = ([f"sinkfleet:a:latest:{i}" for i in range(30)]
            + [f"sinkfleet:b:recent:{i}" for i in range(20)]
            + ["sinkfleet:other:latest:1", "unrelated"])
    out = RedisStats(sinks={"a": CacheUsage("a"), "b": CacheUsage("b")})
    await _scan(FakeRedis(keys, 7), out, max_keys=1000, sample=5)
    assert (out.sinks["a"].keys, out.sinks["b"].by_cache) == (30, {"recent": 20})
    assert out.other_sinkfleet_keys == 1 and not out.truncated
    assert len(out.sinks["a"]._sample) == 5 and "_sample" not in out.sinks["a"].as_dict()
    bounded = RedisStats(sinks={"a": CacheUsage("a")})
    await _scan(FakeRedis(keys, 7), bounded, max_keys=10, sample=5)
    assert bounded.truncated and bounded.scanned == 14


def test_small_pure_helpers() -> None:
    assert split_key("sinkfleet:s:latest:a%3Ab:1") == ("s", "latest")
    assert split_key("other:s:latest") is None and split_key("sinkfleet:s") is None
    assert [size(v) for v in (None, 512, 2048, 5 * 2**30)] == ["-", "512 B", "2.0 KiB",
                                                               "5.0 GiB"]
