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
from typing import Any

from sinkfleet.config import Settings, load_settings
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
        # Kafka's own Uuid.randomUuid() never starts with "-" (the storage tool would read
        # it as an option): one id in 64 did here, and every SASL test then failed to start.
        cluster_id = "-"
        while cluster_id.startswith("-"):
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


@dataclass
class TlsPg:
    port: int
    password: str
    cert_user_password: str
    pki: Pki
    home: Path
    state: Path

    def settings(self, **overrides: Any) -> Settings:
        """sinkfleet settings for this server (verify-full against our CA unless told)."""
        values: dict[str, Any] = {
            "home": self.home, "state_dir": self.state, "pg_host": "localhost",
            "pg_port": self.port, "pg_user": "sinkfleet", "pg_password": self.password,
            "pg_sslmode": "verify-full", "pg_sslrootcert": str(self.pki.ca)}
        values.update(overrides)
        return load_settings(**values)


@dataclass
class TlsRedisInfo:
    port: int
    user: str
    password: str
    pki: Pki
    home: Path
    state: Path

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": self.home, "state_dir": self.state, "redis_host": "localhost",
            "redis_port": self.port, "redis_username": self.user,
            "redis_password": self.password, "redis_tls": True,
            "redis_ssl_ca_certs": self.pki.ca}
        values.update(overrides)
        return load_settings(**values)


@dataclass
class SaslKafkaInfo:
    port: int        # SASL_PLAINTEXT on 127.0.0.1
    ssl_port: int    # SASL_SSL, certificate for 'localhost'
    users: KafkaUsers
    pki: Pki
    state: Path
    log: Path

    def settings(self, home: Path, mechanism: str = "PLAIN", tls: bool = False,
                 password: str | None = None, **overrides: Any) -> Settings:
        user = "alice" if mechanism == "PLAIN" else "bob"
        pw = password if password is not None else (
            self.users.plain if mechanism == "PLAIN" else self.users.scram)[user]
        values: dict[str, Any] = {
            "home": home, "kafka_sasl_mechanism": mechanism, "kafka_sasl_username": user,
            "kafka_sasl_password": pw}
        if tls:
            values.update(kafka_bootstrap=f"localhost:{self.ssl_port}",
                          kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=self.pki.ca)
        else:
            values.update(kafka_bootstrap=f"127.0.0.1:{self.port}",
                          kafka_security_protocol="SASL_PLAINTEXT")
        values.update(overrides)
        return load_settings(**values)

    def env(self, mechanism: str = "PLAIN", tls: bool = False,
            password: str | None = None) -> dict[str, str]:
        """The same settings as environment variables, for CLI subprocesses."""
        s = self.settings(Path("."), mechanism, tls, password)
        assert s.kafka_sasl_password is not None
        env = {"SINKFLEET_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
               "SINKFLEET_KAFKA_SECURITY_PROTOCOL": s.kafka_security_protocol,
               "SINKFLEET_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
               "SINKFLEET_KAFKA_SASL_USERNAME": str(s.kafka_sasl_username),
               "SINKFLEET_KAFKA_SASL_PASSWORD": s.kafka_sasl_password.get_secret_value()}
        if tls:
            env["SINKFLEET_KAFKA_SSL_CAFILE"] = str(self.pki.ca)
        return env
