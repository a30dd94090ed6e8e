"""A backup's manifest: what is in it, and the SHA-256 of every file (pure: files only).

Layout of one backup (a directory, or the same as an uncompressed tar)::

    sinkfleet-backup-20261125T101500Z/
      manifest.json     time, versions, files and their sha256, rows per sink table
      database.dump     pg_dump --format=custom of the database
      offsets.json      sinkfleet.consumer_offsets + each group's Kafka commits and log ends
      catalogue/        schemas/ topics/ sinks/ workers/ as they were
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinkfleet.errors import SinkfleetError

FORMAT = 1
MANIFEST = "manifest.json"
DUMP = "database.dump"
OFFSETS = "offsets.json"
CATALOGUE = "catalogue"
CATALOGUE_DIRS = ("schemas", "topics", "sinks", "workers")


class BackupError(SinkfleetError):
    """A backup cannot be made, or a backup on disk is incomplete or damaged."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """relative path → {sha256, bytes} of every file under ``root`` but the manifest."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    path.chmod(0o600)


@dataclass
class Checked:
    files: int
    bytes: int
    extra: list[str]  # files present but not in the manifest (ignored)


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise BackupError(f"{root}: no {MANIFEST}; is this a sinkfleet backup?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BackupError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown manifest format {manifest.get('format')!r}"
                          f" (this sinkfleet reads format {FORMAT})")
    for key in ("files", "created_at", "postgres"):
        if key not in manifest:
            raise BackupError(f"{path}: the manifest has no {key!r}")
    return manifest


def verify_files(root: Path, manifest: dict[str, Any]) -> Checked:
    """Every file the manifest lists exists with its size and sha256; the dump, the
    offsets and the manifest are there. Raises BackupError naming each problem."""
    files: dict[str, dict[str, Any]] = manifest["files"]
    problems = []
    for required in (DUMP, OFFSETS):
        if required not in files:
            problems.append(f"the manifest lists no {required}")
    for rel, want in sorted(files.items()):
        path = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            problems.append(f"{rel}: a path outside the backup")
        elif not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != want["bytes"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, the manifest says"
                            f" {want['bytes']}")
        elif sha256_file(path) != want["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest's")
    if problems:
        raise BackupError(f"backup {root} is damaged, nothing was restored: "
                          + "; ".join(problems))
    present = set(file_entries(root))
    return Checked(len(files), sum(f["bytes"] for f in files.values()),
                   sorted(present - set(files)))
