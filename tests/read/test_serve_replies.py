"""The read service's pure parts: JSON of stored values, ETags and If-None-Match, the
HTTP status of each sinkfleet error, the shape of a token."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from asyncpg.pgproto.pgproto import UUID as PgUUID

from sinkfleet.errors import (
    CatalogueError,
    ConfigError,
    MigrationError,
    StorageUnavailable,
)
from sinkfleet.read.query import QueryError
from sinkfleet.read.serve import replies
from sinkfleet.read.serve.replies import dumps, etag, matches, status_of
from sinkfleet.read.serve.tokens import PREFIX, digest, token_id_of, well_formed


def test_stored_values_are_written_by_orjson_without_a_fallback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncpg's own UUID class (what rows hold) is not uuid.UUID to orjson: without
    care every row page falls back to the standard library's encoder, 5 times slower."""
    def no_fallback(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("fell back to json.dumps")

    monkeypatch.setattr(replies.json, "dumps", no_fallback)
    row = {"id": PgUUID("12345678-1234-5678-1234-567812345678"),
           "u": uuid.UUID(int=1), "ts": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
           "raw": b"\x00\xff", "n": Decimal("1.10"), "tags": ["a"], "doc": {"k": [1, None]},
           "f": float("nan")}
    assert dumps(row) == (
        b'{"id":"12345678-1234-5678-1234-567812345678",'
        b'"u":"00000000-0000-0000-0000-000000000001","ts":"2026-01-02T03:04:05+00:00",'
        b'"raw":"00ff","n":"1.10","tags":["a"],"doc":{"k":[1,null]},"f":null}')


def test_integers_beyond_64_bits_in_jsonb_still_encode() -> None:
    assert dumps({"doc": {"big": 2 ** 70}}) == b'{"doc": {"big": 1180591620717411303424}}'


def test_etags_and_if_none_match() -> None:
    tag = etag(b"{}")
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 34
    assert etag(b"{}") == tag and etag(b"[]") != tag
    assert [matches(h, tag) for h in (tag, f"W/{tag}", f'"x", {tag}', "*")] == [True] * 4
    assert [matches(h, tag) for h in (None, "", '"x"', tag[1:], f"{tag}x")] == [False] * 5


@pytest.mark.parametrize(("exc", "status"), [
    (QueryError("bad where"), 400), (ConfigError("bad"), 400),
    (CatalogueError("no sink 'x' in sinks/"), 404),
    (CatalogueError("sink 'x' is a append sink; this needs a state sink"), 400),
    (StorageUnavailable("down"), 503), (MigrationError("run db migrate"), 500)])
def test_errors_map_to_statuses(exc: Exception, status: int) -> None:
    assert status_of(exc) == status  # type: ignore[arg-type]


def test_only_token_shaped_values_are_looked_up() -> None:
    import secrets

    token = PREFIX + secrets.token_urlsafe(32)
    assert well_formed(token)
    for bad in ("", "sft_", token[:-1], token + "A", "xyz_" + token[4:], token[:-1] + "=",
                token[:-1] + "é", token[:-1] + "\x00", "Bearer " + token):
        assert not well_formed(bad), bad
    assert len(digest(token)) == 32 and token_id_of(digest(token)) == digest(token).hex()[:12]


async def test_a_token_lookup_while_postgresql_is_down_is_unavailable_not_a_bug() -> None:
    """The lookup's driver errors become StorageUnavailable (a 503 with Retry-After),
    not an unexplained 500."""
    from sinkfleet.errors import StorageUnavailable
    from sinkfleet.read.serve.tokens import TokenCache

    class DownPool:
        async def fetchval(self, *args: Any) -> Any:
            raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(StorageUnavailable, match="cannot check the token"):
        await TokenCache().tenant(DownPool(), PREFIX + "A" * 43)  # type: ignore[arg-type]
