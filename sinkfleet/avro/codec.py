"""Encode and decode framed Avro records with fastavro.

Decoding untrusted bytes is bounded (docs/avro.md, "Hostile input"): messages over
``max_message_bytes`` are refused before parsing; schemas that could make fastavro loop,
recurse or allocate without reading bytes are refused when added; values of recursive
schemas are walked with a depth limit first; and whenever fastavro may skip writer fields,
it reads through ``_ExactReader``, so its skip path cannot spin past the end. Every failure
is a ``DecodeError`` with a short, one-line message (it becomes a dead-letter header).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

import aiohttp
import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from sinkfleet.avro.bounds import (
    DEFAULT_MAX_DEPTH,
    MAX_DEPTH_CAP,
    check_bounded,
    check_schema_depth,
    definitions,
    is_recursive,
    scan_body,
    skip_can_spin,
)
from sinkfleet.avro.framing import (
    SOE_HEADER_LEN,
    SOE_MAGIC,
    frame_single_object,
    parse_frame,
)
from sinkfleet.avro.logical import UnrepresentableValue, install
from sinkfleet.errors import (
    DecodeError,
    RegistryUnavailable,
    UnknownWriterSchema,
    ValidationError,
)
from sinkfleet.urls import split_credentials

install()  # logical types decode exactly or not at all (sinkfleet/avro/logical.py)

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_REGISTRY_ANSWER_BYTES = 1024 * 1024
_DETAIL = 120  # longest exception text quoted in a DecodeError


def _short(text: object, limit: int = _DETAIL) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def schema_fingerprint(parsed: Any) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the parsing canonical form."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class _ExactReader:
    """``read(n)`` returns exactly ``n`` bytes or raises ``EOFError``.

    fastavro's read path checks lengths, but its skip path (writer fields the reader
    dropped) does not: past the end ``skip_float`` & co. read nothing and succeed, so a
    block count of 2**62 floats would spin for hours. Through this reader every skip past
    the end raises. A Python call per read (~0.2 µs; +50% on a resolving decode of
    ``experience_event``), so it is used only when skipping may meet an array of such
    items (``skip_can_spin``).
    """

    __slots__ = ("_read", "tell")

    def __init__(self, payload: bytes, offset: int) -> None:
        buf = io.BytesIO(payload)
        buf.seek(offset)
        self._read = buf.read
        self.tell = buf.tell

    def read(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise EOFError("short read")
        return data


class SchemaStore:
    """Writer schemas by fingerprint (single-object) and registry id (Confluent).

    Every schema is checked when added (``check_schema_depth``, ``check_bounded``); a
    schema that fails is a ``DecodeError``. A failed registry lookup is remembered — a
    refusal (404, unusable schema) for ``retry_after`` seconds, an outage
    (``RegistryUnavailable``) for ``retry_unreachable`` — so records naming an unknown id
    cannot each stall the worker for the lookup timeout.
    """

    def __init__(self, registry_url: str | None = None, timeout: float = 5.0,
                 retry_after: float = 30.0, retry_unreachable: float = 2.0) -> None:
        self._by_fp: dict[bytes, Any] = {}
        self._by_id: dict[int, Any] = {}
        # id(parsed) -> (parsed, recursive?, named types); holding `parsed` keeps ids unique
        self._shapes: dict[int, tuple[Any, bool, dict[str, Any]]] = {}
        self._failed: dict[int, tuple[float, DecodeError]] = {}  # id -> (when, why)
        # user:pass@ in the URL is sent as Basic auth and kept out of the URL the HTTP
        # libraries see, so none of their errors (which end up in dead letters, logs and
        # /healthz) can quote the password.
        self._registry: str | None = None
        self._auth: dict[str, str] = {}  # the Authorization header, if any
        if registry_url:
            base, creds = split_credentials(registry_url)
            self._registry = base.rstrip("/")
            if creds is not None:
                token = base64.b64encode(":".join(creds).encode()).decode()
                self._auth = {"Authorization": f"Basic {token}"}
        self._timeout = timeout
        self._retry_after = retry_after
        self._retry_unreachable = retry_unreachable
        # False: every id is looked up ahead (``look_up``); ``by_id`` never blocks on HTTP
        self.inline_lookups = True
        self._lock = threading.Lock()

    def add(self, schema: Any, schema_id: int | None = None) -> Any:
        check_schema_depth(schema)  # fastavro's parser recurses in C: check first
        try:
            parsed = parse_schema(schema)
        except Exception as exc:  # SchemaParseException, KeyError, TypeError, ...
            raise DecodeError(f"schema is not valid Avro: {_short(exc)}") from None
        check_bounded(parsed)
        self._shapes[id(parsed)] = (parsed, is_recursive(parsed), definitions(parsed))
        self._by_fp[schema_fingerprint(parsed)] = parsed
        if schema_id is not None:
            self._by_id[schema_id] = parsed
        return parsed

    def shape(self, parsed: Any) -> tuple[bool, dict[str, Any]]:
        """Whether an added schema is recursive, and its named types."""
        entry = self._shapes.get(id(parsed))
        if entry is None or entry[0] is not parsed:
            return is_recursive(parsed), definitions(parsed)
        return entry[1], entry[2]

    def knows(self, fp: bytes) -> bool:
        """Whether a schema with this fingerprint has been added."""
        return fp in self._by_fp

    def by_fingerprint(self, fp: bytes) -> Any:
        try:
            return self._by_fp[fp]
        except KeyError:
            raise UnknownWriterSchema(
                f"unknown writer schema (fingerprint {fp.hex()}): not in the catalogue nor"
                " registered (sinkfleet schemas register); replay it once it is", fp) from None

    def needs_lookup(self, schema_id: int) -> bool:
        """Whether ``by_id`` would ask the registry now (not cached, not failed lately)."""
        if self._registry is None or schema_id in self._by_id:
            return False
        failed = self._failed.get(schema_id)
        return failed is None or time.monotonic() - failed[0] >= self._wait(failed[1])

    def unreachable(self, schema_id: int) -> bool:
        """Whether the last lookup of ``schema_id`` met a registry outage."""
        failed = self._failed.get(schema_id)
        return failed is not None and failed[1].retriable

    def settled(self, schema_id: int) -> bool:
        """Whether decoding ``schema_id`` now needs no lookup and meets no outage: the
        schema is known, or the registry said it cannot be used."""
        return schema_id in self._by_id or self._registry is None or (
            schema_id in self._failed and not self.unreachable(schema_id))

    def _wait(self, failure: DecodeError) -> float:
        return self._retry_unreachable if failure.retriable else self._retry_after

    def _remember(self, schema_id: int, failure: DecodeError) -> DecodeError:
        if len(self._failed) >= 10_000:  # hostile input naming random ids
            self._failed.clear()
        self._failed[schema_id] = (time.monotonic(), failure)
        return failure

    def by_id(self, schema_id: int) -> Any:
        parsed = self._by_id.get(schema_id)
        if parsed is not None:
            return parsed
        if self._registry is None:
            raise DecodeError(f"Confluent-framed record with schema id {schema_id}, but no"
                              " schema registry is configured (SINKFLEET_SCHEMA_REGISTRY_URL)")
        with self._lock:
            parsed = self._by_id.get(schema_id)
            if parsed is not None:
                return parsed
            failed = self._failed.get(schema_id)
            if failed is not None and (not self.inline_lookups or
                                       time.monotonic() - failed[0] < self._wait(failed[1])):
                raise type(failed[1])(str(failed[1]))
            if not self.inline_lookups:  # the caller looks ids up ahead (``look_up``)
                raise RegistryUnavailable(f"schema id {schema_id} was not looked up before"
                                          " decoding")
            try:
                return self._settle(schema_id, self._fetch(schema_id))
            except DecodeError as exc:
                raise self._remember(schema_id, exc) from None

    def _settle(self, schema_id: int, raw: Any) -> Any:
        try:
            return self.add(raw, schema_id)
        except DecodeError as exc:
            raise DecodeError(f"schema id {schema_id} (registry): {exc}") from None

    def _fetch(self, schema_id: int) -> Any:
        """Blocking HTTP, for callers without an event loop; workers use ``look_up``."""
        try:
            request = urllib.request.Request(f"{self._registry}/schemas/ids/{schema_id}")
            for name, value in self._auth.items():
                request.add_unredirected_header(name, value)
            with urllib.request.urlopen(request, timeout=self._timeout) as resp:
                return _answer(schema_id, 200, resp.read(MAX_REGISTRY_ANSWER_BYTES + 1))
        except urllib.error.HTTPError as exc:
            return _answer(schema_id, exc.code, b"")
        except (OSError, ValueError) as exc:  # refused, timed out, DNS, bad URL
            raise _outage(schema_id, _short(exc)) from None

    async def look_up(self, ids: Iterable[int], *, concurrency: int = 8,
                      timeout: float | None = None, deadline: float = 5.0) -> None:
        """Ask the registry for ``ids`` that ``needs_lookup``, without blocking the event
        loop: at most ``concurrency`` requests at once, each within ``timeout`` (default:
        the store's), all within ``deadline`` seconds (requests still running then are
        cancelled and their ids stay unknown). Every answer is remembered: a schema, a
        refusal (404, an unusable schema: ``by_id`` raises ``DecodeError`` for
        ``retry_after`` seconds) or an outage (``RegistryUnavailable``, asked again after
        ``retry_unreachable`` seconds); ``settled`` says which ids decode now."""
        due = [i for i in dict.fromkeys(ids) if self.needs_lookup(i)]
        if not due:
            return
        slots = asyncio.Semaphore(concurrency)
        limit = aiohttp.ClientTimeout(total=timeout or self._timeout)
        async with aiohttp.ClientSession(
                timeout=limit, connector=aiohttp.TCPConnector(limit=concurrency),
                headers=self._auth) as http:

            async def one(schema_id: int) -> None:
                async with slots:
                    try:
                        self._settle(schema_id, await self._get(http, schema_id))
                    except DecodeError as exc:
                        self._remember(schema_id, exc)
                    else:
                        self._failed.pop(schema_id, None)

            tasks = [asyncio.create_task(one(i)) for i in due]
            _, late = await asyncio.wait(tasks, timeout=deadline)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _get(self, http: aiohttp.ClientSession, schema_id: int) -> Any:
        try:
            async with http.get(f"{self._registry}/schemas/ids/{schema_id}") as resp:
                body = b""
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_REGISTRY_ANSWER_BYTES:
                        break
                return _answer(schema_id, resp.status, body)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise _outage(schema_id, _short(exc) or type(exc).__name__) from None


# Statuses that mean "the registry cannot answer now", not "this id is bad": dead-letter
# nothing on them (401/403: its credentials are wrong, which waiting for an operator fixes).
_OUTAGE_STATUSES = frozenset({401, 403, 408, 429})


def _outage(schema_id: int, problem: str) -> RegistryUnavailable:
    return RegistryUnavailable(f"schema id {schema_id}: registry lookup failed: {problem}"
                               " (registry unreachable; the record waits, it is not a dead"
                               " letter)")


def _answer(schema_id: int, status: int, body: bytes) -> Any:
    """The raw schema in a registry answer, or the error it means."""
    if status in _OUTAGE_STATUSES or status >= 500:
        raise _outage(schema_id, f"HTTP {status}")
    if status == 404:
        raise DecodeError(f"schema id {schema_id} unknown: the schema registry answered 404"
                          " (not registered there); replay the record once it is")
    if status != 200:
        raise DecodeError(f"schema id {schema_id}: registry lookup failed: HTTP {status}")
    if len(body) > MAX_REGISTRY_ANSWER_BYTES:
        raise DecodeError(f"schema id {schema_id}: registry lookup failed: answer is over"
                          f" {MAX_REGISTRY_ANSWER_BYTES} bytes")
    try:
        return json.loads(json.loads(body)["schema"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"schema id {schema_id}: registry lookup failed: not a registry"
                          f" answer ({_short(exc)})") from None


class Codec:
    """Encoder/decoder for one record family's current (reader) schema.

    ``decode`` costs O(len(payload)) time and memory (times a factor fixed by the schema)
    and never raises anything but ``DecodeError``.
    """

    def __init__(self, schema: Any, store: SchemaStore, *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        if not 1 <= max_depth <= MAX_DEPTH_CAP:
            raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_CAP}")
        self.store = store
        self.schema = store.add(schema)
        self.fingerprint = schema_fingerprint(self.schema)
        self.name = self.schema["name"] if isinstance(self.schema, dict) else "record"
        self.max_message_bytes = max_message_bytes
        self.max_depth = max_depth
        self._recursive, self._named = store.shape(self.schema)
        self._soe_header = SOE_MAGIC + self.fingerprint
        self._direct = not self._recursive
        # id(writer) -> (writer, recursive?, named types, read through _ExactReader?)
        self._plans: dict[int, tuple[Any, bool, dict[str, Any], bool]] = {}

    def validate(self, record: Any) -> None:
        # The cheap check first: with raise_errors=True fastavro builds (and JSON-encodes)
        # an error for every union branch that does not match, even on valid records.
        if fastavro.validation.validate(record, self.schema, raise_errors=False):
            return
        try:
            fastavro.validation.validate(record, self.schema, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            problems = "; ".join(str(e) for e in exc.errors) or str(exc)
            raise ValidationError(f"record does not match {self.schema['name']}: {problems}"
                                  ) from None

    def encode(self, record: Any, *, validate: bool = True) -> bytes:
        """Single-object encoding of ``record``; ``ValidationError`` if it does not fit."""
        if validate:
            self.validate(record)
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self.schema, record)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ValidationError(f"record does not match {self.schema['name']}: {exc}"
                                  ) from None
        return frame_single_object(self.fingerprint, buf.getvalue())

    def decode(self, payload: bytes | None) -> Any:
        """Decode a single-object or Confluent framed record into the reader schema."""
        # The common case first, with no Frame and no plan: single-object framing of the
        # reader schema itself, not recursive (nothing to scan first).
        if (self._direct and payload is not None and payload[:10] == self._soe_header
                and len(payload) <= self.max_message_bytes):
            buf = io.BytesIO(payload)
            buf.seek(SOE_HEADER_LEN)
            try:
                record = fastavro.schemaless_reader(buf, self.schema, None)
            except Exception as exc:  # whatever hostile bytes make fastavro raise
                raise DecodeError(self._explain(exc, buf.tell(), len(payload))) from None
            if buf.tell() != len(payload):
                raise DecodeError(f"{len(payload) - buf.tell()} trailing bytes after the"
                                  f" {self.name} record: wrong writer schema or corrupt"
                                  " message")
            return record
        if payload is not None and len(payload) > self.max_message_bytes:
            raise DecodeError(f"message is {len(payload)} bytes, over the limit of"
                              f" {self.max_message_bytes} (max_message_bytes)")
        frame = parse_frame(payload)
        assert payload is not None
        if frame.fingerprint is not None:
            writer = (self.schema if frame.fingerprint == self.fingerprint
                      else self.store.by_fingerprint(frame.fingerprint))
        else:
            assert frame.schema_id is not None
            writer = self.store.by_id(frame.schema_id)
        size = len(payload)
        fo: Any  # io.BytesIO or _ExactReader; fastavro only calls read()
        if writer is self.schema:
            recursive, named, reader = self._recursive, self._named, None
            fo = io.BytesIO(payload)
            fo.seek(frame.body_offset)
        else:
            plan = self._plans.get(id(writer))
            if plan is None or plan[0] is not writer:
                plan = self._plan(writer)
            _, recursive, named, exact = plan
            reader = self.schema
            if exact:
                fo = _ExactReader(payload, frame.body_offset)
            else:
                fo = io.BytesIO(payload)
                fo.seek(frame.body_offset)
        if recursive:  # fastavro recurses in C without a limit: walk it with one first
            scan_body(payload, frame.body_offset, writer, named, self.max_depth,
                      label=f"body does not decode as {self.name}:")
        try:
            record = fastavro.schemaless_reader(fo, writer, reader)
        except Exception as exc:  # whatever hostile bytes make fastavro raise
            raise DecodeError(self._explain(exc, fo.tell(), size)) from None
        if fo.tell() != size:
            raise DecodeError(f"{size - fo.tell()} trailing bytes after the {self.name} record:"
                              " wrong writer schema or corrupt message")
        return record

    def _plan(self, writer: Any) -> tuple[Any, bool, dict[str, Any], bool]:
        recursive, named = self.store.shape(writer)
        plan = (writer, recursive, named, skip_can_spin(writer, self.schema))
        self._plans[id(writer)] = plan
        return plan

    def _explain(self, exc: Exception, pos: int, size: int) -> str:
        """A short, one-line reason for a fastavro failure at byte ``pos``."""
        if isinstance(exc, fastavro.read.SchemaResolutionError):
            text = str(exc)
            if text.lower().startswith("schema mismatch"):
                text = "a writer field's type does not match the reader's"
            return f"writer schema does not resolve into {self.name}: {_short(text)}"
        # IndexError: "list index…" is a union branch or enum symbol; otherwise a varint
        # indexed the empty bytes past the end.
        if isinstance(exc, EOFError | StopIteration) or (
                isinstance(exc, IndexError) and "list" not in str(exc)):
            what = "ends early: truncated, or a length or count runs past the end"
        elif isinstance(exc, IndexError):
            what = "has a union branch or enum index out of range"
        elif isinstance(exc, UnrepresentableValue):  # its message is the whole reason
            what = f"cannot be stored exactly: {exc}"
        elif isinstance(exc, UnicodeDecodeError):
            what = "has a string that is not valid UTF-8"
        elif isinstance(exc, RecursionError):
            what = "nests too deeply"
        elif isinstance(exc, MemoryError):
            what = "is too large to decode"
        else:
            what = f"has an invalid value ({type(exc).__name__}: {_short(exc, 80)})"
        return f"body does not decode as {self.name}: {what} (byte {pos} of {size})"
