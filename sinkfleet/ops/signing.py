"""Ed25519 keys for what must stay trustworthy when the database is not: audit
checkpoints and backup manifests (docs/audit-anchoring.md).

The private key lives in a file the database host never sees
(``SINKFLEET_AUDIT_SIGNING_KEY_FILE``), or, on a local stack, is generated once into
``STATE_DIR/secrets/audit_signing_key`` (0600) with its public half beside it.
Verifying needs only the public key (``SINKFLEET_AUDIT_VERIFY_KEY_FILE``), so a
machine that checks audits or restores backups can hold no signing power.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sinkfleet.config import Settings, env_name
from sinkfleet.errors import ConfigError

SIGNING_SECRET = "audit_signing_key"  # under STATE_DIR/secrets/
VERIFY_FILE = "audit_verify_key.pem"  # its public half, beside it

__all__ = ["SigningKey", "VerifyKey", "signing_key", "verify_key"]


@dataclass(frozen=True)
class VerifyKey:
    """A public key and where it came from (said in reports, never a secret)."""

    key: Ed25519PublicKey
    source: str

    @property
    def key_id(self) -> str:
        """First 16 hex digits of SHA-256 of the raw public key: names the key."""
        raw = self.key.public_bytes(serialization.Encoding.Raw,
                                    serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:16]

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class SigningKey:
    key: Ed25519PrivateKey
    source: str

    @property
    def public(self) -> VerifyKey:
        return VerifyKey(self.key.public_key(), self.source)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def _read_private(path: Path, env: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"{env}={path}: cannot read it ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{env}={path}: not an unencrypted PEM private key ({exc});"
                          " make one with `openssl genpkey -algorithm ed25519`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{env}={path}: not an Ed25519 key (openssl genpkey -algorithm"
                          " ed25519)")
    return key


def _read_public(path: Path, env: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{env}={path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{env}={path}: not a PEM public key ({exc}); make it with"
                          " `openssl pkey -in PRIVATE.pem -pubout`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{env}={path}: not an Ed25519 public key")
    return key


def _generate(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        (path.parent / VERIFY_FILE).write_bytes(VerifyKey(key.public_key(), "").pem())
    except FileExistsError:  # another process generated it first: use that one
        return _read_private(path, "the generated key")
    except OSError as exc:
        raise ConfigError(f"cannot generate a signing key in {path.parent} ({exc.strerror}):"
                          f" set {env_name('audit_signing_key_file')} to an Ed25519 key"
                          " kept outside the database host") from None
    return key


def signing_key(settings: Settings, *, create: bool) -> SigningKey | None:
    """The configured private key; else the local stack's generated one (made now if
    ``create``); else None."""
    env = env_name("audit_signing_key_file")
    if settings.audit_signing_key_file is not None:
        path = settings.audit_signing_key_file
        return SigningKey(_read_private(path, env), f"{env}={path}")
    path = settings.state / "secrets" / SIGNING_SECRET
    if path.is_file():
        return SigningKey(_read_private(path, "the generated key"), str(path))
    if create:
        return SigningKey(_generate(path), f"{path} (generated now)")
    return None


def verify_key(settings: Settings) -> VerifyKey | None:
    """The public key that checks signatures: the configured one, else the signing
    key's public half; None if neither exists."""
    if settings.audit_verify_key_file is not None:
        env = env_name("audit_verify_key_file")
        path = settings.audit_verify_key_file
        return VerifyKey(_read_public(path, env), f"{env}={path}")
    private = signing_key(settings, create=False)
    return private.public if private is not None else None


def matching_keys(settings: Settings, *, create: bool) -> SigningKey:
    """The signing key, refused if a configured verify key is another key's (what it
    signed would never verify)."""
    private = signing_key(settings, create=create)
    if private is None:
        raise ConfigError(f"no signing key: set {env_name('audit_signing_key_file')}")
    public = verify_key(settings)
    if public is not None and public.key_id != private.public.key_id:
        raise ConfigError(f"{private.source} (key {private.public.key_id}) is not the key"
                          f" {public.source} verifies (key {public.key_id}): configure the"
                          " pair")
    return private
