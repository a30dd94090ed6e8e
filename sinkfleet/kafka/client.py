"""Every aiokafka client sinkfleet builds gets its connection settings from here.

``kafka_client_kwargs(settings)`` carries the bootstrap servers and the
security settings (TLS via an ``ssl.SSLContext``, SASL PLAIN/SCRAM); pass it
to ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``.
``explain_kafka_error`` turns aiokafka's "Unable to bootstrap" into the reason
(authentication, TLS, refused) and what to do, without ever echoing a secret.
Importing this module bounds what one compressed record batch may inflate to
(``sinkfleet.kafka.bounds``).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any

from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from sinkfleet.config import Settings, env_name
from sinkfleet.errors import ConfigError
from sinkfleet.kafka.bounds import install, set_max_batch_bytes

install()  # every aiokafka client of this process inflates batches within a bound

_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_instance_id(value: str | None, option: str = "--instance-id") -> str | None:
    """A static group member's id as Kafka accepts it (the rules of topic names)."""
    if value is not None and not _INSTANCE_ID.fullmatch(value):
        raise ConfigError(f"{option} {value!r} is not a Kafka group instance id: use 1 to"
                          " 249 of the characters A-Z a-z 0-9 . _ -")
    return value


def _file(settings: Settings, field: str) -> str | None:
    path = getattr(settings, field)
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"{env_name(field)}={path}: no such file")
    return str(path)


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for SSL / SASL_SSL: the CA (or the system's), an optional client
    certificate, hostname checking unless turned off."""
    cafile = _file(settings, "kafka_ssl_cafile")
    certfile = _file(settings, "kafka_ssl_certfile")
    keyfile = _file(settings, "kafka_ssl_keyfile")
    try:
        context = create_ssl_context(cafile=cafile, certfile=certfile, keyfile=keyfile)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load the Kafka TLS files ({env_name('kafka_ssl_cafile')},"
                          f" _CERTFILE, _KEYFILE): {exc.reason or exc}") from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments for any aiokafka client (producer, consumer, admin).

    Also sets this process's bound on batch inflation (``SINKFLEET_MAX_BATCH_BYTES``)."""
    set_max_batch_bytes(settings.max_batch_bytes)
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return kwargs
    kwargs["security_protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = kafka_ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None  # checked when settings load
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def _reason(settings: Settings, exc: BaseException) -> str:
    protocol = f"{env_name('kafka_security_protocol')}={settings.kafka_security_protocol}"
    tls = settings.kafka_security_protocol in ("SSL", "SASL_SSL")
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, SaslAuthenticationFailed):
        return (f"authentication failed for user {settings.kafka_sasl_username!r} (SASL"
                f" {settings.kafka_sasl_mechanism}): check {env_name('kafka_sasl_username')}"
                f" and {env_name('kafka_sasl_password')}")
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"{exc}: check {env_name('kafka_sasl_mechanism')}"
    if isinstance(exc, IllegalSaslStateError):
        return f"this listener does not speak SASL ({detail}): check {protocol}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed ({exc.verify_message}): check"
                f" {env_name('kafka_ssl_cafile')} and that the broker's certificate names"
                " the host you connect to")
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused; is it running (sinkfleet stack status)?"
    if tls and isinstance(exc, (ssl.SSLError, ConnectionError, EOFError)):
        return f"TLS handshake failed ({detail}): does this listener speak TLS? ({protocol})"
    if isinstance(exc, (OSError, TimeoutError)):
        return f"{detail}; is it running (sinkfleet stack status)?"
    return (f"{detail}; the broker may expect another security protocol than {protocol}"
            " (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")


async def explain_kafka_error(settings: Settings, exc: BaseException) -> str:
    """"cannot reach Kafka at …: <why>; <what to do>" for a client that failed to start.

    aiokafka logs the real cause of a failed bootstrap and raises a generic error;
    connect once more to the first bootstrap server the same way to learn it.
    """
    from aiokafka.conn import create_conn

    why: BaseException = exc
    host, port = settings.kafka_host_port
    kwargs = kafka_client_kwargs(settings)
    kwargs.pop("bootstrap_servers")
    try:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=5000,
                                                  **kwargs), 10)
    except (OSError, KafkaError, TimeoutError) as probe_exc:
        why = probe_exc
    else:
        conn.close()
    return f"cannot reach Kafka at {settings.kafka_bootstrap}: {_reason(settings, why)}"
