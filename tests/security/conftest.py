"""Secured servers for tests/security, each started once per session by the tests.

Nothing here is skipped: the servers are real PostgreSQL, Redis and Kafka processes
(no Docker), on free ports, stopped and removed at the end.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.stack.services import Service, wait_ready
from tests.security.pki import Pki, make_pki
from tests.security.servers import (
    KafkaUsers,
    SaslKafka,
    SaslKafkaInfo,
    TlsPg,
    TlsPostgres,
    TlsRedis,
    TlsRedisInfo,
    free_port,
    prepare_state,
)


@pytest.fixture(scope="session")
def security_root() -> Iterator[Path]:
    # Under /var/tmp, not pytest's 0700 tmp: PostgreSQL runs as 'postgres' when we are root.
    root = Path(tempfile.mkdtemp(prefix="sinkfleet-security-", dir="/var/tmp"))
    prepare_state(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pki(security_root: Path) -> Pki:
    return make_pki(security_root / "pki")


def _start(svc: Service, timeout: float) -> None:
    async def up() -> None:
        await wait_ready(svc, timeout)
        await svc.after_ready()

    svc.prepare()
    svc.proc.start(svc.argv(), user=svc.user())
    try:
        asyncio.run(up())
    except BaseException:
        svc.proc.stop(signal.SIGKILL, timeout=5)
        raise


@pytest.fixture(scope="session")
def tls_postgres(security_root: Path, pki: Pki, root: Path) -> Iterator[TlsPg]:
    state = prepare_state(security_root / "pg")
    info = TlsPg(free_port(), secrets.token_urlsafe(18), secrets.token_urlsafe(18), pki,
                 root, state)
    svc = TlsPostgres("postgres", load_settings(home=root, state_dir=state, pg_port=info.port,
                                                pg_password=info.password))
    svc.pki = pki
    _start(svc, 60)

    async def cert_user() -> None:
        import asyncpg

        conn = await asyncpg.connect(host="127.0.0.1", port=info.port, user="sinkfleet",
                                     password=info.password, database="sinkfleet", ssl="require")
        try:
            await conn.execute(f"CREATE ROLE sinkfleet_cert LOGIN PASSWORD"
                               f" '{info.cert_user_password}'")
        finally:
            await conn.close()

    try:
        asyncio.run(cert_user())
        yield info
    finally:
        svc.proc.stop(signal.SIGINT)


@pytest.fixture(scope="session")
def tls_redis(security_root: Path, pki: Pki, root: Path) -> Iterator[TlsRedisInfo]:
    state = prepare_state(security_root / "redis")
    info = TlsRedisInfo(free_port(), "agent", secrets.token_urlsafe(18), pki, root, state)
    svc = TlsRedis("redis", info.settings())
    svc.pki, svc.acl_user, svc.acl_password = pki, info.user, info.password
    _start(svc, 30)
    try:
        yield info
    finally:
        svc.proc.stop()


@pytest.fixture(scope="session")
def sasl_kafka(security_root: Path, pki: Pki, root: Path, stack: Settings
               ) -> Iterator[SaslKafkaInfo]:
    state = prepare_state(security_root / "kafka")
    users = KafkaUsers("admin", plain={"alice": secrets.token_urlsafe(18)},
                       scram={"bob": secrets.token_urlsafe(18)})
    info = SaslKafkaInfo(free_port(), free_port(), users, pki, state,
                         state / "logs" / "kafka.log")
    admin = load_settings(home=root, state_dir=state, kafka_bootstrap=f"127.0.0.1:{info.port}",
                          kafka_controller_port=free_port(), kafka_heap="384m",
                          kafka_security_protocol="SASL_PLAINTEXT",
                          kafka_sasl_mechanism="PLAIN", kafka_sasl_username="admin",
                          kafka_sasl_password="admin")
    svc = SaslKafka("kafka", admin)
    svc.pki, svc.users, svc.ssl_port, svc.libs_from = pki, users, info.ssl_port, stack
    _start(svc, 90)
    try:
        yield info
    finally:
        svc.proc.stop()
