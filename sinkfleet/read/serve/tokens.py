"""API tokens of the HTTP read service: one tenant each, only their SHA-256 at rest.

    token, token_id = await create_token(conn, "tenant-1")   # the token is shown once
    await revoke_token(conn, token_id)

A token is 256 random bits (``sft_`` + url-safe base64), so a plain SHA-256 is a safe
digest (no dictionary to try) and a lookup is one primary-key read. ``TokenCache`` keeps
answers a few seconds, so a revoked token stops working within ``ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from typing import Any

import asyncpg

from sinkfleet.errors import ConfigError, MigrationError, StorageUnavailable
from sinkfleet.sink.postgres.connect import RETRIABLE_PG_ERRORS

PREFIX = "sft_"
TOKEN_LENGTH = len(PREFIX) + 43  # token_urlsafe(32)
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def well_formed(token: str) -> bool:
    """The shape of a token this module makes: anything else is refused without a
    database read (a flood of made-up values costs no query)."""
    return (len(token) == TOKEN_LENGTH and token.startswith(PREFIX)
            and set(token[len(PREFIX):]) <= _ALPHABET)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_id_of(token_sha256: bytes) -> str:
    """A public handle: the digest's first 12 hex digits (not the token's, so a listed id
    gives nothing towards the token)."""
    return token_sha256.hex()[:12]


async def create_token(conn: asyncpg.Connection, tenant: str, note: str | None = None
                       ) -> tuple[str, str]:
    """A new token for ``tenant``: (the token, its id). Only the digest is stored."""
    if not isinstance(tenant, str) or not tenant.strip() or "\x00" in tenant:
        raise ConfigError(f"tenant must be a non-empty name, got {tenant!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    sha = digest(token)
    await conn.execute("INSERT INTO sinkfleet.api_tokens (token_sha256, token_id, tenant,"
                       " note) VALUES ($1, $2, $3, $4)", sha, token_id_of(sha), tenant, note)
    return token, token_id_of(sha)


async def revoke_token(conn: asyncpg.Connection, token_or_id: str) -> bool:
    """Revoke a token given itself or its id; False if no live token matched."""
    sha = digest(token_or_id) if token_or_id.startswith(PREFIX) else None
    status = await conn.execute(
        "UPDATE sinkfleet.api_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
        " AND (token_id = $1 OR token_sha256 = $2)", token_or_id, sha)
    return status != "UPDATE 0"


async def list_tokens(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT token_id, tenant, note, created_at, revoked_at"
                            " FROM sinkfleet.api_tokens ORDER BY created_at, token_id")
    return [dict(r) for r in rows]


class TokenCache:
    """token → tenant (None: not a live token), read from ``sinkfleet.api_tokens`` and
    kept ``ttl`` seconds; at most ``size`` answers (the oldest go first). Values not
    shaped like a token are refused unread; a flood of well-formed made-up ones costs a
    primary-key read each and bounded memory."""

    def __init__(self, ttl: float = 5.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._seen: OrderedDict[bytes, tuple[float, str | None]] = OrderedDict()

    async def tenant(self, pool: asyncpg.Pool, token: str) -> str | None:
        if not well_formed(token):
            return None
        sha = digest(token)
        now = time.monotonic()
        hit = self._seen.get(sha)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            tenant = await pool.fetchval("SELECT tenant FROM sinkfleet.api_tokens"
                                         " WHERE token_sha256 = $1 AND revoked_at IS NULL",
                                         sha)
        except RETRIABLE_PG_ERRORS as exc:
            raise StorageUnavailable(f"cannot check the token: PostgreSQL does not answer"
                                     f" ({type(exc).__name__}: {exc}); retry") from None
        except asyncpg.UndefinedTableError:
            raise MigrationError("no table sinkfleet.api_tokens: run `sinkfleet db migrate`"
                                 ) from None
        except asyncpg.InsufficientPrivilegeError:
            raise MigrationError("the service's PostgreSQL login may not read"
                                 " sinkfleet.api_tokens: log in as sinkfleet_serve_login (or"
                                 " a member of sinkfleet_serve)") from None
        self._seen[sha] = (now + self.ttl, tenant)
        self._seen.move_to_end(sha)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return tenant
