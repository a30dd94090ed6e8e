"""Kafka with SASL (PLAIN, SCRAM-SHA-256/512) and TLS against a real broker started here.

Topics are created through `apply_topics`, records go through our ``Publisher`` and
are read back by ``sinkfleet worker`` processes (the real worker, into PostgreSQL as
the least-privilege worker role) or by a consumer built like the worker's; wrong
credentials and untrusted certificates fail at start-up with errors that say why.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import ConfigError, PublishError, SinkfleetError
from sinkfleet.kafka.client import kafka_client_kwargs
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import pg
from tests.security.servers import SaslKafkaInfo
from tests.support.catalogue import TestCatalogue
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration


async def publish(settings: Any, tc: TestCatalogue, n: int, seed: int) -> list[dict[str, Any]]:
    load = ExperienceLoad(seed=seed, agents=8, agent_prefix=f"s{tc.suffix}")
    events = [next(load) for _ in range(n)]
    async with Publisher(settings, catalogue=tc.catalogue) as pub:
        for event in events:
            await pub.publish("experience_event", event)
    return events


async def read_back(settings: Any, tc: TestCatalogue, n: int) -> list[dict[str, Any]]:
    """Consume ``n`` records the way the worker does (group, no auto-commit)."""
    codec = Codec(tc.catalogue.schemas["experience_event"], SchemaStore(None))
    consumer = AIOKafkaConsumer(tc.topic, **kafka_client_kwargs(settings),
                                group_id=f"{tc.group}-reader", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            while len(records) < n:
                batch = await consumer.getmany(timeout_ms=500)
                records += [codec.decode(m.value) for ms in batch.values() for m in ms]
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


async def test_plain_over_sasl_plaintext_publish_and_read_back(
        sasl_kafka: SaslKafkaInfo, catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=3)
    settings = sasl_kafka.settings(tc.root)
    await apply_topics(settings, tc.catalogue, say=lambda m: None)
    events = await publish(settings, tc, 200, seed=1)
    got = await read_back(settings, tc, 200)
    assert sorted(e["event_id"] for e in got) == sorted(e["event_id"] for e in events)


async def test_scram_over_sasl_ssl_publish_and_read_back(
        sasl_kafka: SaslKafkaInfo, catalogue_factory: Any) -> None:
    tc: TestCatalogue = await catalogue_factory(partitions=2)
    sha256 = sasl_kafka.settings(tc.root, "SCRAM-SHA-256", tls=True)
    sha512 = sasl_kafka.settings(tc.root, "SCRAM-SHA-512", tls=True)
    kwargs = kafka_client_kwargs(sha256)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["ssl_context"].check_hostname and kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    await apply_topics(sha256, tc.catalogue, say=lambda m: None)
    events = await publish(sha256, tc, 100, seed=2)
    got = await read_back(sha512, tc, 100)
    assert sorted(e["event_id"] for e in got) == sorted(e["event_id"] for e in events)


@pytest.mark.parametrize(("mechanism", "tls"), [("PLAIN", False), ("SCRAM-SHA-256", False),
                                                ("SCRAM-SHA-512", True)])
async def test_a_wrong_password_fails_clearly(sasl_kafka: SaslKafkaInfo, root: Path,
                                              mechanism: str, tls: bool) -> None:
    wrong = "wrong-" + os.urandom(6).hex()
    settings = sasl_kafka.settings(root, mechanism, tls=tls, password=wrong)
    user = settings.kafka_sasl_username
    expected = (f"cannot reach Kafka at {settings.kafka_bootstrap}: authentication failed for"
                f" user '{user}' (SASL {mechanism}): check SINKFLEET_KAFKA_SASL_USERNAME and"
                " SINKFLEET_KAFKA_SASL_PASSWORD")
    pub = Publisher(settings)
    with pytest.raises(PublishError) as caught:
        await pub.start()
    await pub._producer.stop()
    assert str(caught.value) == expected
    with pytest.raises(SinkfleetError) as caught_admin:
        await apply_topics(settings, pub.catalogue, say=lambda m: None)
    assert str(caught_admin.value) == expected
    assert wrong not in expected


async def test_untrusted_or_misnamed_broker_certificates_fail_clearly(
        sasl_kafka: SaslKafkaInfo, root: Path) -> None:
    foreign = sasl_kafka.settings(root, "SCRAM-SHA-256", tls=True,
                                  kafka_ssl_cafile=sasl_kafka.pki.other_ca)
    with pytest.raises(SinkfleetError, match="TLS certificate verification failed \\(unable"
                                             " to get local issuer certificate\\)"):
        await apply_topics(foreign, Publisher(foreign).catalogue, say=lambda m: None)
    by_ip = sasl_kafka.settings(root, "SCRAM-SHA-256", tls=True,
                                kafka_bootstrap=f"127.0.0.1:{sasl_kafka.ssl_port}")
    with pytest.raises(SinkfleetError, match="TLS certificate verification failed \\(IP"
                                             " address mismatch"):
        await apply_topics(by_ip, Publisher(by_ip).catalogue, say=lambda m: None)
    # Hostname checking can be turned off explicitly (the chain is still verified).
    unchecked = sasl_kafka.settings(root, "SCRAM-SHA-256", tls=True,
                                    kafka_bootstrap=f"127.0.0.1:{sasl_kafka.ssl_port}",
                                    kafka_ssl_check_hostname=False)
    assert kafka_client_kwargs(unchecked)["ssl_context"].check_hostname is False
    # No TLS against the TLS listener: refused, and the message points at the protocol.
    plain = sasl_kafka.settings(root, "SCRAM-SHA-256", tls=False,
                                kafka_bootstrap=f"localhost:{sasl_kafka.ssl_port}")
    with pytest.raises(SinkfleetError, match="SINKFLEET_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"):
        await apply_topics(plain, Publisher(plain).catalogue, say=lambda m: None)


def test_sasl_settings_are_validated(sasl_kafka: SaslKafkaInfo, root: Path) -> None:
    with pytest.raises(ConfigError, match="^SINKFLEET_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs"
                                          " SINKFLEET_KAFKA_SASL_PASSWORD"):
        sasl_kafka.settings(root, tls=True, password="")
    with pytest.raises(ConfigError, match="SINKFLEET_KAFKA_SASL_USERNAME is set but"
                                          " SINKFLEET_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"):
        sasl_kafka.settings(root, kafka_security_protocol="PLAINTEXT")
    with pytest.raises(ConfigError, match="SINKFLEET_KAFKA_SSL_CAFILE is set but"
                                          " SINKFLEET_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"):
        sasl_kafka.settings(root, kafka_ssl_cafile=sasl_kafka.pki.ca)
    with pytest.raises(ConfigError, match="SINKFLEET_KAFKA_SSL_CAFILE=/nonexistent: no such"):
        kafka_client_kwargs(sasl_kafka.settings(root, tls=True,
                                                kafka_ssl_cafile=Path("/nonexistent")))


def _worker(tc: TestCatalogue, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "sinkfleet", "worker", "--spec", tc.worker_spec,
             "--log-level", "DEBUG"],
            stdout=fh, stderr=subprocess.STDOUT, env={**tc.env(), **env}, cwd=tc.root)


async def test_worker_over_sasl_as_the_least_privilege_role(
        sasl_kafka: SaslKafkaInfo, catalogue_factory: Any, tmp_path: Path) -> None:
    """The real worker process: Kafka over SASL, PostgreSQL as sinkfleet_worker_login.
    A wrong Kafka password makes it exit 2 with one clear line; no secret is printed."""
    tc: TestCatalogue = await catalogue_factory(partitions=3, max_age_ms=100)
    settings = sasl_kafka.settings(tc.root)
    await apply_topics(settings, tc.catalogue, say=lambda m: None)
    events = await publish(settings, tc, 300, seed=3)
    owner = tc.settings
    owner_pw, worker_secret = owner.secret("pg_password"), owner.secret("pg_worker_password")
    assert owner_pw is not None and worker_secret is not None
    worker_pw = worker_secret.get_secret_value()
    kafka_pw = sasl_kafka.users.plain["alice"]
    env = {**sasl_kafka.env(), "SINKFLEET_PG_USER": owner.pg_worker_user,
           "SINKFLEET_PG_PASSWORD": worker_pw}
    secrets = [kafka_pw, worker_pw, owner_pw.get_secret_value()]

    wrong = {**env, "SINKFLEET_KAFKA_SASL_PASSWORD": "wrong-" + os.urandom(6).hex()}
    failed = _worker(tc, wrong, tmp_path / "wrong.log")
    assert failed.wait(60) == 2
    text = (tmp_path / "wrong.log").read_text()
    assert (f"error: cannot reach Kafka at {settings.kafka_bootstrap}: authentication failed"
            " for user 'alice' (SASL PLAIN)") in " ".join(text.split())
    assert "Traceback" not in text
    assert not [s for s in [*secrets, wrong["SINKFLEET_KAFKA_SASL_PASSWORD"]] if s in text]

    proc = _worker(tc, env, tmp_path / "worker.log")
    try:
        async def stored() -> bool:
            async with pg(owner) as conn:
                return await conn.fetchval(f'SELECT count(*) FROM "{tc.table}"') == 300

        await async_wait_for(stored, 60, "300 rows stored by the SASL worker")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = (tmp_path / "worker.log").read_text()
    assert code == 0, text[-2000:]
    assert "stopped cleanly: consumed=300 stored=300" in text
    assert not [s for s in secrets if s in text]
    async with pg(owner) as conn:
        rows = await conn.fetch("SELECT DISTINCT w.group_id, o.next_offset IS NOT NULL AS o"
                                " FROM sinkfleet.workers w LEFT JOIN sinkfleet.consumer_offsets"
                                " o USING (group_id) WHERE w.group_id = $1", tc.group)
        ids = {bytes(r["event_id"]) for r in await conn.fetch(
            f'SELECT event_id FROM "{tc.table}"')}
    assert [(r["group_id"], r["o"]) for r in rows] == [(tc.group, True)]  # heartbeat, offsets
    assert ids == {e["event_id"] for e in events}
