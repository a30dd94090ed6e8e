"""Values typed on a command line, read as the fields of a state family's Avro schema
(pure: strings in, Avro-ready values out, no I/O).

Each field's schema decides how its text is read: strings as they are, JSON fields
(``"sinkfleet.json": true``) as JSON text that must parse, ``long``/``int`` as integers,
``double``/``float`` as numbers, ``boolean`` as true/false, timestamps as ISO-8601;
``null`` is None for a nullable field. Anything else (records, arrays, maps) is JSON.

>>> schema = {"type": "record", "name": "P", "fields": [
...     {"name": "n", "type": "long"}, {"name": "w", "type": "string", "sinkfleet.json": True}]}
>>> parse_fields(schema, ["n=3", 'w={"a": 1}'], owned=set())
{'n': 3, 'w': '{"a": 1}'}
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from typing import Any

from sinkfleet.avro.hashing import JSON_PROP
from sinkfleet.errors import ValidationError

_INTS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}
_TIMES = {"timestamp-micros", "timestamp-millis"}
_SHOWN = 60  # characters of a bad value quoted back in an error


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def visible(text: str) -> str:
    """Control and format characters (ESC, C1, bidi overrides) as escapes: ids and stored
    values are untrusted and must not drive the terminal that shows them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                   for c in text)


def fields_of(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The schema's top-level fields by name."""
    return {f["name"]: f for f in schema["fields"]}


def _branch(avro_type: Any) -> tuple[Any, bool]:
    """(the non-null type, nullable?) of a field type."""
    if isinstance(avro_type, list):
        rest = [b for b in avro_type if b != "null"]
        return (rest[0] if len(rest) == 1 else rest), len(rest) != len(avro_type)
    return avro_type, False


def is_json_field(field: dict[str, Any]) -> bool:
    return bool(field.get(JSON_PROP))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name}: JSON has no NaN or Infinity, and jsonb refuses them")


def check_json(text: str, where: str) -> str:
    """``text`` if it is one JSON value (jsonb's rules: no \\u0000), else a clear error."""
    try:
        json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        hint = (" (a string needs quotes: '\"text\"', or pass --text)"
                if text and text[0] not in '{["-0123456789tfn' else "")
        raise ValidationError(f"{where}: {_shown(text)} is not JSON ({exc}){hint}") from None
    if "\\u0000" in text or "\x00" in text:
        raise ValidationError(f"{where}: JSON with \\u0000, which PostgreSQL's jsonb refuses")
    return text


def parse_value(field: dict[str, Any], text: str) -> Any:
    """The Avro value of ``text`` for ``field`` (see the module docstring)."""
    name = field["name"]
    avro_type, nullable = _branch(field["type"])
    if nullable and text == "null":
        return None
    if is_json_field(field):
        return check_json(text, f"field {name}")
    logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
    base = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if logical in _TIMES:
        return _time(text, name)
    if base == "string":
        return text
    if base in _INTS:
        return _int(text, name, *_INTS[base])
    if base in ("double", "float"):
        return _number(text, name)
    if base == "boolean":
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValidationError(f"field {name}: {_shown(text)} is not true or false")
    if base == "enum" and isinstance(avro_type, dict):
        if text not in avro_type.get("symbols", []):
            raise ValidationError(f"field {name}: {_shown(text)} is not one of"
                                  f" {', '.join(avro_type.get('symbols', []))}")
        return text
    try:  # records, arrays, maps: JSON
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"field {name}: {_shown(text)} is not JSON ({exc})") from None


def _int(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValidationError(f"field {name}: {_shown(text)} is not an integer") from None
    if not low <= value <= high:
        raise ValidationError(f"field {name}: {value} is out of range ({low} … {high})")
    return value


def _number(text: str, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValidationError(f"field {name}: {_shown(text)} is not a number") from None
    if not math.isfinite(value):
        raise ValidationError(f"field {name}: {_shown(text)} is not a finite number")
    return value


def _time(text: str, name: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"field {name}: {_shown(text)} is not an ISO-8601 time such"
                              " as 2026-01-31T12:00:00+00:00") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def parse_fields(schema: dict[str, Any], items: Iterable[str], *, owned: set[str]
                 ) -> dict[str, Any]:
    """``FIELD=VALUE`` items as Avro values. ``owned`` fields (the id, the version, what
    the tool stamps) cannot be set by hand: the tool assigns them."""
    fields = fields_of(schema)
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValidationError(f"--set {_shown(item)}: write FIELD=VALUE")
        if name not in fields:
            settable = ", ".join(n for n in fields if n not in owned)
            raise ValidationError(f"--set: {schema['name']} has no field {_shown(name)}"
                                  f" (fields you can set: {settable})")
        if name in owned:
            raise ValidationError(f"--set: field {name} is assigned by the tool, not by"
                                  " hand (ids are arguments; versions are read and"
                                  " incremented)")
        if name in out:
            raise ValidationError(f"--set: field {name} given twice")
        out[name] = parse_value(fields[name], text)
    return out


def missing_fields(schema: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """Fields without a value in ``record`` and without a default in the schema."""
    return [f["name"] for f in schema["fields"]
            if f["name"] not in record and "default" not in f]
