"""PostgreSQL over TLS against a real server with ``ssl = on`` and hostssl-only pg_hba.conf:
verify-full accepts the certificate's name and refuses another, verify-ca checks the
chain only, a foreign CA and plain TCP are refused, a client certificate is presented,
and `db migrate` plus the workers' login role work over verify-full."""

from __future__ import annotations

import ssl

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.errors import ConfigError, StorageRefused
from sinkfleet.sink.postgres.connect import connect, pg
from sinkfleet.sink.postgres.migrate import migrate
from tests.security.servers import TlsPg

pytestmark = pytest.mark.integration

SSL_IN_USE = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


async def test_verify_full_connects_to_the_certificates_name(tls_postgres: TlsPg) -> None:
    settings = tls_postgres.settings()
    kwargs = settings.pg_connect_kwargs
    assert isinstance(kwargs["ssl"], ssl.SSLContext) and kwargs["ssl"].check_hostname
    async with pg(settings) as conn:
        row = await conn.fetchrow(SSL_IN_USE)
        assert row["ssl"] is True and row["version"].startswith("TLSv1.")


async def test_verify_full_refuses_a_name_the_certificate_lacks(tls_postgres: TlsPg) -> None:
    # Same server, same CA; 127.0.0.1 is not in the certificate (DNS:localhost only).
    settings = tls_postgres.settings(pg_host="127.0.0.1")
    with pytest.raises(StorageRefused) as caught:
        await connect(settings)
    message = str(caught.value)
    assert "SSLCertVerificationError" in message
    assert "mismatch, certificate is not valid for '127.0.0.1'" in message
    assert "SINKFLEET_PG_SSLROOTCERT" in message and "SINKFLEET_PG_HOST" in message
    assert tls_postgres.password not in message


async def test_verify_ca_checks_the_chain_but_not_the_name(tls_postgres: TlsPg) -> None:
    async with pg(tls_postgres.settings(pg_host="127.0.0.1", pg_sslmode="verify-ca")) as conn:
        assert (await conn.fetchrow(SSL_IN_USE))["ssl"] is True


async def test_a_certificate_from_another_ca_is_refused(tls_postgres: TlsPg) -> None:
    settings = tls_postgres.settings(pg_sslrootcert=str(tls_postgres.pki.other_ca))
    with pytest.raises(StorageRefused, match="certificate verify failed"):
        await connect(settings)


async def test_plain_tcp_is_refused_by_the_server(tls_postgres: TlsPg) -> None:
    settings = tls_postgres.settings(pg_sslmode="disable", pg_sslrootcert=None)
    with pytest.raises(StorageRefused) as caught:
        await connect(settings)
    assert "no pg_hba.conf entry" in str(caught.value)
    assert "no encryption" in str(caught.value)
    assert "SINKFLEET_PG_SSLMODE" in str(caught.value)


async def test_require_encrypts_without_verifying(tls_postgres: TlsPg) -> None:
    settings = tls_postgres.settings(pg_host="127.0.0.1", pg_sslmode="require",
                                     pg_sslrootcert=None)
    assert settings.pg_connect_kwargs["ssl"] == "require"
    async with pg(settings) as conn:
        assert (await conn.fetchrow(SSL_IN_USE))["ssl"] is True


async def test_client_certificate_is_presented(tls_postgres: TlsPg) -> None:
    pki = tls_postgres.pki
    base = {"pg_user": "sinkfleet_cert", "pg_password": tls_postgres.cert_user_password}
    with pytest.raises(StorageRefused, match="requires a valid client certificate"):
        await connect(tls_postgres.settings(**base))
    async with pg(tls_postgres.settings(**base, pg_sslcert=pki.client.cert,
                                        pg_sslkey=pki.client.key)) as conn:
        assert await conn.fetchval("SELECT current_user") == "sinkfleet_cert"


def test_misconfigured_tls_settings_name_the_variable(tls_postgres: TlsPg) -> None:
    with pytest.raises(ConfigError, match="SINKFLEET_PG_SSLMODE=verify-full needs"
                                          " SINKFLEET_PG_SSLROOTCERT"):
        tls_postgres.settings(pg_sslrootcert=None).pg_connect_kwargs  # noqa: B018
    with pytest.raises(ConfigError, match="SINKFLEET_PG_SSLROOTCERT=/nonexistent/ca.crt"):
        tls_postgres.settings(pg_sslrootcert="/nonexistent/ca.crt").pg_connect_kwargs  # noqa: B018
    with pytest.raises(ConfigError, match="SINKFLEET_PG_SSLCERT is set but SINKFLEET_PG_SSLMODE"
                                          "=prefer"):
        tls_postgres.settings(pg_sslmode="prefer", pg_sslrootcert=None,
                              pg_sslcert=tls_postgres.pki.client.cert)


async def test_migrate_and_the_worker_login_role_over_verify_full(tls_postgres: TlsPg) -> None:
    settings = tls_postgres.settings(pg_worker_password="wörker-pässwörd ﬁne")
    said: list[str] = []
    await migrate(settings, load_catalogue(settings.home), said.append)
    assert "applied core:0003_roles: core 0003_roles.sql" in said
    assert any("created login role sinkfleet_worker_login" in line for line in said)
    # The login role's SCRAM secret was computed client-side (SASLprep included): the
    # server accepts the password, and the plain text never crossed the wire.
    worker = tls_postgres.settings(pg_user="sinkfleet_worker_login",
                                   pg_password="wörker-pässwörd ﬁne")
    async with pg(worker) as conn:
        assert await conn.fetchval("SELECT pg_has_role('sinkfleet_worker', 'MEMBER')")
        assert (await conn.fetchrow(SSL_IN_USE))["ssl"] is True
        assert await conn.fetchval(
            "SELECT has_table_privilege('public.experience_events', 'INSERT')")
    await migrate(settings, load_catalogue(settings.home), said.append)  # idempotent
    assert said[-1] == "database is up to date"
