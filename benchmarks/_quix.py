"""Stage (d) of e2e_events.py: Quix Streams 3 with its community PostgreSQL sink, the
side that runs in a subprocess. Needs the bench extra (``pip install -e '.[bench]'``:
quixstreams, psycopg2), which e2e_events.py imports only when the stage runs."""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import profiled
from psycopg2 import sql
from psycopg2.extras import execute_values

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.catalogue import load_catalogue
from sinkfleet.config import Settings
from sinkfleet.worker.rows import RowBuilder

# authlib (imported by confluent-kafka) forces an "always" filter for its httpx deprecation
# warning, so a warnings filter cannot hide it: silence stderr while importing instead.
with contextlib.redirect_stderr(io.StringIO()):
    from quixstreams import Application
    from quixstreams.models import Deserializer, SerializationContext
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

# Array literal element formats: 9 significant digits round-trip any float32 exactly and
# cost half of repr(); other element types keep repr().
_ARRAY_FORMATS = {"real[]": "%.9g"}


def _pg_array(values: list[Any], fmt: str) -> str:
    return "{" + ",".join([fmt % v for v in values]) + "}"


class SinkfleetAvroDeserializer(Deserializer):
    """Decode sinkfleet's Avro single-object framing into a row dict for one sink."""

    def __init__(self, catalogue_root: str, sink_name: str) -> None:
        super().__init__()
        sink = load_catalogue(Path(catalogue_root)).sinks[sink_name]
        self._decode = Codec(sink.schema, SchemaStore()).decode
        self._build = RowBuilder(sink)
        self._names = self._build.names
        self._arrays = [(c.name, _ARRAY_FORMATS.get(c.pg_type, "%r"))
                        for c in self._build.columns if c.pg_type.endswith("[]")]

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any]:
        row = dict(zip(self._names, self._build(self._decode(value)), strict=True))
        for name, fmt in self._arrays:
            if row[name] is not None:
                row[name] = _pg_array(row[name], fmt)
        return row


class FixedColumnsPostgreSQLSink(PostgreSQLSink):
    """Quix's PostgreSQLSink inserting a fixed column list (None becomes NULL).

    The stock ``_insert_rows`` takes the columns from the batch's first row, from
    which ``write`` dropped None values: a column NULL in that row is lost for all.
    """

    def __init__(self, columns: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._columns = columns

    def _insert_rows(self, table_name: str, rows: list[dict[str, Any]],
                     pks: dict[str, Any] | None = None) -> None:
        if not rows:
            return
        query = sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT DO NOTHING").format(
            sql.Identifier(self._schema_name, table_name),
            sql.SQL(", ").join(map(sql.Identifier, self._columns)))
        values = [[row.get(c) for c in self._columns] for row in rows]
        assert self._client is not None  # connected in setup()
        with self._client.cursor() as cursor:
            execute_values(cursor, query, values)


@dataclass(frozen=True)
class QuixJob:
    """Everything the Quix subprocess needs (picklable)."""

    bootstrap: str
    group: str
    topic: str
    catalogue_root: str
    sink_name: str
    schema: str
    table: str
    columns: list[str]
    commit_every: int
    commit_interval: float
    state_dir: str
    stock_sink: bool
    profile: str | None
    pg: dict[str, Any] = field(repr=False)


def pg_kwargs(settings: Settings) -> dict[str, Any]:
    kw = dict(settings.pg_connect_kwargs)
    kw["dbname"] = kw.pop("database")
    if "ssl" in kw:
        kw["sslmode"] = kw.pop("ssl")
    return kw


def _quix_app(job: QuixJob) -> Application:
    app = Application(broker_address=job.bootstrap, consumer_group=job.group,
                      auto_offset_reset="earliest", commit_every=job.commit_every,
                      commit_interval=job.commit_interval, loglevel="WARNING",
                      state_dir=job.state_dir, use_changelog_topics=False)
    topic = app.topic(job.topic, value_deserializer=SinkfleetAvroDeserializer(
        job.catalogue_root, job.sink_name))
    common = {"table_name": job.table, "schema_name": job.schema, "schema_auto_update": False,
              "include_metadata": False, "on_conflict_do_nothing": True, **job.pg}
    sink = (PostgreSQLSink(**common) if job.stock_sink
            else FixedColumnsPostgreSQLSink(job.columns, **common))
    app.dataframe(topic).sink(sink)
    return app


def quix_child(job: QuixJob, started: Any) -> None:
    """Subprocess entry point: run the Quix app until SIGTERM."""
    app = _quix_app(job)
    with profiled(Path(job.profile) if job.profile else None):
        started.value = time.monotonic()
        app.run()
