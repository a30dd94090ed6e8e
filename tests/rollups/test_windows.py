"""The roll-ups' pure logic: windows, exact aggregates, re-read records, contributions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from sinkfleet.config import load_settings
from sinkfleet.rollups.app import broker_settings
from sinkfleet.rollups.families import FAMILIES, RECORDS, Unusable, learning_metric, worker_event
from sinkfleet.rollups.store import row_args, upsert_sql
from sinkfleet.rollups.windows import (
    HOUR_US,
    MINUTE_US,
    Entry,
    absorb,
    closing_horizon,
    entry_end,
    plan_record,
    to_micros,
    window_start,
)

T0 = to_micros(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))


def test_windows_are_utc_aligned_and_exact_to_the_microsecond() -> None:
    assert window_start(T0 + MINUTE_US - 1, MINUTE_US) == T0
    assert window_start(T0 + MINUTE_US, MINUTE_US) == T0 + MINUTE_US
    assert window_start(T0 + HOUR_US - 1, HOUR_US) == T0
    assert to_micros(datetime(2026, 11, 25, 10, 0, 0, 1, tzinfo=UTC)) == T0 + 1
    assert entry_end((0, "hour", T0, "x")) == T0 + HOUR_US


def test_closing_horizon_lags_event_time_by_the_grace_period_in_whole_minutes() -> None:
    assert closing_horizon(T0 + 150 * 1_000_000, 120 * 1_000_000) == T0
    assert closing_horizon(T0 + 185 * 1_000_000, 120 * 1_000_000) == T0 + MINUTE_US


def test_sums_are_exact_decimals() -> None:
    entry = None
    for i, value in enumerate(("0.1", "0.2", "-0.3", "1e-05")):
        entry = absorb(entry, Decimal(value), i)
    assert entry is not None
    assert Decimal(entry["s"] or "") == Decimal("0.00001")  # floats would say 5.55e-17
    assert (entry["n"], entry["lo"], entry["hi"], entry["o"]) == (4, "-0.3", "0.2", 3)
    counted = absorb(absorb(None, None, 7), None, 8)
    assert counted == Entry(n=2, s=None, lo=None, hi=None, o=8)


def _apply(table: dict[Any, Entry], partition: int, offset: int, ts: int, horizon: int = -1
           ) -> Any:
    contributions: list[tuple[tuple[str | None, ...], Decimal | None]] = [
        (("reward_trend", RECORDS), None), (("reward_trend", "mean"), Decimal("0.5"))]
    updates, verdict = plan_record(table.get, partition, offset, ts, contributions, horizon)
    table.update(updates)
    return verdict


def test_a_record_read_again_is_not_counted_twice() -> None:
    table: dict[Any, Entry] = {}
    for offset in range(5):
        assert _apply(table, 0, offset, T0 + offset).changed
    snapshot = dict(table)
    for offset in range(5):  # a restart re-reads offsets 0..4
        verdict = _apply(table, 0, offset, T0 + offset)
        assert verdict.duplicate and not verdict.changed
    assert table == snapshot
    assert table[(0, "minute", T0, "reward_trend", RECORDS)]["n"] == 5
    assert table[(0, "hour", T0, "reward_trend", "mean")]["s"] == "2.5"
    _apply(table, 1, 0, T0)  # another partition's offset 0 is another record
    assert table[(1, "minute", T0, "reward_trend", RECORDS)]["n"] == 1


def test_records_of_closed_windows_are_skipped_per_window_size() -> None:
    table: dict[Any, Entry] = {}
    late = _apply(table, 0, 9, T0 + 5, horizon=T0 + MINUTE_US)
    assert not late.closed  # the minute closed, its hour is still open
    assert set(k[1] for k in table) == {"hour"}
    gone = _apply(table, 0, 10, T0 + 5, horizon=T0 + HOUR_US)
    assert gone.closed and not gone.changed


def test_learning_metric_contributions() -> None:
    record = {"metric_type": "policy_performance",
              "metric_data": '{"executions": 12, "avg_reward": 0.30512, "ok": true,'
                             ' "name": "x", "nested": {"a": 1}, "tiny": 1e-05}'}
    assert learning_metric(record) == [
        (("policy_performance", RECORDS), None),
        (("policy_performance", "avg_reward"), Decimal("0.30512")),
        (("policy_performance", "executions"), Decimal(12)),
        (("policy_performance", "tiny"), Decimal("0.00001")),
    ]
    with pytest.raises(Unusable):
        learning_metric({"metric_type": "x", "metric_data": "[1, 2]"})
    with pytest.raises(Unusable):
        learning_metric({"metric_type": "x", "metric_data": "{"})


def test_worker_event_contributions() -> None:
    assert worker_event({"worker_id": "w", "job_id": None, "event_type": "spawned"}) == [
        (("w", "", "spawned"), None)]


def test_upsert_sets_the_state_and_only_moves_forward() -> None:
    sql = upsert_sql(FAMILIES["learning_metric"])
    assert "count = EXCLUDED.count" in sql and "count +" not in sql
    assert "WHERE t.last_offset < EXCLUDED.last_offset" in sql
    args = row_args("t", FAMILIES["learning_metric"], (2, "minute", T0, "m", "f"),
                    Entry(n=3, s="1.5", lo="0.1", hi="1", o=41), True)
    assert args == ("t", "minute", datetime(2026, 11, 25, 10, 0, tzinfo=UTC), "m", "f", 2, 3,
                    Decimal("1.5"), Decimal("0.1"), Decimal("1"), 41, True)
    counts = upsert_sql(FAMILIES["worker_event"])
    assert "sum" not in counts and "kafka_partition" in counts


def test_broker_settings_map_sinkfleet_security(tmp_path: Any) -> None:
    plain = broker_settings(load_settings(kafka_bootstrap="a:1, b:2", state_dir=tmp_path))
    assert plain == {"broker": ["kafka://a:1", "kafka://b:2"], "broker_credentials": None}
    sasl = broker_settings(load_settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc", kafka_sasl_password="s3cret", state_dir=tmp_path))
    creds = sasl["broker_credentials"]
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert creds.username == "svc" and creds.ssl_context is not None
    assert "s3cret" not in repr(creds)
