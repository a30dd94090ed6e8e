"""Hostile checkpoint files and backup signatures: whatever lands in the checkpoint
directory or beside a manifest is reported by name, never a crash and never trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sinkfleet.ops.audit.checkpoint import Head, load_anchor, write_checkpoint
from sinkfleet.ops.lifecycle.backup.manifest import (
    BackupError,
    check_signature,
    read_manifest,
    sign_manifest,
)
from sinkfleet.ops.signing import SigningKey

HOSTILE = {
    "garbage": b"\xff\xfe not json",
    "a list": b"[1, 2]",
    "another format": json.dumps({"format": 2}).encode(),
    "heads not a list": json.dumps({"format": 1, "seq": 2, "created_at": "x", "prev": None,
                                    "database": "d", "key_id": "k", "heads": 7,
                                    "signature": "00"}).encode(),
    "a head without fields": json.dumps({"format": 1, "seq": 2, "created_at": "x",
                                         "prev": None, "database": "d", "key_id": "k",
                                         "heads": [{}], "signature": "00"}).encode(),
    "a non-hex signature": json.dumps({"format": 1, "seq": 2, "created_at": "x",
                                       "prev": None, "database": "d", "key_id": "k",
                                       "heads": [], "signature": "zz"}).encode(),
    "a string seq": json.dumps({"format": 1, "seq": "two", "created_at": "x", "prev": None,
                                "database": "d", "key_id": "k", "heads": [],
                                "signature": ""}).encode(),
}


@pytest.mark.parametrize("content", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_checkpoint_file_is_named(tmp_path: Path, content: bytes) -> None:
    signer = SigningKey(Ed25519PrivateKey.generate(), "test")
    write_checkpoint(tmp_path, signer, load_anchor(tmp_path, signer.public), "db",
                     "2026-12-05T10:00:00+00:00", [Head("s", "t", 1, "00" * 32)])
    (tmp_path / "checkpoint-00000002.json").write_bytes(content)
    anchor = load_anchor(tmp_path, signer.public)
    assert [(Path(p.file).name, p.what) for p in anchor.problems] == [
        ("checkpoint-00000002.json", "unreadable" if content != HOSTILE["a non-hex signature"]
         else "signature")]
    assert anchor.latest is not None and anchor.latest.seq == 1
    assert anchor.last_seq == 2  # the next checkpoint never overwrites it


@pytest.mark.parametrize("signature", ["not json", "[]", '{"signature": "zz"}',
                                       '{"signature": 5}', '{"signature": ""}'])
def test_a_hostile_manifest_signature_is_refused(tmp_path: Path, signature: str) -> None:
    signer = SigningKey(Ed25519PrivateKey.generate(), "test")
    (tmp_path / "manifest.json").write_text('{"format": 1}\n')
    sign_manifest(tmp_path, signer)
    assert check_signature(tmp_path, signer.public, False).startswith("signed by key")
    (tmp_path / "manifest.json.sig").write_text(signature)
    with pytest.raises(BackupError, match="nothing was restored"):
        check_signature(tmp_path, signer.public, allow_unsigned=True)


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BackupError, match="not a JSON object"):
        read_manifest(tmp_path)
