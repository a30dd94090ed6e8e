"""Settings from the environment (prefix ``SINKFLEET_``) and an optional TOML file.

Passwords are ``SecretStr``: they never appear in ``repr``, logs or CLI output.
When no password is set, the local stack's generated secrets under
``.sinkfleet/secrets/`` are used, so a developer never types one; they are read when
a connection is made (``Settings.secret``), never when settings are built.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sinkfleet.errors import ConfigError
from sinkfleet.secrets import read_secret

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SecretName = Literal["pg_password", "pg_worker_password", "redis_password"]
PgSslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


_PLAIN_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # a role name that is also a file name
_REDIS_SIZE = re.compile(r"[1-9][0-9]{0,12}(?:[kmg]b?)?", re.IGNORECASE)  # redis.conf units


# Where `sinkfleet stack up --brokers N` records its cluster (nodes and ports) in the state
# directory; written by sinkfleet.dev.stack.cluster, read here so clients find its brokers.
LOCAL_CLUSTER_FILE = "kafka/cluster.json"


def read_local_cluster(state: Path) -> dict[str, Any] | None:
    """The local stack's recorded Kafka cluster, or None (a single node, or no stack)."""
    try:
        raw = json.loads((state / LOCAL_CLUSTER_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raw = None
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list):
        raise ConfigError(f"{state / LOCAL_CLUSTER_FILE} is damaged: stop the stack, remove"
                          f" {state / 'kafka'} (its topics are lost) and run `sinkfleet stack"
                          " up --brokers N` again")
    return raw


def env_name(field: str) -> str:
    """The environment variable that sets settings field ``field``."""
    return f"SINKFLEET_{field.upper()}"


def _home() -> Path:
    return Path(os.environ.get("SINKFLEET_HOME", ".")).resolve()


class Settings(BaseSettings):
    """Every knob of sinkfleet. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="SINKFLEET_",
        extra="ignore",
        toml_file=os.environ.get("SINKFLEET_CONFIG_FILE", "sinkfleet.toml"),
    )

    home: Path = Field(default_factory=_home, description="Catalogue root (schemas/, topics/ …)")
    state_dir: Path | None = Field(None, description="Local stack state; default HOME/.sinkfleet")
    archive_dir: Path | None = Field(None, description="Cold archive (retention); default"
                                     " STATE_DIR/archive")

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_heap: str = "512m"
    # The cluster's size, for topics' default replication (docs/local-stack.md). Unset: the
    # nodes `sinkfleet stack up --brokers N` recorded in STATE_DIR, else as many brokers as
    # the cluster reports.
    kafka_brokers: int | None = Field(None, ge=1, le=1000)
    # A worker that dies without leaving its group (kill -9, a lost node) holds its
    # partitions this long. 6 s is the broker's default minimum; heartbeats every sixth.
    kafka_session_timeout_ms: int = Field(6_000, ge=1_000, le=300_000)
    schema_registry_url: str | None = Field(None, repr=False)  # may hold user:password@
    # Kafka security (every client is built by sinkfleet.kafka.client.kafka_client_kwargs)
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # unset: the system's trust store
    kafka_ssl_certfile: Path | None = None  # client certificate (mutual TLS)
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_check_hostname: bool = True

    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_user: str = "sinkfleet"
    pg_password: SecretStr | None = None
    pg_database: str = "sinkfleet"
    pg_sslmode: PgSslMode = "prefer"
    pg_sslrootcert: str | None = None  # CA file, or "system" for the system's trust store
    pg_sslcert: Path | None = None
    pg_sslkey: Path | None = None
    # The least-privilege login role `db migrate` creates for workers (member of
    # the group role sinkfleet_worker); its password: this, or a generated secret.
    pg_worker_user: str = "sinkfleet_worker_login"
    pg_worker_password: SecretStr | None = None
    # Passwords of the least-privilege logins (one per worker group, roll-ups, exporter;
    # docs/security.md): a directory of files named after the logins, as Docker and
    # Kubernetes mount secrets. Unset: generated under STATE_DIR/secrets/pg_logins.
    pg_secrets_dir: Path | None = None

    # Bounded decoding (docs/avro.md): bigger records are dead-lettered unread; nesting of
    # recursive schemas deeper than this is refused.
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # The most one compressed record batch may inflate to (docs/compression.md); a batch
    # that would inflate further is dead-lettered whole, by its offsets, unread.
    max_batch_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    avro_max_depth: int = Field(100, ge=1, le=300)

    # Audit anchoring and signed backups (docs/audit-anchoring.md): an Ed25519 private key
    # (PEM, PKCS#8) the database never sees; unset = generated once into
    # STATE_DIR/secrets/audit_signing_key. Verifying needs only the public key.
    audit_signing_key_file: Path | None = None
    audit_verify_key_file: Path | None = None  # public key (PEM); unset = from the above
    audit_checkpoint_dir: Path | None = Field(None, description="Signed audit checkpoints,"
                                              " outside PostgreSQL; default"
                                              " STATE_DIR/audit-checkpoints")

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # a worker's /metrics port; unset = pick a free one

    # Every HTTP endpoint (docs/observability.md, "Endpoint hardening"). Allowed hosts:
    # comma-separated names accepted in the Host header besides localhost, IP literals and
    # the bind address ("*": any); others get 421, which stops DNS rebinding.
    exporter_host: str = "127.0.0.1"  # where `sinkfleet lag-exporter` listens
    exporter_token: SecretStr | None = None  # if set: needed for all but /healthz
    http_allowed_hosts: str = ""
    http_request_timeout: float = Field(10.0, gt=0, le=300)  # to send a request head
    http_write_timeout: float = Field(10.0, gt=0, le=300)  # to take a whole response
    http_max_connections: int = Field(32, ge=1, le=10_000)

    redis_host: str = "127.0.0.1"
    redis_port: int = 16379
    redis_password: SecretStr | None = None
    redis_username: str | None = None  # Redis 6+ ACL user; unset = the default user
    redis_tls: bool = False
    redis_ssl_ca_certs: Path | None = None  # unset: the system's trust store
    # The local stack's Redis: a bound, so allkeys-lru evicts instead of growing without one.
    redis_maxmemory: str = "256mb"

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("redis_maxmemory")
    @classmethod
    def _redis_size(cls, value: str) -> str:
        # Written into redis.conf: a whole-string match keeps a newline from adding lines.
        if not _REDIS_SIZE.fullmatch(value):
            raise ValueError(f"{value!r} is not a Redis memory size like 256mb, 1gb or"
                             " 500000000")
        return value

    @field_validator("pg_sslmode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the optional TOML file.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def model_post_init(self, __context: Any) -> None:
        if self.state_dir is None:
            self.state_dir = self.home / ".sinkfleet"
        self._local_cluster()
        self._check_security()
        self._check_limits()

    def _local_cluster(self) -> None:
        """A cluster made by `stack up --brokers N` here: unless set otherwise, clients
        bootstrap from all its brokers (any one may be down) and topics know its size."""
        recorded = read_local_cluster(self.state)
        if recorded is None:
            return
        nodes = recorded["nodes"]
        if "kafka_bootstrap" not in self.model_fields_set:
            self.kafka_bootstrap = ",".join(f"{n['host']}:{n['port']}" for n in nodes)
        if self.kafka_brokers is None:
            self.kafka_brokers = len(nodes)

    def _check_limits(self) -> None:
        if self.max_batch_bytes < self.max_message_bytes:
            raise ConfigError(
                f"{env_name('max_batch_bytes')}={self.max_batch_bytes} is below"
                f" {env_name('max_message_bytes')}={self.max_message_bytes}: a batch holding"
                " one record of the largest allowed size must fit; raise it")

    def secret(self, name: SecretName) -> SecretStr | None:
        """The password ``name`` as configured, else the local stack's generated one as
        it is on disk *now*.

        Never snapshotted when settings are built: a command that loads settings before
        `stack up` generates the secrets must still use them (the first `make demo` on a
        fresh machine did not, and failed at migrations).
        """
        configured: SecretStr | None = getattr(self, name)
        if configured is not None:
            return configured
        if name == "pg_password" and self.pg_user == self.pg_worker_user:
            name = "pg_worker_password"  # running as the legacy workers' login role
            if self.pg_worker_password is not None:
                return self.pg_worker_password
        user = {"pg_password": self.pg_user, "pg_worker_password": self.pg_worker_user}.get(name)
        if user is not None and _PLAIN_ROLE.fullmatch(user):
            # one of the least-privilege logins `db migrate` made (docs/security.md)
            login = self.login_secret_path(user)
            if login.is_file():
                return SecretStr(login.read_text().strip())
        generated = read_secret(self.state, name)
        return None if generated is None else SecretStr(generated)

    def login_secret_path(self, login: str) -> Path:
        """Where the password of PostgreSQL login ``login`` is read (and, with no
        ``pg_secrets_dir``, generated by `db migrate`)."""
        base = self.pg_secrets_dir or self.state / "secrets" / "pg_logins"
        return base / login

    def _check_security(self) -> None:
        """Refuse combinations that would silently connect less securely than asked."""
        proto = self.kafka_security_protocol
        if proto.startswith("SASL_"):
            for field in ("kafka_sasl_username", "kafka_sasl_password"):
                if not getattr(self, field):
                    raise ConfigError(
                        f"{env_name('kafka_security_protocol')}={proto} needs"
                        f" {env_name(field)} (SASL mechanism {self.kafka_sasl_mechanism})")
        else:
            for field in ("kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, field) is not None:
                    raise ConfigError(
                        f"{env_name(field)} is set but {env_name('kafka_security_protocol')}"
                        f"={proto} sends no credentials: set it to SASL_PLAINTEXT or SASL_SSL")
        if proto not in ("SSL", "SASL_SSL"):
            for field in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
                if getattr(self, field) is not None:
                    raise ConfigError(
                        f"{env_name(field)} is set but {env_name('kafka_security_protocol')}"
                        f"={proto} does not use TLS: set it to SSL or SASL_SSL")
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ConfigError(f"{env_name('kafka_ssl_keyfile')} needs"
                              f" {env_name('kafka_ssl_certfile')} (the client certificate)")
        if self.pg_sslmode in ("disable", "allow", "prefer"):
            for field in ("pg_sslrootcert", "pg_sslcert", "pg_sslkey"):
                if getattr(self, field) is not None:
                    raise ConfigError(
                        f"{env_name(field)} is set but {env_name('pg_sslmode')}"
                        f"={self.pg_sslmode} does not verify or present certificates: use"
                        " require, verify-ca or verify-full")
        if self.pg_sslkey is not None and self.pg_sslcert is None:
            raise ConfigError(f"{env_name('pg_sslkey')} needs {env_name('pg_sslcert')}"
                              " (the client certificate)")
        if self.redis_ssl_ca_certs is not None and not self.redis_tls:
            raise ConfigError(f"{env_name('redis_ssl_ca_certs')} is set but"
                              f" {env_name('redis_tls')} is false: set it to true")

    @property
    def state(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir

    @property
    def archive(self) -> Path:
        """Where `sinkfleet retention run` writes the cold archive (docs/retention.md)."""
        return self.archive_dir if self.archive_dir is not None else self.state / "archive"

    @property
    def audit_checkpoints(self) -> Path:
        """Where `sinkfleet audit checkpoint` writes signed chain heads."""
        if self.audit_checkpoint_dir is not None:
            return self.audit_checkpoint_dir
        return self.state / "audit-checkpoints"

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port)

    @property
    def pg_connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``create_pool``, with the password
        as it is at the time of the call."""
        kwargs: dict[str, Any] = {
            "host": self.pg_host,
            "port": self.pg_port,
            "user": self.pg_user,
            "database": self.pg_database,
        }
        password = self.secret("pg_password")
        if password is not None:
            kwargs["password"] = password.get_secret_value()
        ssl_arg = self.pg_ssl()
        if ssl_arg != "prefer":
            kwargs["ssl"] = ssl_arg
        return kwargs

    def pg_ssl(self) -> str | ssl.SSLContext:
        """asyncpg's ``ssl``: the mode string (libpq semantics, asyncpg reads PGSSL* and
        ~/.postgresql/ itself), or a context when we verify or present certificates."""
        mode = self.pg_sslmode
        if mode in ("disable", "allow", "prefer"):
            return mode
        if mode == "require" and self.pg_sslrootcert is None and self.pg_sslcert is None:
            return mode
        root = self.pg_sslrootcert
        if root is None and mode != "require":
            default = Path.home() / ".postgresql" / "root.crt"  # libpq's default
            if not default.is_file():
                raise ConfigError(
                    f"{env_name('pg_sslmode')}={mode} needs {env_name('pg_sslrootcert')}: the"
                    " CA file that signed the server's certificate, or 'system' for the"
                    f" system's trust store (or put the CA in {default})")
            root = str(default)
        if root is None:  # require + a client certificate: encrypt, verify nothing
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif root == "system":
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(
                cafile=_readable(root, env_name("pg_sslrootcert")))
        # verify-ca checks the chain only; require with a CA behaves as verify-ca (libpq).
        context.check_hostname = mode == "verify-full"
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.pg_sslcert is not None:
            _load_cert_chain(context, self.pg_sslcert, self.pg_sslkey, "pg_sslcert")
        return context

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.asyncio.Redis`` (TLS and ACL user included)."""
        kwargs: dict[str, Any] = {"host": self.redis_host, "port": self.redis_port}
        if self.redis_username is not None:
            kwargs["username"] = self.redis_username
        password = self.secret("redis_password")
        if password is not None:
            kwargs["password"] = password.get_secret_value()
        if self.redis_tls:
            kwargs.update(ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True)
            if self.redis_ssl_ca_certs is not None:
                kwargs["ssl_ca_certs"] = _readable(self.redis_ssl_ca_certs,
                                                   env_name("redis_ssl_ca_certs"))
        return kwargs


def _readable(path: str | Path, env: str) -> str:
    if not os.access(path, os.R_OK) or not Path(path).is_file():
        raise ConfigError(f"{env}={path}: no such readable file")
    return str(path)


def _load_cert_chain(context: ssl.SSLContext, cert: Path, key: Path | None, field: str
                     ) -> None:
    env = env_name(field)
    certfile = _readable(cert, env)
    keyfile = _readable(key, env.replace("CERT", "KEY")) if key is not None else None
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        raise ConfigError(f"{env}={cert}: cannot load the certificate and its key"
                          f" ({exc.reason or exc})") from None


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, the optional file and ``overrides``.

    Invalid values raise ``ConfigError`` naming the environment variable (never
    echoing the value, which may be a secret).
    """
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            field = ".".join(str(p) for p in error["loc"])
            problems.append(f"{env_name(field)}: {error['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
