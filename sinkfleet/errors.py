"""One error hierarchy: every error sinkfleet raises on purpose is a ``SinkfleetError``.

``retriable`` says whether waiting and trying again can help (an outage) or not (a bad
record, a wrong setting). Users of the public API (``Publisher``, ``Reader``) branch on
``exc.retriable``: at that boundary driver errors are already turned into these classes
(a lost PostgreSQL connection becomes ``StorageUnavailable``), and so do the schema
lookups (``RegistryUnavailable``). The retry loops inside (worker storage, heartbeat,
caches, roll-ups, schedulers) meet asyncpg's and the OS's own exceptions, which carry no
flag, so they catch one tuple instead, ``RETRIABLE_STORAGE`` in
``sinkfleet.sink.postgres.connect``: ``StorageUnavailable`` plus the driver's retriable
classes. Wrapping every driver error on the store path would cost a translation per
query and hide the precise asyncpg classes the store step sorts refused rows by.

User-facing messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class SinkfleetError(Exception):
    """Base of every error sinkfleet raises on purpose."""

    retriable: bool = False


class ConfigError(SinkfleetError):
    """Settings or command-line input are wrong; fix them and run again."""


class CatalogueError(SinkfleetError):
    """A file under schemas/, topics/, sinks/ or workers/ is invalid."""


class StackError(SinkfleetError):
    """A local-stack service could not be started, probed or stopped."""


class DecodeError(SinkfleetError):
    """A record's bytes are not a valid framed Avro record of a known schema."""


class UnknownWriterSchema(DecodeError):
    """A single-object record names a writer schema fingerprint nobody registered."""

    def __init__(self, message: str, fingerprint: bytes) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class RegistryUnavailable(DecodeError):
    """The schema registry did not answer a lookup in time (timeout, refused, HTTP 5xx,
    401/403/408/429): an outage, not a bad record — wait and look the id up again."""

    retriable = True


class ValidationError(SinkfleetError):
    """A record does not satisfy its schema or its sink's column rules."""


class SchemaIncompatible(CatalogueError):
    """A catalogue schema cannot read (or be read by) its registered versions."""


class MigrationError(SinkfleetError):
    """The database schema cannot be brought to the catalogue's version."""


class StorageUnavailable(SinkfleetError):
    """PostgreSQL or Redis is down or slow; back off and try again."""

    retriable = True


class StorageRefused(SinkfleetError):
    """PostgreSQL or Redis refused us (credentials, TLS, no such database): fix the
    configuration; waiting will not help."""


class PublishError(SinkfleetError):
    """A record could not be handed to Kafka, or Kafka did not acknowledge it.

    ``retriable`` follows Kafka's own error: a leader that moved, too few replicas in
    sync, a request or connection that timed out are outages (publish the same records
    again); a record too large or a topic not authorized are not."""

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class PublishTimeout(PublishError):
    """The publisher's bounded buffer stayed full for longer than allowed."""

    retriable = True
