"""Signed checkpoint files and signing keys without servers: the links between
checkpoints, signatures by the wrong key, generated keys and their modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sinkfleet.config import load_settings
from sinkfleet.errors import ConfigError
from sinkfleet.ops.audit.checkpoint import Head, load_anchor, write_checkpoint
from sinkfleet.ops.signing import SigningKey, matching_keys, signing_key, verify_key

HEADS = [Head("audit", "acme", 3, "ab" * 32), Head("audit", "globex", 1, "cd" * 32)]


def key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate(), "test")


def chain(folder: Path, signer: SigningKey, n: int, hour: int = 10) -> None:
    for i in range(n):
        anchor = load_anchor(folder, signer.public)
        write_checkpoint(folder, signer, anchor, "db", f"2026-12-05T{hour}:0{i}:00+00:00",
                         HEADS)


def problems(folder: Path, signer: SigningKey) -> list[tuple[str, str]]:
    return [(Path(p.file).name, p.what) for p in load_anchor(folder, signer.public).problems]


def test_checkpoints_link_and_verify(tmp_path: Path) -> None:
    signer = key()
    assert load_anchor(tmp_path / "none", signer.public).latest is None
    chain(tmp_path, signer, 3)
    anchor = load_anchor(tmp_path, signer.public)
    assert anchor.problems == [] and anchor.files == 3 and anchor.latest is not None
    assert anchor.latest.seq == 3 and anchor.latest.heads == sorted(HEADS, key=lambda h: h.tenant)
    first = json.loads((tmp_path / "checkpoint-00000001.json").read_text())
    second = json.loads((tmp_path / "checkpoint-00000002.json").read_text())
    assert first["prev"] is None and len(second["prev"]) == 64
    assert oct((tmp_path / "checkpoint-00000002.json").stat().st_mode)[-3:] == "600"
    assert oct(tmp_path.stat().st_mode)[-3:] in ("700", "755")  # tmp_path existed already
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_another_key_a_renamed_file_and_a_replaced_link_are_named(tmp_path: Path) -> None:
    signer = key()
    chain(tmp_path, signer, 2)
    # Another key's checkpoint at #3 (an attacker's own key): its signature fails.
    forger = key()
    forged = load_anchor(tmp_path, forger.public)  # sees #1..#2 as bad, writes #3
    write_checkpoint(tmp_path, forger, forged, "db", "2026-12-05T11:00:00+00:00", HEADS)
    assert problems(tmp_path, signer) == [("checkpoint-00000003.json", "signature")]
    assert load_anchor(tmp_path, signer.public).latest.seq == 2  # type: ignore[union-attr]
    (tmp_path / "checkpoint-00000003.json").unlink()
    # A checkpoint moved to another number no longer verifies there.
    (tmp_path / "checkpoint-00000002.json").rename(tmp_path / "checkpoint-00000005.json")
    assert problems(tmp_path, signer) == [("checkpoint-00000005.json", "signature")]
    (tmp_path / "checkpoint-00000005.json").rename(tmp_path / "checkpoint-00000002.json")
    # #2 replaced by a validly signed one that does not follow #1 (a copy of another history).
    other = tmp_path / "other"
    chain(other, signer, 2, hour=12)
    (other / "checkpoint-00000002.json").replace(tmp_path / "checkpoint-00000002.json")
    assert problems(tmp_path, signer) == [("checkpoint-00000002.json", "prev")]
    # Without any key, checkpoints are a problem, not silently ignored.
    assert [p.what for p in load_anchor(tmp_path, None).problems] == ["no_key"]


def test_a_generated_key_is_private_and_reused(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, state_dir=tmp_path / "state")
    assert signing_key(settings, create=False) is None and verify_key(settings) is None
    made = signing_key(settings, create=True)
    assert made is not None and "generated now" in made.source
    secret = tmp_path / "state" / "secrets" / "audit_signing_key"
    assert oct(secret.stat().st_mode)[-3:] == "600"
    assert oct(secret.parent.stat().st_mode)[-3:] == "700"
    again = signing_key(settings, create=True)
    public = verify_key(settings)
    assert again is not None and public is not None
    assert again.public.key_id == made.public.key_id == public.key_id
    pem = (secret.parent / "audit_verify_key.pem").read_bytes()
    assert pem == made.public.pem()
    # A verify key of another pair is refused before anything is signed.
    other = tmp_path / "other.pem"
    other.write_bytes(key().public.pem())
    mismatched = load_settings(home=tmp_path, state_dir=tmp_path / "state",
                               audit_verify_key_file=other)
    with pytest.raises(ConfigError, match="is not the key"):
        matching_keys(mismatched, create=False)


def test_a_bad_key_file_is_named_not_echoed(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not-a-key-SECRET-TEXT")
    settings = load_settings(home=tmp_path, audit_signing_key_file=bad)
    with pytest.raises(ConfigError, match="SINKFLEET_AUDIT_SIGNING_KEY_FILE") as exc:
        signing_key(settings, create=False)
    assert "SECRET-TEXT" not in str(exc.value)
    with pytest.raises(ConfigError, match="cannot read it"):
        signing_key(load_settings(home=tmp_path, audit_signing_key_file=tmp_path / "nope"),
                    create=False)
