"""Every value Avro can carry is stored exactly or dead-lettered with a reason — never
changed (guarantee 6, docs/avro.md "Extreme values").

asyncpg encodes ``datetime.min``/``max`` (and ``date.min``/``max``) as PostgreSQL's
-infinity/infinity; sinkfleet's connections take exact codecs instead. The property test
sends wire values over each type's whole range — the bytes any publisher may send —
through decode → RowBuilder → COPY → PostgreSQL → the read API.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
import signal
import struct
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.framing import frame_single_object
from sinkfleet.catalogue import load_catalogue
from sinkfleet.config import Settings
from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import DecodeError, ValidationError
from sinkfleet.read import Reader
from sinkfleet.sink.postgres.connect import create_pool, pg
from sinkfleet.sink.postgres.writer import AppendWriter
from sinkfleet.worker.rows import RowBuilder
from tests.support.catalogue import ROOT, TestCatalogue
from tests.support.family import Family, drop_family, make_family
from tests.support.waiting import async_wait_for

UTC = dt.UTC
MIN_UTC = dt.datetime(1, 1, 1, tzinfo=UTC)
MAX_UTC = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DAY = dt.date(1970, 1, 1)
MIN_US = -62135596800000000  # 0001-01-01T00:00:00Z in µs since the Unix epoch
MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z
MIN_DAY, MAX_DAY = -719162, 2932896  # 0001-01-01, 9999-12-31 in days since 1970-01-01
INT32 = (-2**31, 2**31 - 1)
INT64 = (-2**63, 2**63 - 1)

# ---------------------------------------------------------------- storage, both paths


@pytest.mark.parametrize("path", ["copy", "parameters"])
async def test_first_and_last_instants_are_stored_exactly(stack: Settings, path: str) -> None:
    """The issue: 0001-01-01T00:00:00Z became -infinity, 9999-12-31T23:59:59.999999Z
    infinity (timestamptz, timestamp and date alike); 1 µs inside round-tripped."""
    rows = [(MIN_UTC, MIN_UTC.replace(tzinfo=None), dt.date.min),
            (MAX_UTC, MAX_UTC.replace(tzinfo=None), dt.date.max),
            (MIN_UTC + dt.timedelta(microseconds=1), dt.datetime(1, 1, 1, 0, 0, 0, 1),
             dt.date(1, 1, 2))]
    async with pg(stack) as conn:
        await conn.execute("CREATE TEMP TABLE extremes (n int, a timestamptz, b timestamp,"
                           " c date)")
        numbered = [(n, *row) for n, row in enumerate(rows)]
        if path == "copy":
            await conn.copy_records_to_table("extremes", records=numbered)
        else:
            await conn.executemany("INSERT INTO extremes VALUES ($1, $2, $3, $4)", numbered)
        stored = await conn.fetch(
            "SELECT n, isfinite(a) AND isfinite(b) AND isfinite(c) AS finite,"
            " to_char(a AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS a_utc,"
            " to_char(b, 'YYYY-MM-DD HH24:MI:SS.US') AS b_text, c::text AS c_text,"
            " a, b, c FROM extremes ORDER BY n")
    assert [r["finite"] for r in stored] == [True, True, True]
    assert [r["a_utc"] for r in stored] == ["0001-01-01 00:00:00.000000",
                                           "9999-12-31 23:59:59.999999",
                                           "0001-01-01 00:00:00.000001"]
    assert [r["b_text"] for r in stored] == [r["a_utc"] for r in stored]
    assert [r["c_text"] for r in stored] == ["0001-01-01", "9999-12-31", "0001-01-02"]
    assert [(r["a"], r["b"], r["c"]) for r in stored] == rows  # and read back unchanged


async def test_pool_connections_store_extremes_exactly(stack: Settings) -> None:
    """Pools (the read API's) take the same codecs, beside their own ``init``."""
    seen: list[bool] = []

    async def init(conn: Any) -> None:
        seen.append(True)

    pool = await create_pool(stack, init=init)
    try:
        value = await pool.fetchval("SELECT $1::timestamptz::text = '9999-12-31"
                                    " 23:59:59.999999+00'", MAX_UTC)
        back = await pool.fetchval("SELECT '0001-01-01 00:00:00+00'::timestamptz")
    finally:
        await pool.close()
    assert seen and value is True
    assert back == MIN_UTC and back.tzinfo is not None


# ---------------------------------------------------------------- the whole range, property

def _logical(kind: str, logical: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "logicalType": logical, **extra}


SCHEMA: dict[str, Any] = {"type": "record", "name": "extreme_value", "fields": [
    {"name": "id", "type": "long"},
    {"name": "ts_micros", "type": _logical("long", "timestamp-micros")},
    {"name": "ts_millis", "type": _logical("long", "timestamp-millis")},
    {"name": "local_micros", "type": _logical("long", "local-timestamp-micros")},
    {"name": "local_millis", "type": _logical("long", "local-timestamp-millis")},
    {"name": "day", "type": _logical("int", "date")},
    {"name": "t_millis", "type": _logical("int", "time-millis")},
    {"name": "t_micros", "type": _logical("long", "time-micros")},
    {"name": "amount", "type": _logical("bytes", "decimal", precision=20, scale=4)},
    {"name": "fixed_amount", "type": {"type": "fixed", "name": "Amount8", "size": 8,
                                      "logicalType": "decimal", "precision": 18,
                                      "scale": 2}},
    {"name": "uid", "type": _logical("string", "uuid")},
    {"name": "d", "type": "double"},
    {"name": "f", "type": "float"},
    {"name": "f_wide", "type": "float"},
    {"name": "n", "type": "long"},
    {"name": "i", "type": "int"},
    {"name": "s", "type": "string"},
    {"name": "b", "type": "bytes"},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
    {"name": "flag", "type": "boolean"},
    {"name": "opt", "type": ["null", "double"]},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "floats", "type": {"type": "array", "items": "float"}},
    {"name": "doubles", "type": {"type": "array", "items": "double"}},
    {"name": "rec", "type": {"type": "record", "name": "Inner", "fields": [
        {"name": "x", "type": "double"}, {"name": "y", "type": "float"},
        {"name": "s", "type": "string"},
        {"name": "t", "type": _logical("long", "timestamp-micros")}]}},
    {"name": "m", "type": {"type": "map", "values": "long"}},
]}
FIELDS = [f["name"] for f in SCHEMA["fields"]]
COLUMN_TYPES = {"f_wide": "double precision"}
SINK = {"mode": "append", "id": ["id"], "time_column": "ts_micros", "columns": [
    {"name": n, "from": n, **({"type": COLUMN_TYPES[n]} if n in COLUMN_TYPES else {})}
    for n in FIELDS]}


def _wire(schema: Any) -> Any:
    """The schema a publisher without logical types writes: the same bytes."""
    if isinstance(schema, list):
        return [_wire(s) for s in schema]
    if isinstance(schema, dict):
        out = {k: _wire(v) for k, v in schema.items()
               if k not in ("logicalType", "precision", "scale")}
        if "fields" in out:
            out["fields"] = [{**f, "type": _wire(f["type"])} for f in schema["fields"]]
        return out
    return schema


WIRE = fastavro.parse_schema(_wire(SCHEMA))


# Wire range and representable range of each ranged field (ints on the wire).
RANGES: dict[str, tuple[int, int, int, int]] = {
    "ts_micros": (*INT64, MIN_US, MAX_US),
    "ts_millis": (*INT64, MIN_US // 1000, MAX_US // 1000),
    "local_micros": (*INT64, MIN_US, MAX_US),
    "local_millis": (*INT64, MIN_US // 1000, MAX_US // 1000),
    "day": (*INT32, MIN_DAY, MAX_DAY),
    "t_millis": (*INT32, 0, 86_399_999),
    "t_micros": (*INT64, 0, 86_399_999_999),
    "amount": (-10**22, 10**22, -10**20 + 1, 10**20 - 1),  # precision 20
    "fixed_amount": (*INT64, -10**18 + 1, 10**18 - 1),  # precision 18
}


def _valid(lo: int, hi: int, first: int, last: int) -> st.SearchStrategy[int]:
    """Representable values, their first and last ones often."""
    return st.one_of(st.integers(first, last), st.sampled_from([first, last, 0]))


def _wild(lo: int, hi: int, first: int, last: int) -> st.SearchStrategy[int]:
    """Anything the wire carries, just outside the representable range often."""
    edges = [v for v in (lo, hi, first - 1, last + 1) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _signed(value: int, size: int | None) -> bytes:
    width = size or max(1, (value.bit_length() + 8) // 8)
    return value.to_bytes(width, "big", signed=True)


TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
FLOATS = st.floats(width=32)
DOUBLES = st.floats()
VALID = st.fixed_dictionaries({
    **{name: _valid(*bounds) for name, bounds in RANGES.items()},
    "uid": st.uuids().map(str),
    "d": DOUBLES, "f": FLOATS, "f_wide": FLOATS, "n": st.integers(*INT64),
    "i": st.integers(*INT32), "s": TEXT, "b": st.binary(max_size=12),
    "fx": st.binary(min_size=4, max_size=4), "e": st.sampled_from(["RED", "GREEN"]),
    "flag": st.booleans(), "opt": st.none() | DOUBLES,
    "tags": st.lists(TEXT, max_size=3), "floats": st.lists(FLOATS, max_size=3),
    "doubles": st.lists(DOUBLES, max_size=3),
    "rec": st.fixed_dictionaries({"x": DOUBLES, "y": FLOATS, "s": TEXT,
                                  "t": _valid(*RANGES["ts_micros"])}),
    "m": st.dictionaries(TEXT, st.integers(*INT64), max_size=3),
})
# Half the records carry one ranged field from the whole wire range.
WILD = st.none() | st.sampled_from(sorted(RANGES)).flatmap(
    lambda name: st.tuples(st.just(name), _wild(*RANGES[name])))
RECORDS = st.tuples(VALID, WILD).map(
    lambda pair: pair[0] if pair[1] is None else {**pair[0], pair[1][0]: pair[1][1]})


class Dead(Exception):
    """What the model expects instead of a row: a dead letter, with a word of its reason."""


def _float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _same_float(a: Any, b: Any) -> bool:
    """Bit-for-bit (NaN is NaN, -0.0 is not 0.0)."""
    return (isinstance(a, float) and isinstance(b, float)
            and struct.pack("<d", a) == struct.pack("<d", b))


def _instant(us: int, what: str) -> dt.datetime:
    if not MIN_US <= us <= MAX_US:
        raise Dead(what)
    return EPOCH + dt.timedelta(microseconds=us)


def _time(us: int, what: str) -> dt.time:
    if not 0 <= us < 86_400_000_000:
        raise Dead(what)
    return (dt.datetime.min + dt.timedelta(microseconds=us)).time()


def _decimal(unscaled: int, precision: int, scale: int, what: str) -> Decimal:
    if len(str(abs(unscaled))) > precision:
        raise Dead(what)
    return Decimal(unscaled).scaleb(-scale)


def _no_nul(text: str, what: str = "NUL") -> str:
    if "\x00" in text:
        raise Dead(what)
    return text


def _json_float(value: float) -> float:
    if not math.isfinite(value):
        raise Dead("column rec")  # JSON (and jsonb) hold no NaN, no infinities
    return value + 0.0  # jsonb's numeric has no -0: the value 0 (docs/sink-modes.md)


def expected_row(raw: dict[str, Any]) -> dict[str, Any]:
    """The row PostgreSQL must hold for wire values ``raw`` (or Dead): from the Avro spec
    and PostgreSQL's types, not from sinkfleet's code."""
    row = dict(raw)
    row["ts_micros"] = _instant(raw["ts_micros"], "timestamp-micros")
    row["ts_millis"] = _instant(raw["ts_millis"] * 1000, "timestamp-millis")
    row["local_micros"] = _instant(raw["local_micros"], "local-timestamp-micros"
                                   ).replace(tzinfo=None)
    row["local_millis"] = _instant(raw["local_millis"] * 1000, "local-timestamp-millis"
                                   ).replace(tzinfo=None)
    if not MIN_DAY <= raw["day"] <= MAX_DAY:
        raise Dead("date")
    row["day"] = EPOCH_DAY + dt.timedelta(days=raw["day"])
    row["t_millis"] = _time(raw["t_millis"] * 1000, "time-millis")
    row["t_micros"] = _time(raw["t_micros"], "time-micros")
    row["amount"] = _decimal(raw["amount"], 20, 4, "decimal")
    row["fixed_amount"] = _decimal(raw["fixed_amount"], 18, 2, "decimal")
    row["uid"] = uuid.UUID(raw["uid"])
    row["f"], row["f_wide"] = _float32(raw["f"]), _float32(raw["f_wide"])
    row["s"] = _no_nul(raw["s"])
    row["tags"] = [_no_nul(t) for t in raw["tags"]]
    row["floats"] = [_float32(v) for v in raw["floats"]]
    rec = raw["rec"]
    row["rec"] = {"x": _json_float(rec["x"]), "y": _json_float(_float32(rec["y"])),
                  "s": _no_nul(rec["s"], "column rec"),
                  "t": (_instant(rec["t"], "timestamp-micros"), rec["t"])[1]}
    row["m"] = {_no_nul(k, "column m"): v for k, v in raw["m"].items()}
    return row


def _wire_record(n: int, raw: dict[str, Any]) -> bytes:
    values = {**raw, "id": n, "amount": _signed(raw["amount"], None),
              "fixed_amount": _signed(raw["fixed_amount"], 8)}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, WIRE, values)
    return buf.getvalue()


def _equal(column: str, got: Any, want: Any, in_json: bool = False) -> bool:
    if isinstance(want, float):
        # jsonb keeps a number's value, not its spelling: an integral double may come back
        # as an integer (-3.807153070958182e+16 as -38071530709581820), the same double.
        if in_json and isinstance(got, int) and not isinstance(got, bool):
            got = float(got)
        return _same_float(got, want)
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(_equal(column, got[k], w, True)
                                                  for k, w in want.items())
    if isinstance(want, list):
        return len(got) == len(want) and all(_equal(column, g, w)
                                              for g, w in zip(got, want, strict=True))
    if isinstance(want, Decimal):  # the value and its scale
        return isinstance(got, Decimal) and got.as_tuple() == want.as_tuple()
    if isinstance(want, dt.datetime):
        return got == want and (got.tzinfo is None) == (want.tzinfo is None)
    return bool(got == want)


class Table:
    """The family under test (a short repr: hypothesis prints its arguments)."""

    def __init__(self, fam: Family) -> None:
        self.fam = fam

    def __repr__(self) -> str:
        return f"Table({self.fam.table})"


@pytest_asyncio.fixture(scope="module")
async def extreme_table(stack: Settings, tmp_path_factory: pytest.TempPathFactory
                        ) -> AsyncIterator[Table]:
    fam = await make_family(tmp_path_factory.mktemp("extreme"), stack, SCHEMA, {}, SINK)
    try:
        yield Table(fam)
    finally:
        await drop_family(fam)


# No shrinking: every example is a round trip to PostgreSQL; a failure names the column,
# the value stored and the value sent, and derandomize makes it reproducible.
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(RECORDS, min_size=1, max_size=12))
async def test_every_wire_value_is_stored_exactly_or_dead_lettered(
        extreme_table: Table, batch: list[dict[str, Any]]) -> None:
    fam = extreme_table.fam
    sink = fam.sink
    codec = Codec(SCHEMA, SchemaStore())
    build = RowBuilder(sink)
    writer = AppendWriter(sink, build.names)
    rows, wanted = [], {}
    for n, raw in enumerate(batch):
        message = frame_single_object(codec.fingerprint, _wire_record(n, raw))
        try:
            want = expected_row({**raw, "id": n})
        except Dead as dead:
            with pytest.raises((DecodeError, ValidationError), match=str(dead)):
                build(codec.decode(message))
            continue
        rows.append(build(codec.decode(message)))
        wanted[n] = want
    async with pg(fam.settings) as conn:
        await conn.execute(f'TRUNCATE "{fam.table}"')
        await writer.prepare(conn)
        async with conn.transaction():
            assert (await writer.write(conn, rows)).inserted == len(rows)
    async with Reader(fam.settings, fam.catalogue) as reader:
        stored = await reader.events(fam.table, limit=100)
    assert sorted(r["id"] for r in stored) == sorted(wanted)
    for row in stored:
        want = wanted[row["id"]]
        for column in FIELDS:
            assert _equal(column, row[column], want[column]), (column, row[column],
                                                               want[column])


# ---------------------------------------------------------------- named hostile values

def _decode_one(field_type: Any, wire_type: Any, value: Any) -> Any:
    schema = {"type": "record", "name": "one", "fields": [{"name": "v", "type": field_type}]}
    wire = {"type": "record", "name": "one", "fields": [{"name": "v", "type": wire_type}]}
    codec = Codec(schema, SchemaStore())
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(wire), {"v": value})
    return codec.decode(frame_single_object(codec.fingerprint, buf.getvalue()))["v"]


@pytest.mark.parametrize("field_type, wire_type, value, reason", [
    # fastavro wrapped these to a time of day (-1 ms read as 00:00:00.999)
    (_logical("int", "time-millis"), "int", -1, "time-millis -1 is not a time of day"),
    (_logical("long", "time-micros"), "long", -1, "time-micros -1 is not a time of day"),
    (_logical("long", "time-micros"), "long", 86_400_000_000, "not a time of day"),
    # ... and rounded this to its precision (8388607 → 8.389E+4)
    (_logical("bytes", "decimal", precision=4, scale=2), "bytes", b"\x7f\xff\xff",
     "decimal has 7 digits, more than its precision 4"),
    # Python datetimes end at 9999 and start at year 1: "date value out of range" before
    (_logical("long", "timestamp-micros"), "long", MAX_US + 1,
     "timestamp-micros 253402300800000000 is after 9999-12-31T23:59:59.999999"),
    (_logical("long", "timestamp-micros"), "long", -2**63, "is before 0001-01-01T00:00:00"),
    (_logical("long", "timestamp-millis"), "long", 2**63 - 1, "timestamp-millis"),
    (_logical("int", "date"), "int", MAX_DAY + 1, "date 2932897 (days since 1970-01-01)"),
])
def test_values_avro_carries_but_python_cannot_are_refused_with_their_reason(
        field_type: Any, wire_type: Any, value: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match="cannot be stored exactly: .*" + re.escape(reason)):
        _decode_one(field_type, wire_type, value)


@pytest.mark.parametrize("field_type, wire_type, value, want", [
    (_logical("long", "timestamp-micros"), "long", MIN_US, MIN_UTC),
    (_logical("long", "timestamp-micros"), "long", MAX_US, MAX_UTC),
    (_logical("int", "time-millis"), "int", 86_399_999, dt.time(23, 59, 59, 999000)),
    (_logical("bytes", "decimal", precision=7, scale=2), "bytes", b"\x7f\xff\xff",
     Decimal("83886.07")),
    (_logical("int", "date"), "int", MIN_DAY, dt.date.min),
])
def test_the_last_representable_values_decode_exactly(field_type: Any, wire_type: Any,
                                                       value: Any, want: Any) -> None:
    assert _decode_one(field_type, wire_type, value) == want


def test_nul_in_a_text_array_is_a_validation_error(tmp_path: Path) -> None:
    """PostgreSQL refused the whole batch for it; now the record alone is a dead letter."""
    for sub, text in {"schemas/extreme_value.avsc": json.dumps(SCHEMA),
                      "topics/t.yaml": "name: t\nschema: extreme_value\npartitions: 1\n",
                      "sinks/s.yaml": yaml.safe_dump({"name": "s", "topic": "t", "table": "s",
                                                      **SINK}),
                      "workers/w.yaml": "name: w\ngroup: g\nsinks: [s]\n"}.items():
        (tmp_path / sub).parent.mkdir(exist_ok=True)
        (tmp_path / sub).write_text(text)
    build = RowBuilder(load_catalogue(tmp_path).sinks["s"])
    codec = Codec(SCHEMA, SchemaStore())
    record = {**dict.fromkeys(RANGES, 0), "amount": b"\x00", "fixed_amount": bytes(8),
              "uid": str(uuid.UUID(int=1)), "d": 0.0, "f": 0.0, "f_wide": 0.0, "n": 0,
              "i": 0, "s": "", "b": b"", "fx": bytes(4), "e": "RED", "flag": False,
              "opt": None, "floats": [], "doubles": [], "m": {},
              "rec": {"x": 0.0, "y": 0.0, "s": "", "t": 0}, "id": 1, "tags": ["ok", "a\x00b"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, WIRE, record)
    decoded = codec.decode(frame_single_object(codec.fingerprint, buf.getvalue()))
    with pytest.raises(ValidationError, match="column tags: an element contains a NUL"):
        build(decoded)


# ---------------------------------------------------------------- an independent publisher

def _apache_avro_body(event: dict[str, Any]) -> bytes:
    """The body as the apache ``avro`` package writes it (not fastavro)."""
    schema = avro.schema.parse((ROOT / "schemas" / "experience_event.avsc").read_text())
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(event, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


@pytest.mark.integration
async def test_an_independent_publisher_s_first_and_last_instants_are_stored_exactly(
        catalogue_factory: Any, tmp_path: Path) -> None:
    """The issue's report: apache avro publishes experience events at the first and last
    instants; the real worker stores those instants, not ±infinity."""
    from aiokafka import AIOKafkaProducer

    tc: TestCatalogue = await catalogue_factory(partitions=1)
    codec = Codec(tc.catalogue.schemas["experience_event"], SchemaStore())
    events = []
    for n, (event, instant) in enumerate(zip(ExperienceLoad(seed=11), (MIN_UTC, MAX_UTC),
                                             strict=False)):
        event["timestamp"] = instant
        event["event_id"] = bytes([n + 1]) * 16
        events.append(event)
    producer = AIOKafkaProducer(bootstrap_servers=tc.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(tc.topic, frame_single_object(
                codec.fingerprint, _apache_avro_body(event)))
    finally:
        await producer.stop()
    log = tmp_path / "worker.log"
    worker = tc.start_worker(log)
    try:
        async def stored() -> list[Any]:
            async with pg(tc.settings) as conn:
                rows = await conn.fetch(
                    f'SELECT event_id, ts, isfinite(ts) AS finite, to_char(ts AT TIME ZONE'
                    f" 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS utc FROM \"{tc.table}\""
                    " ORDER BY event_id")
            return rows if len(rows) == 2 else []

        rows = await async_wait_for(stored, 90, "both events stored")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()[-3000:]
    assert [bytes(r["event_id"]) for r in rows] == [e["event_id"] for e in events]
    assert [(r["finite"], r["utc"]) for r in rows] == [
        (True, "0001-01-01 00:00:00.000000"), (True, "9999-12-31 23:59:59.999999")]
    assert [r["ts"] for r in rows] == [MIN_UTC, MAX_UTC]
