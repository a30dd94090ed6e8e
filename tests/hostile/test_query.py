"""Hostile queries: unknown and injected column names, injection in values, tampered and
foreign cursors, limits past the cap, operators on the wrong types. The plan is pure
(the project's catalogue, no server); the values that reach PostgreSQL are tested there,
and the CLI answers with one `error:` line."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from sinkfleet import Reader
from sinkfleet.catalogue import load_catalogue
from sinkfleet.config import load_settings
from sinkfleet.read.query import MAX_LIMIT, Filter, Query, QueryError, SinkQuery, parse_filter
from tests.read.query_support import Seeded, json_rows, seeded
from tests.support.catalogue import ROOT, catalogue_env

__all__ = ["seeded"]
CAT = load_catalogue(ROOT)


def plan(sink: str, tenant: str | None = None, **kw: object) -> tuple[str, list[object]]:
    sql, args, _ = SinkQuery(CAT.sinks[sink], tenant).plan(Query(sink, **kw))  # type: ignore[arg-type]
    return sql, args


def next_cursor(sink: str, values: list[object], tenant: str | None = None,
                **kw: object) -> str:
    _, _, keyset = SinkQuery(CAT.sinks[sink], tenant).plan(Query(sink, **kw))  # type: ignore[arg-type]
    return keyset.encode(values)


HOSTILE_NAMES = ['status; DROP TABLE policies', '"status"', "status\n", "Status",
                 "status--", "avg_reward) OR (1=1", "pg_catalog.pg_authid", "", "*",
                 "tenant_id/**/", "ctid", "xmin", "state_bin_id,rule_id"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_column_names_are_refused_everywhere(name: str) -> None:
    for kw in ({"filters": [Filter(name, "=", "x")]}, {"order_by": name},
               {"columns": [name]}):
        with pytest.raises(QueryError, match="has no column") as err:
            plan("policies", **kw)
        assert "columns: state_bin_id, version" in str(err.value)


def test_parse_filter_keeps_hostile_text_in_the_value() -> None:
    f = parse_filter("status=failed' OR '1'='1")
    assert f == Filter("status", "=", "failed' OR '1'='1")
    sql, args = plan("jobs", filters=[f])
    assert "OR '1'" not in sql and args[0] == "failed' OR '1'='1"
    for text in ("status; drop table jobs", "1=1", "=x", "status", "(status)=x",
                 "status ~ x", "Status=x"):
        with pytest.raises(QueryError):
            parse_filter(text)


def test_unindexed_orderings_are_refused_naming_the_column_and_the_indexed_ones() -> None:
    with pytest.raises(QueryError) as err:
        plan("policies", order_by="total_executions")
    assert str(err.value).startswith("cannot order 'policies' by 'total_executions'")
    assert "state_bin_id, avg_reward, rule_id" in str(err.value)
    # an index's second column needs its first pinned by =
    with pytest.raises(QueryError, match="by 'spawned_at'"):
        plan("jobs", order_by="spawned_at")
    plan("jobs", order_by="spawned_at", filters=[Filter("status", "=", "running")])
    with pytest.raises(QueryError, match="by 'spawned_at'"):
        plan("jobs", order_by="spawned_at", filters=[Filter("status", ">", "a")])
    # a tenant reader has the tenant pinned
    plan("workflow_states", tenant="t1", order_by="updated_at")
    with pytest.raises(QueryError, match="by 'updated_at'"):
        plan("workflow_states", order_by="updated_at")


@pytest.mark.parametrize("limit", [MAX_LIMIT + 1, 10**9, 0, -1, True, "10", 1.5, None])
def test_limits_outside_one_to_the_cap_are_refused(limit: object) -> None:
    with pytest.raises(QueryError, match="limit"):
        plan("policies", limit=limit)


def test_operators_must_fit_the_column() -> None:
    cases = [
        (Filter("rule_id", "LIKE", "x"), "unknown operator"),
        (Filter("rule_id", "= ANY", "x"), "unknown operator"),
        (Filter("rule_id", "contains", ["x"]), "not an array"),
        (Filter("action_weights", "=", "{}"), "is jsonb"),
        (Filter("avg_reward", ">", "abc"), "not a valid double precision"),
        (Filter("avg_reward", "in", []), "non-empty list"),
        (Filter("avg_reward", "between", [1]), "two values"),
        (Filter("avg_reward", "<", None), "null compares"),
        (Filter("rule_id+avg_reward", ">", 1), "numeric columns"),
        (Filter("avg_reward+total_executions", "contains", [1]), "a sum compares"),
        (Filter("version", "in", ["1", None]), "null is not a value"),
    ]
    for f, message in cases:
        with pytest.raises(QueryError, match=message):
            plan("policies", filters=[f])
    with pytest.raises(QueryError, match="use contains or overlaps"):
        plan("memory_entries", filters=[Filter("tags", "=", "x")])
    with pytest.raises(QueryError, match="Filter"):
        plan("policies", filters=["status=x"])


def test_values_are_bound_with_the_columns_types() -> None:
    sql, args = plan("memory_entries", filters=[
        parse_filter("tags contains a'b,c\"d"), parse_filter("ts between 2026-01-01,2026-02-01"),
        parse_filter("entry_type in note,x'); DROP TABLE x; --")])
    assert "DROP" not in sql and "a'b" not in sql
    assert args[0] == ["a'b", 'c"d']
    assert [a.isoformat() for a in args[1:3]] == ["2026-01-01T00:00:00+00:00",  # type: ignore[attr-defined]
                                                  "2026-02-01T00:00:00+00:00"]
    assert args[3] == ["note", "x'); DROP TABLE x; --"]


def tamper(cursor: str) -> list[str]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    mac, body = raw[:8], raw[8:]
    shape, _ = json.loads(body)
    forged = json.dumps([shape, ["9.9", "zzz"]], separators=(",", ":")).encode()
    return [
        cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1],  # one char
        cursor[:-4],  # truncated
        base64.urlsafe_b64encode(mac + forged).decode(),  # new values, old mac
        base64.urlsafe_b64encode(bytes(8) + body).decode(),  # mac zeroed
        "not a cursor", "", "%%%%", "A" * 5000, base64.urlsafe_b64encode(b"x" * 8).decode(),
    ]


def test_tampered_cursors_are_refused() -> None:
    good = next_cursor("policies", [0.75, "bin-c"], order_by="avg_reward")
    plan("policies", order_by="avg_reward", cursor=good)
    for bad in tamper(good):
        with pytest.raises(QueryError, match="damaged or was altered"):
            plan("policies", order_by="avg_reward", cursor=bad)
    for bad in (12, b"abc", ["x"]):
        with pytest.raises(QueryError, match="damaged"):
            plan("policies", order_by="avg_reward", cursor=bad)


def test_cursors_of_another_query_shape_are_refused() -> None:
    good = next_cursor("policies", [0.75, "bin-c"], order_by="avg_reward")
    others = [
        {"order_by": "avg_reward", "newest_first": True},
        {"order_by": "rule_id"},
        {"order_by": "avg_reward", "filters": [Filter("rule_id", "=", "r")]},
    ]
    for kw in others:
        with pytest.raises(QueryError, match="belongs to another query"):
            plan("policies", cursor=good, **kw)
    wf = next_cursor("workflow_states", ["t1", "wf-1"], tenant="t1")
    with pytest.raises(QueryError, match="belongs to another query"):
        plan("workflow_states", tenant="t2", cursor=wf)
    with pytest.raises(QueryError, match="belongs to another query"):
        plan("task_states", tenant="t1", cursor=wf)


@pytest.mark.integration
async def test_injection_in_values_reaches_postgresql_as_data(seeded: Seeded) -> None:
    wf, pol = seeded.names["workflow_states"], seeded.names["policies"]
    async with Reader(seeded.reader, seeded.catalogue, tenant="tenant-1") as r:
        for text in ["status=failed' OR '1'='1", "status=x'; DROP TABLE policies; --",
                     "workflow_id in wf-1') OR true --,wf-0",
                     "status=\x00", "workflow_id=" + "é" * 5000]:
            try:
                page = await r.query(wf, [text])
            except QueryError:
                continue  # e.g. a NUL byte, refused by the type
            assert page.rows == [], text
        assert len((await r.query(pol)).rows) == 7  # still there


@pytest.mark.integration
def test_cli_errors_are_one_friendly_line(seeded: Seeded) -> None:
    pol = seeded.names["policies"]
    cases = [
        (["--order-by", "total_executions"], "cannot order"),
        (["--where", "nope=1"], "has no column 'nope'"),
        (["--where", "status ~ x"], "is not COLUMN OP VALUE"),
        (["--limit", str(MAX_LIMIT + 1)], "above the cap"),
        (["--cursor", "garbage"], "damaged or was altered"),
        (["--order-by", "avg_reward; DROP TABLE x"], "has no column"),
    ]
    for args, message in cases:
        proc = seeded.cli("rows", "--sink", pol, *args, as_reader=True)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: "), proc.stderr
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    cursor = json_rows(seeded.cli("rows", "--sink", pol, "--limit", "1", "--json",
                                  as_reader=True))["next_cursor"]
    proc = seeded.cli("rows", "--sink", pol, "--desc", "--cursor", cursor, as_reader=True)
    assert proc.returncode == 2 and "belongs to another query" in proc.stderr


def test_cli_help_lists_the_options() -> None:
    env = catalogue_env(ROOT, load_settings(home=ROOT))
    proc = subprocess.run([sys.executable, "-m", "sinkfleet", "query", "rows", "--help"],
                          capture_output=True, text=True, env={**env, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for option in ("--where", "--order-by", "--desc", "--limit", "--cursor", "--tenant"):
        assert option in proc.stdout

