"""Signed audit checkpoints: per-tenant chain heads kept outside PostgreSQL (files only).

One checkpoint is ``checkpoint-<seq>.json`` in ``SINKFLEET_AUDIT_CHECKPOINT_DIR``: its
sequence number, time, the SHA-256 of the previous checkpoint's signed body (so a
checkpoint removed from the middle breaks the link), and for every audit sink and tenant
the head ``(chain_seq, chain_hash)`` — all RFC 8785 canonical JSON, signed with Ed25519.
Whoever can rewrite the database but not this key cannot make a rewritten, truncated or
deleted chain agree with a checkpoint (docs/audit-anchoring.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sinkfleet.avro.canonical import canonical_json
from sinkfleet.errors import SinkfleetError
from sinkfleet.ops.signing import SigningKey, VerifyKey

FORMAT = 1
_NAME = re.compile(r"checkpoint-(\d{8})\.json")

__all__ = ["Anchor", "Checkpoint", "CheckpointError", "CheckpointProblem", "Head",
           "load_anchor", "write_checkpoint"]


class CheckpointError(SinkfleetError):
    """The checkpoint directory cannot be read or extended; the message says why."""


@dataclass(frozen=True)
class Head:
    sink: str
    tenant: str
    chain_seq: int
    chain_hash: str  # hex


@dataclass
class Checkpoint:
    seq: int
    created_at: str
    prev: str | None  # SHA-256 (hex) of the previous checkpoint's signed body
    database: str
    heads: list[Head]
    key_id: str = ""
    signature: str = ""  # hex
    path: Path | None = None

    def body(self) -> dict[str, Any]:
        return {"format": FORMAT, "seq": self.seq, "created_at": self.created_at,
                "prev": self.prev, "database": self.database, "key_id": self.key_id,
                "heads": [asdict(h) for h in sorted(self.heads, key=_order)]}

    def signed_bytes(self) -> bytes:
        return canonical_json(self.body())

    def digest(self) -> str:
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"seq": self.seq, "created_at": self.created_at, "file": str(self.path),
                "key_id": self.key_id, "heads": len(self.heads)}


def _order(head: Head) -> tuple[str, str]:
    return head.sink, head.tenant


@dataclass(frozen=True)
class CheckpointProblem:
    file: str
    what: str  # unreadable | signature | missing | prev | no_key | stale | database
    detail: str


@dataclass
class Anchor:
    """What the checkpoint directory proves: the latest checkpoint whose signature
    verifies, and every problem met on the way."""

    directory: Path
    latest: Checkpoint | None = None
    files: int = 0
    last_seq: int = 0  # the highest sequence number of any file, valid or not
    problems: list[CheckpointProblem] = field(default_factory=list)


def _parse(path: Path) -> Checkpoint:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown checkpoint format {data.get('format')!r}")
    heads = [Head(str(h["sink"]), str(h["tenant"]), int(h["chain_seq"]),
                  str(h["chain_hash"])) for h in data["heads"]]
    return Checkpoint(int(data["seq"]), str(data["created_at"]), data["prev"],
                      str(data["database"]), heads, str(data["key_id"]),
                      str(data["signature"]), path)


def _files(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


def load_anchor(directory: Path, key: VerifyKey | None) -> Anchor:
    """Read every checkpoint in ``directory``; check signatures and the links between
    them (each names its predecessor's digest; numbers run 1, 2, 3 … without a gap)."""
    anchor = Anchor(directory)
    files = _files(directory)
    anchor.files = len(files)
    anchor.last_seq = files[-1][0] if files else 0
    if files and key is None:
        anchor.problems.append(CheckpointProblem(
            str(directory), "no_key", f"{len(files)} checkpoint(s) but no key to check them:"
            " set SINKFLEET_AUDIT_VERIFY_KEY_FILE to the public key that signed them"))
        return anchor
    expected_seq, prev_digest, after_bad = 1, None, False
    for seq, path in files:
        try:
            cp = _parse(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            anchor.problems.append(CheckpointProblem(str(path), "unreadable", str(exc)))
            expected_seq, after_bad = seq + 1, True  # reported once, not again as a gap
            continue
        assert key is not None
        try:
            signature = bytes.fromhex(cp.signature)
        except ValueError:
            signature = b""
        if cp.seq != seq or not key.verifies(signature, cp.signed_bytes()):
            anchor.problems.append(CheckpointProblem(
                str(path), "signature", f"the signature does not verify with key"
                f" {key.key_id} ({key.source}): the file was altered or signed by another key"))
            expected_seq, after_bad = seq + 1, True
            continue
        if seq != expected_seq:
            anchor.problems.append(CheckpointProblem(
                str(path), "missing", f"checkpoint(s) {expected_seq}..{seq - 1} are missing"
                " before this one: they were deleted"))
        elif cp.prev != prev_digest and not after_bad:
            anchor.problems.append(CheckpointProblem(
                str(path), "prev", "its link to the previous checkpoint does not match that"
                " checkpoint: one was replaced"))
        anchor.latest = cp
        expected_seq, prev_digest, after_bad = seq + 1, cp.digest(), False
    return anchor


def write_checkpoint(directory: Path, key: SigningKey, anchor: Anchor, database: str,
                     created_at: str, heads: list[Head]) -> Checkpoint:
    """Sign ``heads`` as the checkpoint after ``anchor.latest`` and write it (0600, in a
    0700 directory; written aside and renamed, so a reader never sees half a file)."""
    prev = anchor.latest
    cp = Checkpoint(anchor.last_seq + 1, created_at, prev.digest() if prev else None,
                    database, sorted(heads, key=_order), key.public.key_id)
    cp.signature = key.sign(cp.signed_bytes()).hex()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"checkpoint-{cp.seq:08d}.json"
    partial = directory / f".{path.name}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({**cp.body(), "signature": cp.signature}, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        partial.unlink()
        raise CheckpointError(f"{path} appeared meanwhile: another `audit checkpoint` runs"
                              " at the same time; run one at a time")
    os.replace(partial, path)
    cp.path = path
    return cp
