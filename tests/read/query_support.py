"""One catalogue of the seeds' families under fresh names, filled by publishing records to
Kafka and running a real worker into PostgreSQL, for the query-model tests; and a reader
login (a member of ``sinkfleet_reader``) to read it as a tenant."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings, load_settings
from sinkfleet.kafka.positions import KafkaPositions
from sinkfleet.ops.setup.topics import apply_topics
from sinkfleet.producer import Publisher
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.migrate import migrate
from sinkfleet.worker.loop import Worker
from tests.support.catalogue import ROOT, catalogue_env, forget
from tests.support.postgres import reader_login
from tests.support.waiting import async_wait_for

# sink → its schema family (the seeds' families that the catalogue has)
FAMILIES = {
    "experience_events": "experience_event", "policies": "policy",
    "workflow_states": "workflow_state", "task_states": "task_state",
    "memory_entries": "memory_entry", "audit_entries": "audit_entry",
    "jobs": "job", "agent_workers": "fleet_worker",
    "judgement_snapshots": "judgement_snapshot",  # a summary tier: its windows
}
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)
TIE_TS = NOW + dt.timedelta(seconds=30)  # many events share this time (page boundaries)


def t(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def event(i: int, rewards: tuple[float, float, float, float], ts: dt.datetime,
          agent: str = "agent-1") -> dict[str, Any]:
    h, c, e, g = rewards
    return {
        "event_id": uuid.UUID(int=i).bytes, "timestamp": ts, "agent_id": agent,
        "episode_id": 1, "step_number": i, "sequence_number": i, "event_type": 1,
        "flags": 0, "state": [0.0] * 8, "action": [0.0] * 8,
        "reward": {"homeostasis": h, "curiosity": c, "efficiency": e, "goal": g},
        "policy_version_hash": 7, "action_metadata": None,
    }


# total rewards: 0.75, 0.5 (not above), 0.25, 1.0, 0.625, -0.25 (exact in binary floats)
REWARDS = [(0.5, 0.25, 0.0, 0.0), (0.25, 0.25, 0.0, 0.0), (0.25, 0.0, 0.0, 0.0),
           (0.5, 0.25, 0.125, 0.125), (0.125, 0.125, 0.125, 0.25), (0.0, 0.0, -0.25, 0.0)]
EVENTS = [event(i, r, t(i)) for i, r in enumerate(REWARDS)]
EVENTS += [event(100 + i, (0.0, 0.0, 0.0, 0.0), TIE_TS, "agent-tie") for i in range(7)]


def policy(bin_id: str, avg: float) -> dict[str, Any]:
    return {"state_bin_id": bin_id, "version": 1, "parent_version": None,
            "rule_id": f"rule-{bin_id}", "action_weights": json.dumps({"0": 1.0}),
            "metadata": None, "total_executions": 10, "avg_reward": avg, "updated_at": NOW}


POLICIES = [policy("bin-a", 0.75), policy("bin-b", 0.25), policy("bin-c", 0.75),
            policy("bin-d", 0.5), policy("bin-e", 0.9), policy("bin-f", 0.75),
            policy("bin-g", 0.75)]


def workflow(tenant: str, wf: str, status: str, minute: int) -> dict[str, Any]:
    return {"tenant_id": tenant, "workflow_id": wf, "version": 1,
            "workflow_name": "triage", "status": status, "current_step": "s1",
            "error": "boom" if status == "failed" else None, "metadata": None,
            "started_at": t(minute * 60 - 5), "updated_at": t(minute * 60),
            "completed_at": None}


WORKFLOWS = [workflow("tenant-1", "wf-1", "failed", 1),
             workflow("tenant-1", "wf-2", "running", 2),
             workflow("tenant-1", "wf-3", "failed", 3),
             workflow("tenant-1", "wf-4", "completed", 4),
             workflow("tenant-2", "wf-1", "failed", 5),
             workflow("tenant-2", "wf-9", "failed", 6)]


def task(tenant: str, wf: str, task_id: str, status: str) -> dict[str, Any]:
    return {"tenant_id": tenant, "workflow_id": wf, "task_id": task_id, "version": 1,
            "status": status, "retry_count": 0, "error": None, "result": None,
            "started_at": None, "updated_at": NOW, "completed_at": None}


TASKS = [task("tenant-1", "wf-1", "task-1", "failed"), task("tenant-2", "wf-1", "task-1",
                                                            "failed")]


def memory(tenant: str, n: int, tags: list[str]) -> dict[str, Any]:
    return {"entry_id": str(uuid.UUID(int=n)), "tenant_id": tenant, "ts": t(n),
            "entry_type": "episodic_note", "content": json.dumps({"n": n}),
            "task_id": "task-1", "step_id": None, "source_event_id": None, "tags": tags}


MEMORIES = [memory("tenant-1", 1, ["important", "user-interaction"]),
            memory("tenant-1", 2, ["user-interaction"]), memory("tenant-1", 3, ["important"]),
            memory("tenant-2", 4, ["important"]), memory("tenant-2", 5, ["secret"])]


def audit(tenant: str, n: int, actor: str) -> dict[str, Any]:
    return {"entry_id": str(uuid.UUID(int=1000 + n)), "tenant_id": tenant, "ts": t(n),
            "actor": actor, "action": f"act-{n}", "before": json.dumps({}),
            "after": json.dumps({"n": n}), "metadata": None, "task_id": "task-1",
            "step_id": None, "source_event_id": None, "content_hash": None}


AUDITS = [audit("tenant-1", 1, "agent-1"), audit("tenant-1", 2, "agent-2"),
          audit("tenant-2", 3, "agent-1"), audit("tenant-1", 4, "agent-1")]


def job(job_id: str, status: str, spawned: int) -> dict[str, Any]:
    return {"job_id": job_id, "version": 1, "objective": "explore", "status": status,
            "reward_signal": None, "requested_resources": json.dumps({"cpu": 1}),
            "metadata": None, "spawned_at": t(spawned), "started_at": None,
            "completed_at": None}


JOBS = [job("job-1", "running", 1), job("job-2", "queued", 2), job("job-3", "running", 5),
        job("job-4", "completed", 3), job("job-5", "running", 4)]


def fleet_worker(worker_id: str, status: str, expiry: int, job_id: str | None
                 ) -> dict[str, Any]:
    return {"worker_id": worker_id, "version": 1, "job_id": job_id,
            "worker_type": "tadpole", "specialization": None, "status": status,
            "spawned_at": t(-3600), "retired_at": None, "ttl_seconds": 60,
            "expiry_at": t(expiry)}


WORKERS = [fleet_worker("w-1", "active", -600, "job-1"), fleet_worker("w-2", "active", 3600,
                                                                      None),
           fleet_worker("w-3", "retired", -3600, "job-1"),
           fleet_worker("w-4", "active", -300, None), fleet_worker("w-5", "active", -60,
                                                                   "job-3"),
           fleet_worker("w-6", "retired", -30, None), fleet_worker("w-7", "active", 60,
                                                                   "job-2")]

def judgement(n: int, verdict: str, score: float, seconds: float) -> dict[str, Any]:
    return {"snapshot_id": str(uuid.UUID(int=2000 + n)), "agent_id": f"agent-{n % 2}",
            "rubric_version": "r1", "verdict": verdict, "overall_score": score,
            "scores": json.dumps({"honesty": n}), "judge_id": None, "judged_at": t(seconds)}


JUDGEMENTS = [judgement(1, "retain", 0.1, 1), judgement(2, "retain", 0.2, 2),
              judgement(3, "promote", 0.9, 3), judgement(4, "retain", 0.30000000000000004, 4)]

PUBLISHED = {"experience_events": EVENTS, "policies": POLICIES, "workflow_states": WORKFLOWS,
             "task_states": TASKS, "memory_entries": MEMORIES, "audit_entries": AUDITS,
             "jobs": JOBS, "agent_workers": WORKERS, "judgement_snapshots": JUDGEMENTS}


@dataclass
class Seeded:
    root: Path
    settings: Settings  # the owner
    catalogue: Catalogue
    names: dict[str, str]  # seed sink → this catalogue's sink (= table) name
    reader: Settings  # a login that is a member of sinkfleet_reader only
    group: str
    topics: list[str] = field(default_factory=list)

    def cli(self, *args: str, as_reader: bool = False) -> subprocess.CompletedProcess[str]:
        """`sinkfleet query …` as a process (as the reader login, or the owner)."""
        env = catalogue_env(self.root, self.settings)
        if as_reader:
            password = self.reader.pg_password
            assert password is not None
            env.update(SINKFLEET_PG_USER=self.reader.pg_user,
                       SINKFLEET_PG_PASSWORD=password.get_secret_value())
        env.pop("COLUMNS", None)
        return subprocess.run([sys.executable, "-m", "sinkfleet", "query", *args],
                              capture_output=True, text=True, env=env, timeout=120,
                              cwd=self.root)


def write_catalogue(tmp: Path, suffix: str) -> tuple[Path, dict[str, str], list[str], str]:
    root = tmp / f"q-{suffix}"
    for sub in ("schemas", "topics", "sinks", "workers"):
        (root / sub).mkdir(parents=True)
    names, topics = {}, []
    for sink, family in FAMILIES.items():
        shutil_copy(ROOT / "schemas" / f"{family}.avsc", root / "schemas")
        spec = yaml.safe_load((ROOT / "sinks" / f"{sink}.yaml").read_text())
        topic_spec = next(s for p in sorted((ROOT / "topics").glob("*.yaml"))
                          if (s := yaml.safe_load(p.read_text()))["name"] == spec["topic"])
        topic = f"test.q-{suffix}.{sink}"
        names[sink] = f"{sink[:18]}_{suffix}"
        topic_spec.update(name=topic, partitions=2)
        spec.update(name=names[sink], table=names[sink], topic=topic)
        (root / "topics" / f"{sink}.yaml").write_text(yaml.safe_dump(topic_spec))
        (root / "sinks" / f"{sink}.yaml").write_text(yaml.safe_dump(spec))
        topics.append(topic)
    group = f"test-q-{suffix}"
    (root / "workers" / "w.yaml").write_text(yaml.safe_dump(
        {"name": "w", "group": group, "sinks": sorted(names.values()),
         "batch": {"max_records": 500, "max_age_ms": 50}}))
    return root, names, topics, group


def shutil_copy(src: Path, dest_dir: Path) -> None:
    (dest_dir / src.name).write_bytes(src.read_bytes())


async def _stored(settings: Settings, group: str) -> int:
    conn = await connect(settings)
    try:
        return int(await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM sinkfleet.consumer_offsets"
            " WHERE group_id = $1", group))
    finally:
        await conn.close()


async def publish_and_store(seeded: Seeded) -> None:
    async with Publisher(seeded.settings, catalogue=seeded.catalogue) as pub:
        for sink, records in PUBLISHED.items():
            for record in records:
                await pub.publish(FAMILIES[sink], record)
    async with KafkaPositions(seeded.settings) as kafka:
        end = sum(e for _, e in (await kafka.bounds(seeded.topics)).values())
    assert end == sum(map(len, PUBLISHED.values()))
    worker = Worker(seeded.settings, seeded.catalogue, seeded.catalogue.worker("w"))
    task = asyncio.create_task(worker.run())
    try:
        async def done() -> bool:
            return await _stored(seeded.settings, seeded.group) >= end

        await async_wait_for(done, 90, f"{end} records stored by {seeded.group}")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


@pytest_asyncio.fixture(scope="module")
async def seeded(stack: Settings, tmp_path_factory: Any) -> AsyncIterator[Seeded]:
    suffix = uuid.uuid4().hex[:8]
    root, names, topics, group = write_catalogue(tmp_path_factory.mktemp("q"), suffix)
    settings = load_settings(home=root, state_dir=stack.state)
    catalogue = load_catalogue(root)
    await apply_topics(settings, catalogue, say=lambda m: None)
    await migrate(settings, catalogue, lambda m: None)
    try:
        async with reader_login(settings, f"sinkfleet_q{suffix}_reader") as reader:
            out = Seeded(root, settings, catalogue, names, reader, group, topics)
            await publish_and_store(out)
            yield out
    finally:
        await forget(settings, tables=list(names.values()), groups=[group], topics=topics)


def json_rows(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


__all__ = ["Seeded", "json_rows", "seeded"]
