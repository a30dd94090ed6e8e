"""Backup and restore on the real PostgreSQL, Kafka and Redis: back up a scratch database
filled by a real worker, change and drop data, restore into a fresh database, compare
every row field by field and the offsets; then let a worker re-read what is newer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sinkfleet.config import Settings
from sinkfleet.ops.lifecycle.backup import backup as backup_module
from sinkfleet.ops.lifecycle.backup import restore as restore_module
from sinkfleet.ops.lifecycle.backup.advice import REREAD
from sinkfleet.ops.lifecycle.backup.backup import open_backup, run_backup
from sinkfleet.ops.lifecycle.backup.manifest import BackupError, sha256_file, sign_manifest
from sinkfleet.ops.lifecycle.backup.restore import RestoreError, run_restore
from sinkfleet.ops.signing import matching_keys
from sinkfleet.sink.postgres.connect import pg
from tests.ops.backup_support import (
    Scenario,
    contents,
    drain,
    drop_scenario,
    make_scenario,
    publish_events,
    publish_states,
)
from tests.ops.scratch import drop_db

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """Backups are signed: with a key of the test's own, never the stack's."""
    path = tmp_path_factory.mktemp("keys") / "signing.pem"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    monkeypatch.setenv("SINKFLEET_AUDIT_SIGNING_KEY_FILE", str(path))
    return path


@pytest_asyncio.fixture
async def scenario(stack: Settings, tmp_path: Path,
                   scratch_db: Callable[[], Awaitable[str]]) -> AsyncIterator[Scenario]:
    sc = await make_scenario(tmp_path, stack, await scratch_db())
    yield sc
    await drop_scenario(sc)


def exists(path: str) -> bool:
    return os.path.exists(path)


def cli(sc: Scenario, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINKFLEET_HOME": str(sc.root),
           "SINKFLEET_STATE_DIR": str(sc.settings.state), "SINKFLEET_PG_DATABASE": database,
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], env=env, cwd=sc.root,
                          capture_output=True, text=True, timeout=300)


async def test_backup_change_drop_restore_into_a_fresh_database(
        scenario: Scenario, scratch_db: Callable[[], Awaitable[str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sc = scenario
    await publish_events(sc, 2000, seed=7)
    await publish_states(sc, 400, seed=7)
    await drain(sc)
    before = await contents(sc.settings, sc)
    assert len(before["events"]) == 2000 and before["state"] and before["history"]

    runs: list[tuple[list[str], dict[str, str], str]] = []
    real_run_tool = backup_module.run_tool

    async def spy(argv: list[str], env: dict[str, str], *args: Any, **kw: Any) -> str:
        runs.append((argv, env, oct(os.stat(env["PGPASSFILE"]).st_mode)[-3:]))
        return await real_run_tool(argv, env, *args, **kw)

    monkeypatch.setattr(backup_module, "run_tool", spy)
    result = await run_backup(sc.settings, sc.catalogue, tmp_path / "backups")
    # The password reaches pg_dump only through a 0600 .pgpass, deleted afterwards.
    password = sc.settings.secret("pg_password")
    assert password is not None
    secret = password.get_secret_value()
    assert [Path(argv[0]).name for argv, _, _ in runs] == ["pg_dump", "pg_restore"]
    for argv, env, mode in runs:
        assert secret not in " ".join(argv) and "PGPASSWORD" not in env and mode == "600"
        assert not exists(env["PGPASSFILE"])
    m = result.manifest
    # The manifest: checksums of what is on disk, rows and offsets of the dumped snapshot.
    for rel, entry in m["files"].items():
        assert sha256_file(result.path / rel) == entry["sha256"], rel
    assert {"database.dump", "offsets.json", "catalogue/sinks/events.yaml"} <= set(m["files"])
    assert m["sinks"][sc.events.table]["rows"] == 2000
    assert m["sinks"][sc.state_table]["rows"] == len(before["state"])
    assert m["sinks"][sc.state_table]["history_rows"] == len(before["history"])
    assert m["postgres"]["server_major"] == 15 and m["postgres"]["pg_dump"].startswith("15")
    assert oct((result.path / "database.dump").stat().st_mode)[-3:] == "600"
    offsets = json.loads((result.path / "offsets.json").read_text())
    assert [(o["group"], o["topic"], o["partition"], o["next_offset"])
            for o in offsets["postgres"]] == [
        (r["group_id"], r["topic"], r["partition"], r["next_offset"]) for r in before["offsets"]]
    kafka = [p for p in offsets["kafka"]["partitions"] if p["group"] == sc.group]
    assert {p["topic"] for p in kafka} == set(sc.topics)
    assert all(p["stored"] == p["log_end"] for p in kafka)  # the worker had caught up

    # After the backup: newer records arrive and are stored, then disaster strikes.
    await publish_events(sc, 300, seed=8)
    await drain(sc)
    async with pg(sc.settings) as conn:
        await conn.execute(f'DELETE FROM "{sc.state_table}"')
        await conn.execute(f'DROP TABLE "{sc.events.table}" CASCADE')

    # Dry run into a fresh database changes nothing.
    fresh = await scratch_db()
    dry = await run_restore(sc.on(fresh), result.path, execute=False)
    assert not dry.executed and not dry.target.relations
    async with pg(sc.on(fresh)) as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname"
                                   " NOT IN ('pg_catalog', 'information_schema')") == 0

    restored = await run_restore(sc.on(fresh), result.path, execute=True)
    assert restored.verified, (restored.sinks, restored.offsets_differ)
    after = await contents(sc.on(fresh), sc)
    for key in ("events", "state", "history"):
        assert len(after[key]) == len(before[key]), key
        for got, want in zip(after[key], before[key], strict=True):
            assert got == want, key  # every field
    assert after["offsets"] == before["offsets"]  # updated_at included
    [group] = [g for g in restored.groups if g.group == sc.group]
    assert group.reread == 300 and group.lost == 0 and restored.pinned == 0
    assert {a.status for a in group.partitions} <= {REREAD, "current"}

    # The workers seek to the restored offsets and re-read what is newer: no duplicates.
    await drain(sc, sc.on(fresh))
    async with pg(sc.on(fresh)) as conn:
        row = await conn.fetchrow(f'SELECT count(*) AS n, count(DISTINCT event_id) AS d'
                                  f' FROM "{sc.events.table}"')
    assert (row["n"], row["d"]) == (2300, 2300)

    # The damaged original is not empty: refused, unless --force replaces the objects.
    with pytest.raises(RestoreError, match="is not empty"):
        await run_restore(sc.settings, result.path, execute=True)
    forced = await run_restore(sc.settings, result.path, execute=True, force=True)
    assert forced.verified and forced.clean
    again = await contents(sc.settings, sc)
    assert again["events"] == before["events"] and again["state"] == before["state"]


async def test_cli_backup_tar_and_restore_refuse_damage(
        scenario: Scenario, scratch_db: Callable[[], Awaitable[str]], tmp_path: Path) -> None:
    sc = scenario
    await publish_events(sc, 200, seed=3)
    await drain(sc)
    out = tmp_path / "bk"
    made = cli(sc, sc.db, "backup", "--out", str(out), "--tar")
    assert made.returncode == 0, made.stderr + made.stdout
    password = sc.settings.secret("pg_password")
    assert password is not None and password.get_secret_value() not in made.stdout + made.stderr
    [tar] = list(out.iterdir())
    assert tar.suffix == ".tar" and oct(tar.stat().st_mode)[-3:] == "600"

    fresh = await scratch_db()
    dry = cli(sc, fresh, "restore", str(tar))
    assert dry.returncode == 0, dry.stderr + dry.stdout
    assert "dry run" in dry.stdout and "200" in dry.stdout
    as_json = json.loads(cli(sc, fresh, "restore", str(tar), "--json").stdout)
    assert as_json["executed"] is False and as_json["files_checked"] >= 3

    missing = cli(sc, f"{fresh}_nope", "restore", str(tar), "--execute")
    assert missing.returncode == 2 and "--create-db" in missing.stderr

    # A damaged file is found before anything is touched.
    unpacked = open_backup(tar, tmp_path / "unpacked")
    sink_file = unpacked / "catalogue" / "sinks" / "events.yaml"
    sink_file.write_text(sink_file.read_text() + "# edited\n")
    with pytest.raises(BackupError, match="catalogue/sinks/events.yaml"):
        await run_restore(sc.on(fresh), unpacked, execute=True)
    bad = cli(sc, fresh, "restore", str(unpacked), "--execute")
    assert bad.returncode == 2 and "damaged" in bad.stderr

    # A restore that does not reproduce the manifest's rows exits 1 and says where.
    pristine = open_backup(tar, tmp_path / "pristine")
    manifest = json.loads((pristine / "manifest.json").read_text())
    manifest["sinks"][sc.events.table]["rows"] += 1
    (pristine / "manifest.json").write_text(json.dumps(manifest))
    sign_manifest(pristine, matching_keys(sc.settings, create=False))  # as if by the key
    off = cli(sc, fresh, "restore", str(pristine), "--execute")
    assert off.returncode == 1 and "201" in off.stdout and "✗" in off.stdout, off.stdout

    created = cli(sc, f"{fresh}_new", "restore", str(tar), "--execute", "--create-db")
    try:
        assert created.returncode == 0, created.stderr + created.stdout
        assert "restored equal" in created.stdout
    finally:
        await drop_db(sc.settings, f"{fresh}_new")


async def test_a_tampered_or_unsigned_manifest_is_refused_before_pg_restore(
        scenario: Scenario, scratch_db: Callable[[], Awaitable[str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sc = scenario
    await publish_events(sc, 50, seed=5)
    await drain(sc)
    result = await run_backup(sc.settings, sc.catalogue, tmp_path / "backups")
    sig = json.loads((result.path / "manifest.json.sig").read_text())
    assert sig["algorithm"] == "ed25519" and len(bytes.fromhex(sig["signature"])) == 64
    assert oct((result.path / "manifest.json.sig").stat().st_mode)[-3:] == "600"
    fresh = await scratch_db()
    ran: list[str] = []

    async def spy(argv: list[str], *args: Any, **kw: Any) -> str:
        ran.append(Path(argv[0]).name)
        return ""

    monkeypatch.setattr(restore_module, "run_tool", spy)
    # Checksums alone vouch for nothing: whoever edits a file can edit its checksum too.
    sink_file = result.path / "catalogue" / "sinks" / "events.yaml"
    sink_file.write_text(sink_file.read_text() + "# planted\n")
    manifest = json.loads((result.path / "manifest.json").read_text())
    manifest["files"]["catalogue/sinks/events.yaml"] = {
        "sha256": sha256_file(sink_file), "bytes": sink_file.stat().st_size}
    (result.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="signature does not verify with key"
                                          f" {sig['key_id']}"):
        await run_restore(sc.on(fresh), result.path, execute=True)
    bad = cli(sc, fresh, "restore", str(result.path), "--execute", "--allow-unsigned")
    assert bad.returncode == 2 and "signature does not verify" in bad.stderr, bad.stderr

    (result.path / "manifest.json.sig").unlink()  # an unsigned (old) backup
    with pytest.raises(BackupError, match="no manifest.json.sig"):
        await run_restore(sc.on(fresh), result.path, execute=True)
    assert ran == []  # pg_restore never ran
    async with pg(sc.on(fresh)) as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname"
                                   " NOT IN ('pg_catalog', 'information_schema')") == 0
    allowed = await run_restore(sc.on(fresh), result.path, execute=False, allow_unsigned=True)
    assert allowed.signature.startswith("unsigned: ") and "--allow-unsigned" in allowed.signature
