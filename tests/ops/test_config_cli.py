"""`sinkfleet config` and `sinkfleet policy` against the real stack: versions assigned by
the tool (read, +1, confirmed when a worker stored it), history never rewritten,
concurrent writers kept apart, clear failures, nothing published on a bad input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from sinkfleet.producer.publisher import Publisher
from sinkfleet.sink.postgres.connect import pg
from tests.ops.config_support import cli, cli_json, end_offsets, spawn, worker
from tests.support.catalogue import TestCatalogue

pytestmark = pytest.mark.integration


async def config_catalogue(factory: Any) -> TestCatalogue:
    tc: TestCatalogue = await factory(family="configuration", partitions=3, max_age_ms=50)
    return tc


async def conflicts(tc: TestCatalogue) -> list[Any]:
    async with pg(tc.settings) as conn:
        return list(await conn.fetch("SELECT version, kafka_offset FROM"
                                     " sinkfleet.state_conflicts WHERE sink = $1", tc.table))


async def test_set_get_history_rollback(catalogue_factory: Any, tmp_path: Path) -> None:
    tc = await config_catalogue(catalogue_factory)
    with worker(tc, tmp_path / "w.log"):
        first = cli(tc, "config", "set", "action_controller", "exploration_rate", "0.10",
                    "--by", "ops-1")
        assert first.returncode == 0, first.stderr
        assert "configuration action_controller/exploration_rate: version 1 stored" \
            in first.stdout
        row = cli_json(tc, "config", "get", "action_controller", "exploration_rate")
        assert (row["version"], row["config_value"], row["updated_by"]) == (1, 0.1, "ops-1")
        assert row["component_name"] == "action_controller"
        assert row["updated_at"].startswith(time.strftime("%Y-", time.gmtime()))

        second = cli_json(tc, "config", "set", "action_controller", "exploration_rate",
                          '{"start": 0.2, "decay": [1, 2]}', "--by", "ops-2")
        assert (second["version"], second["confirmed"], second["taken"]) == (2, True, [])
        history = cli_json(tc, "config", "history", "action_controller", "exploration_rate")
        assert [(h["version"], h["config_value"], h["updated_by"], h["op"],
                 h["parent_version"]) for h in history] == [
            (2, {"start": 0.2, "decay": [1, 2]}, "ops-2", "upsert", 1),
            (1, 0.1, "ops-1", "upsert", None)]

        back = cli(tc, "config", "rollback", "action_controller", "exploration_rate",
                   "--to", "1", "--by", "ops-3")
        assert back.returncode == 0, back.stderr
        assert "version 3 stored" in back.stdout and "value of version 1" in back.stdout
        history = cli_json(tc, "config", "history", "action_controller", "exploration_rate")
        assert [(h["version"], h["config_value"], h["updated_by"]) for h in history] == [
            (3, 0.1, "ops-3"), (2, {"start": 0.2, "decay": [1, 2]}, "ops-2"),
            (1, 0.1, "ops-1")]
        row = cli_json(tc, "config", "get", "action_controller", "exploration_rate")
        assert (row["version"], row["config_value"]) == (3, 0.1)

        missing = cli(tc, "config", "rollback", "action_controller", "exploration_rate",
                      "--to", "9")
        assert missing.returncode == 2
        assert "has no version 9 (versions: 1, 2, 3)" in missing.stderr
        assert "Traceback" not in missing.stderr
    unknown = cli(tc, "config", "get", "action_controller", "nope")
    assert unknown.returncode == 1
    assert "action_controller/nope: no current version" in unknown.stderr


async def test_concurrent_sets_get_distinct_versions(catalogue_factory: Any,
                                                     tmp_path: Path) -> None:
    tc = await config_catalogue(catalogue_factory)
    with worker(tc, tmp_path / "w.log"):
        procs = [spawn(tc, "config", "set", "engine", "depth", str(n), "--json")
                 for n in range(3)]
        outs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
        done = [json.loads(out) for out, _ in outs]
        assert sorted(d["version"] for d in done) == [1, 2, 3]
        assert all(d["confirmed"] for d in done)
        by_version = {d["version"]: n for n, d in enumerate(done)}
        history = cli_json(tc, "config", "history", "engine", "depth")
        assert [(h["version"], h["config_value"]) for h in history] == [
            (v, by_version[v]) for v in (3, 2, 1)]
    assert await conflicts(tc) == []


async def test_no_wait_versions_follow_unstored_writes(catalogue_factory: Any,
                                                       tmp_path: Path) -> None:
    """Without a worker, --no-wait writes still get 1, 2: the tool reads the versions
    waiting in Kafka; a worker started later stores both, without a conflict."""
    tc = await config_catalogue(catalogue_factory)
    one = cli(tc, "config", "set", "c", "k", '"a"', "--no-wait")
    assert one.returncode == 0, one.stderr
    assert "published as version 1" in one.stdout and "unconfirmed" in one.stdout
    two = cli_json(tc, "config", "set", "c", "k", "b", "--text", "--no-wait")
    assert (two["version"], two["confirmed"]) == (2, False)
    with worker(tc, tmp_path / "w.log"):
        three = cli_json(tc, "config", "set", "c", "k", '"c"')
        assert (three["version"], three["confirmed"]) == (3, True)
    history = cli_json(tc, "config", "history", "c", "k")
    assert [(h["version"], h["config_value"]) for h in history] == [(3, "c"), (2, "b"),
                                                                     (1, "a")]
    assert await conflicts(tc) == []


async def test_no_worker_fails_clearly_after_the_timeout(catalogue_factory: Any) -> None:
    tc = await config_catalogue(catalogue_factory)
    out = cli(tc, "config", "set", "c", "k", "1", "--timeout", "6")
    assert out.returncode == 2
    assert "waiting for a worker to store version 1 (partition" in out.stderr  # progress
    assert f"published {tc.table} 'c:k' as version 1 (partition" in out.stderr
    assert (f"not yet stored after 6s — is a worker running for sink {tc.table}"
            f" (group {tc.group})?") in out.stderr
    assert "Traceback" not in out.stderr
    assert sum((await end_offsets(tc)).values()) == 1  # published once, not again


async def _foreign_version_one(tc: TestCatalogue) -> None:
    """Another producer's version 1 of c/k, stamped a minute ahead: it wins the
    same-version conflict (the later producer timestamp wins)."""
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        topic, key, value = pub.encode("configuration", {
            "component_name": "c", "config_key": "k", "version": 1, "config_value": '"foreign"',
            "updated_by": "agent", "updated_at": int(time.time() * 1e6)})
    producer = AIOKafkaProducer(bootstrap_servers=tc.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key,
                                     timestamp_ms=int(time.time() * 1000) + 60_000)
    finally:
        await producer.stop()


async def _when_published(tc: TestCatalogue, count: int) -> None:
    deadline = time.monotonic() + 60
    while sum((await end_offsets(tc)).values()) < count:
        assert time.monotonic() < deadline, "the tool never published"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("retries", [1, 0])
async def test_a_version_taken_by_another_writer(catalogue_factory: Any, tmp_path: Path,
                                                 retries: int) -> None:
    """The tool publishes version 1 and waits; another producer publishes its own
    version 1 before a worker runs, and wins. The tool sees the stored version 1 is not
    its record, and publishes version 2 (or, with --retries 0, fails saying so)."""
    tc = await config_catalogue(catalogue_factory)
    proc = spawn(tc, "config", "set", "c", "k", '"mine"', "--retries", str(retries),
                 "--timeout", "90")
    await _when_published(tc, 1)
    await _foreign_version_one(tc)
    with worker(tc, tmp_path / "w.log"):
        out, errs = proc.communicate(timeout=150)
    history = cli_json(tc, "config", "history", "c", "k")
    lost = await conflicts(tc)
    assert [(c["version"], c["kafka_offset"]) for c in lost] == [(1, 0)]  # ours, 1st record
    if retries:
        assert proc.returncode == 0, errs
        assert "version 1 of" in errs and "was taken by another writer" in errs
        assert "version 2 stored" in out
        assert [(h["version"], h["config_value"]) for h in history] == [(2, "mine"),
                                                                         (1, "foreign")]
    else:
        assert proc.returncode == 2
        assert "other writers got version 1 first (1 tries)" in errs
        assert "sinkfleet.state_conflicts" in errs
        assert [(h["version"], h["config_value"]) for h in history] == [(1, "foreign")]


async def test_bad_inputs_are_one_line_and_publish_nothing(catalogue_factory: Any) -> None:
    tc = await config_catalogue(catalogue_factory)
    before = await end_offsets(tc)
    cases = [
        (["config", "set", "c", "k", "hello"],
         "VALUE: 'hello' is not JSON (Expecting value: line 1 column 1 (char 0)) (a string"
         " needs quotes: '\"text\"', or pass --text)"),
        (["config", "set", "c", "k", "NaN"], "JSON has no NaN or Infinity"),
        (["config", "set", "c", "k", "1", "--sink", "nope"],
         f"no state sink 'nope' stores configuration records (sinks that do: {tc.table})"),
        (["config", "rollback", "c", "k", "--to", "1"], "has no version 1 (versions: none)"),
        (["config", "set", "", "k", "1"], "component_name: an id part must be non-empty"),
    ]
    for args, message in cases:
        out = cli(tc, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert out.stderr.count("\n") == 1, out.stderr  # one line
        assert "Traceback" not in out.stderr
    assert await end_offsets(tc) == before


async def test_policy_activate_show_history(catalogue_factory: Any, tmp_path: Path) -> None:
    tc: TestCatalogue = await catalogue_factory(family="policy", partitions=2, max_age_ms=50)
    before = await end_offsets(tc)
    bad = [
        (["--set", "avg_reward=abc"], "field avg_reward: 'abc' is not a number"),
        (["--set", "total_executions=1.5"], "field total_executions: '1.5' is not an integer"),
        (["--set", "nope=1"], "--set: Policy has no field 'nope' (fields you can set:"
         " rule_id, action_weights, metadata, total_executions, avg_reward)"),
        (["--set", "version=7"], "--set: field version is assigned by the tool"),
        (["--set", "parent_version=7"], "--set: field parent_version is assigned by the tool"),
        (["--set", "action_weights={1: 2}"], "field action_weights: '{1: 2}' is not JSON"),
        (["--set", "rule_id=r1"], "policy bin-1 has no active version to start from: give"
         " --set action_weights=…"),
        ([], "nothing to activate: give --set FIELD=VALUE"),
    ]
    for args, message in bad:
        out = cli(tc, "policy", "activate", "bin-1", *args, "--timeout", "5")
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    assert await end_offsets(tc) == before

    with worker(tc, tmp_path / "w.log"):
        one = cli_json(tc, "policy", "activate", "bin-1", "--set", "rule_id=r=1",
                       "--set", 'action_weights={"0": 0.25, "1": 0.75}')
        assert (one["version"], one["confirmed"]) == (1, True)
        two = cli_json(tc, "policy", "activate", "bin-1", "--set", "avg_reward=0.5",
                       "--set", "total_executions=12")
        assert two["version"] == 2
        three = cli_json(tc, "policy", "activate", "bin-1", "--from-version", "1")
        assert three["version"] == 3
        active = cli_json(tc, "policy", "show", "bin-1")
        history = cli_json(tc, "policy", "history", "bin-1")
    assert (active["version"], active["rule_id"], active["avg_reward"]) == (3, "r=1", 0.0)
    assert active["action_weights"] == {"0": 0.25, "1": 0.75}
    assert [(h["version"], h["parent_policy_version"], h["rule_id"], h["avg_reward"],
             h["total_executions"], h["parent_version"]) for h in history] == [
        (3, 1, "r=1", 0.0, 0, 2), (2, 1, "r=1", 0.5, 12, 1), (1, None, "r=1", 0.0, 0, None)]
