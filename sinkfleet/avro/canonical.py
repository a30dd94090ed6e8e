"""Canonical JSON (RFC 8785 JCS, with exact numbers): the bytes audit content hashes cover.

RFC 8785 writes every number as the IEEE double it parses to, in ECMAScript's
Number-to-String layout. A double cannot hold ``123456789012345678901234567890`` or
``12345678901234567890.123456789``, but PostgreSQL's jsonb keeps them exactly, so two
different stored values would share one hash. Here a number is written by its exact
decimal value in that same layout (shortest digits; plain up to 21 integer digits,
``0.000001`` down to 1e-6, exponent form beyond). For every number that is some double's
shortest form — whatever a JavaScript or Python producer prints, and every Avro
float/double — this is exactly RFC 8785; jsonb's rewrites (``1e2`` → ``100``,
``-0.0`` → ``0.0``, ``1.50`` → ``1.5``) keep the value, hence the bytes.

    >>> canonical_json({"b": 1e20, "a": [Decimal("1e2"), -0.0, 1e21]})
    b'{"a":[100,0,1e+21],"b":100000000000000000000}'
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

__all__ = ["CanonicalError", "canonical_json", "number_text", "parse_json"]

_PLAIN_INT = 10**21  # below this ECMAScript writes an integer with all its digits
_escape = json.encoder.encode_basestring  # exactly RFC 8785 string escaping


class CanonicalError(ValueError):
    """The value cannot be put in canonical form (NaN, wrong type, ambiguous union)."""


def number_text(value: int | float | Decimal) -> str:
    """``value`` in ECMAScript Number-to-String layout, by its exact decimal value."""
    if isinstance(value, int):
        if -_PLAIN_INT < value < _PLAIN_INT:
            return str(value)
        value = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError("NaN and infinities have no canonical form")
        value = Decimal(repr(value))  # repr: the shortest digits that round-trip
    if not value.is_finite():
        raise CanonicalError("NaN and infinities have no canonical form")
    sign, digit_tuple, exp = value.as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    if not digits:
        return "0"  # also -0: ECMAScript writes it as 0
    exp += len(digit_tuple) - len(digits)
    k, n = len(digits), len(digits) + exp  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = f"0.{'0' * -n}{digits}"
    else:
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if n > 0 else '-'}{abs(n - 1)}"
    return "-" + text if sign else text


def _refuse_constant(name: str) -> Any:
    raise CanonicalError(f"JSON constant {name} has no canonical form")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CanonicalError(f"duplicate object key {key!r} (jsonb would keep only the"
                                 " last one)")
        out[key] = value
    return out


def parse_json(text: str | bytes) -> Any:
    """Parse JSON text with every number as an exact Decimal; refuse NaN, Infinity and
    duplicate keys (which jsonb would silently drop)."""
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal,
                          parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except CanonicalError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CanonicalError(f"not valid JSON: {exc}") from None


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_escape(value))
    elif isinstance(value, (int, float, Decimal)):
        out.append(number_text(value))
    elif isinstance(value, dict):
        out.append("{")
        # RFC 8785: keys ordered by their UTF-16 code units (big-endian bytes compare so)
        for i, key in enumerate(sorted(value, key=_utf16)):
            if i:
                out.append(",")
            out.append(_escape(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalError(f"{type(value).__name__} has no canonical JSON form")


def _utf16(key: Any) -> bytes:
    if not isinstance(key, str):
        raise CanonicalError(f"object keys must be strings, got {type(key).__name__}")
    return key.encode("utf-16-be", "surrogatepass")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of a plain JSON value (dict, list, str, int, float,
    Decimal, bool, None)."""
    out: list[str] = []
    try:
        _write(value, out)
        return "".join(out).encode()
    except UnicodeEncodeError:
        raise CanonicalError("a string holds a lone UTF-16 surrogate, which is not"
                             " Unicode text") from None
    except RecursionError:
        raise CanonicalError("value nested too deeply") from None
