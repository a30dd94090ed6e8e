"""Second, secured instances of the stack's services, started by the tests themselves.

Each reuses the local stack's service class (process management, readiness probe)
with its own state directory and free ports:

* ``TlsPostgres``: ``ssl = on``, only ``hostssl`` lines in pg_hba.conf (plain TCP is
  refused), and user ``sinkfleet_cert`` also needs a client certificate.
* ``TlsRedis``: TLS only (no plain port), the default user disabled, ACL user
  ``agent`` limited to keys ``sinkfleet:*``.
* ``SaslKafka``: KRaft single node with a SASL_PLAINTEXT listener (127.0.0.1) and a
  SASL_SSL listener (advertised as ``localhost``, the certificate's only name);
  mechanisms PLAIN (users in the JAAS line) and SCRAM-SHA-256/512 (credentials
  written by ``kafka-storage format --add-scram``).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from sinkfleet.config import Settings
from sinkfleet.dev.stack.services import SINGLE_NODE_DEFAULTS, Kafka, Postgres, Redis, _run
from tests.security.pki import Pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TlsPostgres(Postgres):
    pki: Pki

    def prepare(self) -> None:
        fresh = not (self.data / "PG_VERSION").is_file()
        super().prepare()
        if not fresh:
            return
        user = self.user()
        for src, name in ((self.pki.server.cert, "server.crt"),
                          (self.pki.server.key, "server.key"), (self.pki.ca, "ca.crt")):
            dst = self.data / name
            shutil.copy(src, dst)
            dst.chmod(0o600)
            if user is not None:
                shutil.chown(dst, user, user)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                       "ssl_ca_file = 'ca.crt'\nshared_buffers = 32MB\nmax_connections = 30\n")
        # No `host` lines: a client that does not use TLS gets no entry at all.
        (self.data / "pg_hba.conf").write_text(
            "hostssl all sinkfleet_cert 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n")


class TlsRedis(Redis):
    pki: Pki
    acl_user = "agent"
    acl_password = ""

    def prepare(self) -> None:
        home = self.settings.state / "redis"
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join([
                "bind 127.0.0.1",
                "port 0",  # no plain-text port at all
                f"tls-port {self.port}",
                f"tls-cert-file {self.pki.server.cert}",
                f"tls-key-file {self.pki.server.key}",
                f"tls-ca-cert-file {self.pki.ca}",
                "tls-auth-clients no",
                f"dir {home}",
                "daemonize no",
                'save ""',
                "appendonly no",
                "user default off",
                f"user {self.acl_user} on >{self.acl_password} ~sinkfleet:* resetchannels"
                " -@all +@read +@write +@connection +acl|whoami",
                "",
            ]))

    async def probe(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis(**self.settings.redis_kwargs(), socket_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()


@dataclass
class KafkaUsers:
    admin: str
    plain: dict[str, str]   # PLAIN users (JAAS)
    scram: dict[str, str]   # SCRAM-SHA-256 and -512 users (format --add-scram)


class SaslKafka(Kafka):
    pki: Pki
    users: KafkaUsers
    ssl_port: int
    libs_from: Settings  # the local stack's settings: reuse its Kafka jars

    def prepare(self) -> None:
        self.libs = Kafka("kafka", self.libs_from)._libs()
        host, port = self.settings.kafka_host_port
        cport = self.settings.kafka_controller_port
        home = self.home
        home.mkdir(parents=True, exist_ok=True)
        keystore = home / "server.pem"  # PEM keystore: PKCS#8 key, then the certificate
        keystore.write_bytes(self.pki.server.key.read_bytes() + self.pki.server.cert.read_bytes())
        keystore.chmod(0o600)
        u = self.users
        plain = " ".join(f'user_{n}="{p}"' for n, p in {u.admin: "admin", **u.plain}.items())
        jaas_plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required"
                      f' username="{u.admin}" password="admin" {plain};')
        jaas_scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{cport}",
            f"listeners=SASL_PLAINTEXT://{host}:{port},SASL_SSL://{host}:{self.ssl_port},"
            f"CONTROLLER://{host}:{cport}",
            f"advertised.listeners=SASL_PLAINTEXT://{host}:{port},"
            f"SASL_SSL://localhost:{self.ssl_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,"
            "CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
            f"log.dirs={home / 'data'}",
            *SINGLE_NODE_DEFAULTS,
        ]
        for listener in ("sasl_plaintext", "sasl_ssl"):
            lines.append(f"listener.name.{listener}.plain.sasl.jaas.config={jaas_plain}")
            for mech in ("scram-sha-256", "scram-sha-512"):
                lines.append(f"listener.name.{listener}.{mech}.sasl.jaas.config={jaas_scram}")
        props = home / "server.properties"
        props.write_text("\n".join(lines) + "\n")
        props.chmod(0o600)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram = [arg for name, pw in u.scram.items() for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                 for arg in ("--add-scram", f"{mech}=[name={name},password={pw}]")]
        _run(["java", "-XX:TieredStopAtLevel=1", "-cp", f"{self.libs}/*",
              "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), *scram],
             "kafka storage format (SASL test broker)")


def prepare_state(base: Path) -> Path:
    """A state directory the unprivileged 'postgres' user can traverse."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    return base
