"""Redis over TLS with an ACL user, against a real redis-server with only a TLS port,
the default user disabled and user ``agent`` limited to ``sinkfleet:*`` keys."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from sinkfleet.errors import ConfigError
from tests.security.servers import TlsRedisInfo

pytestmark = pytest.mark.integration


def client(info: TlsRedisInfo, **overrides: object) -> aioredis.Redis:
    # No retries: redis-py retries failed connections (an auth failure too) with back-off.
    return aioredis.Redis(**info.settings(**overrides).redis_kwargs(), socket_timeout=2,
                          retry=Retry(NoBackoff(), 0))


async def test_tls_and_acl_user_connect_and_are_confined(tls_redis: TlsRedisInfo) -> None:
    kwargs = tls_redis.settings().redis_kwargs()
    assert kwargs["ssl"] is True and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["username"] == "agent"
    r = client(tls_redis)
    try:
        assert await r.acl_whoami() == "agent"
        await r.set("sinkfleet:probe", "ok")
        assert await r.get("sinkfleet:probe") == b"ok"
        with pytest.raises(NoPermissionError):  # the ACL confines the user to sinkfleet:*
            await r.set("elsewhere", "x")
    finally:
        await r.aclose()


async def test_a_wrong_password_is_a_clear_authentication_error(tls_redis: TlsRedisInfo) -> None:
    r = client(tls_redis, redis_password="not-the-password")
    try:
        with pytest.raises(AuthenticationError,
                           match="invalid username-password pair or user is disabled"):
            await r.ping()
    finally:
        await r.aclose()


async def test_the_default_user_is_refused(tls_redis: TlsRedisInfo) -> None:
    r = client(tls_redis, redis_username=None)
    try:
        with pytest.raises(AuthenticationError):
            await r.ping()
    finally:
        await r.aclose()


async def test_untrusted_certificate_and_plain_text_fail(tls_redis: TlsRedisInfo) -> None:
    r = client(tls_redis, redis_ssl_ca_certs=tls_redis.pki.other_ca)
    try:
        with pytest.raises(RedisConnectionError, match="certificate verify failed"):
            await r.ping()
    finally:
        await r.aclose()
    r = client(tls_redis, redis_host="127.0.0.1")  # not a name in the certificate
    try:
        with pytest.raises(RedisConnectionError, match="mismatch"):
            await r.ping()
    finally:
        await r.aclose()
    r = client(tls_redis, redis_tls=False, redis_ssl_ca_certs=None)  # no TLS: no answer
    try:
        with pytest.raises(RedisConnectionError):
            await r.ping()
    finally:
        await r.aclose()


def test_ca_without_tls_is_a_config_error(tls_redis: TlsRedisInfo) -> None:
    with pytest.raises(ConfigError, match="SINKFLEET_REDIS_SSL_CA_CERTS is set but"
                                          " SINKFLEET_REDIS_TLS is false"):
        tls_redis.settings(redis_tls=False)
