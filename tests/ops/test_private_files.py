"""Archive files, the backup tar and the initdb password file are private (0600 files,
0700 directories) from the moment they exist — checked while they are being written,
not only once they are done (a chmod afterwards leaves a window, and a reader who opened
the file in that window keeps it)."""

from __future__ import annotations

import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.config import load_settings
from sinkfleet.dev.stack import services
from sinkfleet.ops.lifecycle.archive import store as archive_store
from sinkfleet.ops.lifecycle.archive.avro import ArchiveWriter, read_records
from sinkfleet.ops.lifecycle.backup import backup as backup_module

SCHEMA = {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_archive_file_and_directories_are_private_while_written(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    target = root / "events" / "events_p20260101-x.avro"
    writer = ArchiveWriter(target, SCHEMA, {}, codec="null")
    assert {"root": mode(root), "sink": mode(root / "events"), "tmp": mode(writer.tmp)} == {
        "root": 0o700, "sink": 0o700, "tmp": 0o600}
    writer.write(["n"], [(1,), (2,)])
    writer.close()
    assert mode(target) == 0o600
    assert [r["n"] for r in read_records(target)] == [1, 2]
    manifest = archive_store.manifest_path(target)
    archive_store._write_json(manifest, {"a": 1})
    assert mode(manifest) == 0o600
    assert manifest.read_text() == '{\n  "a": 1\n}\n'


def test_a_stale_wide_archive_tmp_is_not_reused(tmp_path: Path) -> None:
    target = tmp_path / "archive" / "s" / "f.avro"
    target.parent.mkdir(parents=True, mode=0o700)
    stale = target.with_name(target.name + ".tmp")
    stale.write_bytes(b"old")
    stale.chmod(0o644)
    writer = ArchiveWriter(target, SCHEMA, {}, codec="null")
    assert mode(writer.tmp) == 0o600
    writer.abort()


def test_backup_tar_partial_is_private_from_creation(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    backup = tmp_path / "sinkfleet-backup-x"
    backup.mkdir(mode=0o700)
    (backup / "manifest.json").write_text("{}\n")
    seen: list[int] = []
    add = tarfile.TarFile.add

    def spy(self: tarfile.TarFile, name: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(mode(tmp_path / ".sinkfleet-backup-x.tar.partial"))
        add(self, name, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "add", spy)
    target = backup_module._to_tar(backup)
    assert seen == [0o600, 0o600]  # the directory, then its file (add recurses)
    assert target == tmp_path / "sinkfleet-backup-x.tar" and mode(target) == 0o600
    with tarfile.open(target) as tf:
        assert tf.getnames() == ["sinkfleet-backup-x", "sinkfleet-backup-x/manifest.json"]


def test_initdb_password_file_is_private_from_creation(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(home=tmp_path, state_dir=tmp_path / "state")
    pg = services.Postgres("postgres", settings)
    monkeypatch.setattr(services.Postgres, "user", lambda self: None)
    seen: dict[str, Any] = {}

    def fake_run(argv: list[str], what: str, user: str | None = None) -> str:
        [flag] = [a for a in argv if a.startswith("--pwfile=")]
        pwfile = Path(flag.removeprefix("--pwfile="))
        seen.update(mode=mode(pwfile), text=pwfile.read_text())
        (pg.data).mkdir(parents=True)  # what initdb would make, so prepare() goes on
        return ""

    monkeypatch.setattr(services, "_run", fake_run)
    pg.prepare()
    assert seen == {"mode": 0o600, "text": pg.password + "\n"}
    assert not (pg._root() / ".pwfile").exists()
