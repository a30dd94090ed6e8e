"""Canonical JSON (pure): RFC 8785's vectors, and exact numbers where a double is not."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest

from sinkfleet.avro.canonical import CanonicalError, canonical_json, number_text, parse_json

# RFC 8785 appendix B: IEEE-754 bits → ECMAScript text
RFC_NUMBERS = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), RFC_NUMBERS)
def test_doubles_are_written_as_ecmascript_does(bits: str, text: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert number_text(value) == text
    assert number_text(Decimal(repr(value))) == text  # the same number as JSON text


def test_json_text_numbers_by_exact_value() -> None:
    cases = {"1e2": "100", "-0.0": "0", "-0": "0", "1e20": "100000000000000000000",
             "1e21": "1e+21", "1.0": "1", "1.50e1": "15", "100e-2": "1", "1E-7": "1e-7",
             "0.0000123": "0.0000123", "123456789012345678901234567890":
             "1.2345678901234567890123456789e+29", "12345678901234567890.123456789":
             "12345678901234567890.123456789", "9007199254740993": "9007199254740993",
             "0.1000000000000000055511151231257827": "0.1000000000000000055511151231257827",
             "-1e-400": "-1e-400", "1e999999999": "1e+999999999"}
    assert {t: canonical_json(parse_json(t)).decode() for t in cases} == cases
    # what jsonb gives back for each (PostgreSQL numeric's text) hashes the same
    jsonb = {"1e2": "100", "-0.0": "0.0", "1.50e1": "15.0", "100e-2": "1.00",
             "1E-7": "0.0000001", "1e20": "100000000000000000000",
             "1e21": "1000000000000000000000"}
    assert {t: canonical_json(parse_json(j)) for t, j in jsonb.items()} == {
        t: canonical_json(parse_json(t)) for t in jsonb}


def test_numbers_no_double_holds_stay_distinct() -> None:
    for a, b in [("123456789012345678901234567890", "123456789012345678901234567891"),
                 ("12345678901234567890.123456789", "12345678901234567890.123456788"),
                 ("9007199254740993", "9007199254740992"), ("0.1", "0.10000000000000001")]:
        assert canonical_json(parse_json(a)) != canonical_json(parse_json(b))


def test_rfc_8785_example_and_key_order() -> None:
    value = {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
             "literals": [None, True, False]}
    assert canonical_json(value) == (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    text = canonical_json(dict.fromkeys(keys, 0)).decode()
    # by UTF-16 code units: U+1F600 (D83D DE00) sorts before U+FB33
    assert text == (
        '{"\\r":0,"1":0,"\u0080":0,"\u00f6":0,"\u20ac":0,"\U0001f600":0,"\ufb33":0}')


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', '{"a":1,"a":2}',
                                  '"\\ud800"', "[1,", "1e"])
def test_refused(text: str) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(parse_json(text))


def test_non_finite_and_foreign_values_are_refused() -> None:
    for value in (float("nan"), float("inf"), Decimal("NaN"), {1: 2}, {"a": object()}):
        with pytest.raises(CanonicalError):
            canonical_json(value)
