"""A backup's manifest: what is in it, and the SHA-256 of every file (pure: files only).

Layout of one backup (a directory, or the same as an uncompressed tar)::

    sinkfleet-backup-20261125T101500Z/
      manifest.json     time, versions, files and their sha256, rows per sink table
      manifest.json.sig Ed25519 signature of manifest.json's bytes (docs/audit-anchoring.md)
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
from sinkfleet.ops.signing import SigningKey, VerifyKey

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
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
        if rel not in (MANIFEST, SIGNATURE):
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    path.chmod(0o600)


def sign_manifest(root: Path, key: SigningKey) -> None:
    """Sign the manifest's exact bytes: its checksums then vouch for every file."""
    signature = key.sign((root / MANIFEST).read_bytes())
    write_json(root / SIGNATURE, {"algorithm": "ed25519", "key_id": key.public.key_id,
                                  "signature": signature.hex()})


def check_signature(root: Path, key: VerifyKey | None, allow_unsigned: bool) -> str:
    """How the manifest is vouched for ("signed by key …", or "unsigned"); raises
    BackupError if its signature does not verify, or if it is unsigned (or there is no
    key to check it) and ``allow_unsigned`` is false."""
    path = root / SIGNATURE
    if not path.is_file() or key is None:
        why = (f"{root} has no {SIGNATURE} (made before backups were signed, or the"
               " signature was removed)" if not path.is_file() else
               "no key to check the manifest's signature: set"
               " SINKFLEET_AUDIT_VERIFY_KEY_FILE to the public key that signed it")
        if allow_unsigned:
            return f"unsigned: {why}; accepted (--allow-unsigned)"
        raise BackupError(f"{why}; nothing was restored. Pass --allow-unsigned only for a"
                          " backup you trust from elsewhere")
    try:
        sig = json.loads(path.read_text())
        signature = bytes.fromhex(sig["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{path}: unreadable signature ({exc}); nothing was restored"
                          ) from None
    if not key.verifies(signature, (root / MANIFEST).read_bytes()):
        raise BackupError(
            f"{root}: the manifest's signature does not verify with key {key.key_id}"
            f" ({key.source}): the manifest was altered, or signed by another key;"
            " nothing was restored")
    return f"signed by key {key.key_id}"


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
    if not isinstance(manifest, dict):
        raise BackupError(f"{path}: not a JSON object; is this a sinkfleet backup?")
    if manifest.get("format") != FORMAT:
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
    present = set(file_entries(root))  # neither the manifest nor its signature
    return Checked(len(files), sum(f["bytes"] for f in files.values()),
                   sorted(present - set(files)))
