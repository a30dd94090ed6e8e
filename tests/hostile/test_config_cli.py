"""Hostile inputs to `sinkfleet config` / `sinkfleet policy` and their Python API: ids
and values that look like key separators, markup or terminal escapes are stored exactly
and shown inert; values the worker or PostgreSQL would refuse are refused before
anything is published; the CLI answers in one line, never a traceback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sinkfleet.errors import ValidationError
from sinkfleet.ops.config.fields import parse_fields, visible
from sinkfleet.ops.config.writes import CONFIGURATION, current, history, set_config
from tests.ops.config_support import cli, cli_json, end_offsets, worker
from tests.support.catalogue import TestCatalogue

pytestmark = pytest.mark.integration

ODD_IDS = [("a:b", "c%3Ad"), ("[bold]x[/bold]", "\x1b[31mred"), ("עברית\u202e", "🙂 k")]


async def test_odd_ids_round_trip_and_print_inert(catalogue_factory: Any,
                                                  tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(family="configuration", partitions=3,
                                                max_age_ms=50)
    with worker(tc, tmp_path / "w.log"):
        for n, (component, key) in enumerate(ODD_IDS):
            out = cli(tc, "config", "set", component, key, str(n))
            assert out.returncode == 0, out.stderr
            assert "\x1b" not in out.stdout and "\u202e" not in out.stdout
            row = cli_json(tc, "config", "get", component, key)
            assert (row["component_name"], row["config_key"], row["version"],
                    row["config_value"]) == (component, key, 1, n)
            shown = cli(tc, "config", "history", component, key)
            assert shown.returncode == 0, shown.stderr
            assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
            assert visible(key) in shown.stdout
        negative = cli(tc, "config", "set", "c", "neg", "--", "-0.5")  # after --: a value
        assert negative.returncode == 0, negative.stderr
        assert cli_json(tc, "config", "get", "c", "neg")["config_value"] == -0.5
        # ids that differ only where the key encoding works are different ids
        assert cli_json(tc, "config", "get", "a:b", "c%3Ad")["config_value"] == 0
        assert cli(tc, "config", "get", "a", "b:c%3Ad").returncode == 1
    # a stored value that holds terminal escapes is shown, not obeyed
    with worker(tc, tmp_path / "w2.log"):
        evil = json.dumps({"x": "\x1b]0;pwned\x07\x9b31m"})
        assert cli(tc, "config", "set", "c", "k", evil).returncode == 0
        shown = cli(tc, "config", "get", "c", "k")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x9b" not in shown.stdout
    assert "\\u001b]0;pwned" in shown.stdout


@pytest.mark.parametrize("args, message", [
    (["config", "set", "c", "k", '"a\\u0000b"'], "JSON with \\u0000, which PostgreSQL's jsonb"),
    (["config", "set", "c", "k", "[" * 100_000], "is not JSON (maximum recursion depth"),
    (["config", "set", "c", "k", "Infinity"], "JSON has no NaN or Infinity"),
    (["config", "set", "c", "k", '{"a": 1} x'], "is not JSON (Extra data"),
    (["config", "set", "c", "k", "1", "--sink", "x; DROP TABLE y"],
     "no state sink 'x; DROP TABLE y' stores configuration records"),
    (["config", "rollback", "[red]c", "k", "--to", "1"],
     "configuration entry [red]c/k has no version 1"),
    (["policy", "activate", "b", "--set", "total_executions=99999999999999999999"],
     "field total_executions: 99999999999999999999 is out of range"),
    (["policy", "activate", "b", "--set", "avg_reward=nan"], "'nan' is not a finite number"),
    (["policy", "activate", "b", "--set", "rule_id"], "--set 'rule_id': write FIELD=VALUE"),
    (["policy", "activate", "b", "--set", "=x"], "--set '=x': write FIELD=VALUE"),
    (["policy", "activate", "b", "--set", "rule_id=a", "--set", "rule_id=b"],
     "field rule_id given twice"),
    (["policy", "activate", "b", "--set", "metadata=[1, {"], "field metadata: '[1, {' is not"),
])
async def test_refused_inputs_publish_nothing(catalogue_factory: Any, args: list[str],
                                              message: str) -> None:
    family = "policy" if args[0] == "policy" else "configuration"
    tc: TestCatalogue = await catalogue_factory(family=family, partitions=2)
    before = await end_offsets(tc)
    out = cli(tc, *args, "--timeout", "3")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert await end_offsets(tc) == before


async def test_python_api_refuses_what_argv_cannot_carry(catalogue_factory: Any) -> None:
    """NUL in an id, a value over the topic's max.message.bytes: refused, none published."""
    tc: TestCatalogue = await catalogue_factory(family="configuration", partitions=2)
    before = await end_offsets(tc)
    with pytest.raises(ValidationError, match="component_name: an id part must be"
                                              " non-empty text without NUL"):
        await set_config(tc.settings, tc.catalogue, "a\x00b", "k", "1", by=None, wait=False)
    big = json.dumps("x" * 1_100_000)
    with pytest.raises(ValidationError, match=r"the record is 1,100,\d+ bytes; topic"
                                              r" test\.configuration-\w+ takes at most"
                                              r" 1,048,576 \(max\.message\.bytes\)"):
        await set_config(tc.settings, tc.catalogue, "c", "k", big, by=None, wait=False)
    with pytest.raises(ValidationError, match="column updated_by: text contains a NUL"):
        await set_config(tc.settings, tc.catalogue, "c", "k", "1", by="a\x00", wait=False)
    assert await end_offsets(tc) == before
    assert await current(tc.settings, tc.catalogue, CONFIGURATION, ["c", "k"]) is None


async def test_python_writers_racing_in_one_process(catalogue_factory: Any,
                                                    tmp_path: Path) -> None:
    """Six writers of one key at once: six distinct versions, each its own value."""
    tc: TestCatalogue = await catalogue_factory(family="configuration", partitions=2,
                                                max_age_ms=50)
    with worker(tc, tmp_path / "w.log"):
        done = await asyncio.gather(*(set_config(tc.settings, tc.catalogue, "c", "k", str(n),
                                                 by=f"w{n}") for n in range(6)))
    assert sorted(d.version for d in done) == [1, 2, 3, 4, 5, 6]
    assert all(d.confirmed and d.taken == () for d in done)
    rows = await history(tc.settings, tc.catalogue, CONFIGURATION, ["c", "k"])
    assert {(r["version"], r["config_value"], r["updated_by"]) for r in rows} == {
        (d.version, n, f"w{n}") for n, d in enumerate(done)}


def test_parse_fields_units() -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "s", "type": ["null", "string"], "default": None},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "b", "type": "boolean"}, {"name": "i", "type": "int"}]}
    got = parse_fields(schema, ["s=null", "t=2026-01-31T12:00:00Z", "b=yes", "i=-7"],
                       owned=set())
    assert (got["s"], got["t"].isoformat(), got["b"], got["i"]) == (
        None, "2026-01-31T12:00:00+00:00", True, -7)
    assert parse_fields(schema, ["s=a=b"], owned=set()) == {"s": "a=b"}
    with pytest.raises(ValidationError, match="field i: 2147483648 is out of range"):
        parse_fields(schema, ["i=2147483648"], owned=set())
    with pytest.raises(ValidationError, match="field b: 'maybe' is not true or false"):
        parse_fields(schema, ["b=maybe"], owned=set())
    with pytest.raises(ValidationError, match="field t: 'soon' is not an ISO-8601 time"):
        parse_fields(schema, ["t=soon"], owned=set())
    assert visible("a\x1b[0m\u202eb") == "a\\x1b[0m\\u202eb"
