"""Avro records of the test families, as agents publish them (timestamps in µs)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


def now_us() -> int:
    return int(time.time() * 1_000_000)


def workflow(tenant: str, wf: str, version: int, **extra: Any) -> dict[str, Any]:
    ts = extra.pop("updated_at", now_us())
    return {
        "tenant_id": tenant, "workflow_id": wf, "version": version,
        "workflow_name": "triage-ticket", "status": extra.pop("status", "running"),
        "current_step": f"step-{version}", "error": None,
        "metadata": json.dumps({"version": version, "tags": ["a", "b"], "ratio": 0.25}),
        "started_at": ts - 5_000_000, "updated_at": ts, "completed_at": None, **extra,
    }


def policy(bin_id: str, version: int, parent: int | None) -> dict[str, Any]:
    return {
        "state_bin_id": bin_id, "version": version, "parent_version": parent,
        "rule_id": f"rule-{version:03d}", "action_weights": json.dumps({"0": 0.5, "1": 0.5}),
        "metadata": None, "total_executions": version * 10, "avg_reward": 0.1 * version,
        "updated_at": now_us(),
    }


def event(agent: str, episode: int, step: int, ts_us: int) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().bytes, "timestamp": ts_us, "agent_id": agent,
        "episode_id": episode, "step_number": step, "sequence_number": step,
        "event_type": 1, "flags": 0,
        "state": [0.1 * i + step / 7 for i in range(8)],
        "action": [0.3 - 0.05 * i for i in range(8)],
        "reward": {"homeostasis": 0.5, "curiosity": 0.125, "efficiency": -0.3, "goal": 0.0},
        "policy_version_hash": 1234,
        "action_metadata": ({"intent_type": "explore", "executor_id": "ex-1",
                             "parameters": json.dumps({"speed": step, "mode": "fast"})}
                            if step % 2 else None),
    }


def audit(tenant: str, actor: str, action: str, ts_us: int) -> dict[str, Any]:
    return {
        "entry_id": str(uuid.uuid4()), "tenant_id": tenant, "ts": ts_us, "actor": actor,
        "action": action, "before": json.dumps({"status": "pending"}),
        "after": json.dumps({"status": "running"}), "metadata": None, "task_id": "task-1",
        "step_id": None, "source_event_id": None, "content_hash": bytes(32),
    }
