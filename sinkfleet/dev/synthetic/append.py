"""Synthetic append-only records: learning metrics (seed 000), memory entries and audit
entries (seed 002), worker events (seed 003)."""

from __future__ import annotations

from typing import Any

from sinkfleet.dev.synthetic.base import Load, dumps

TAGS = ("important", "user-interaction", "tool-output", "plan", "error", "summary",
        "customer", "billing", "follow-up", "low-confidence", "verified", "draft")
NOTES = ("user asked for a refund status", "tool call returned 3 candidates",
         "plan revised after a timeout", "customer prefers e-mail", "summary drafted",
         "confidence below threshold; escalated")
MIME = ("application/pdf", "text/csv", "image/png", "application/json")
ACTIONS = {  # action -> kind of entity it touches
    "create_workflow": "workflow", "update_state": "workflow", "cancel_workflow": "workflow",
    "store_memory": "memory", "delete_memory": "memory", "call_tool": "tool",
    "grant_permission": "permission", "update_config": "config",
}
REASONS = ("user_request", "scheduled", "policy_decision", "retry", "operator_override")


class LearningMetricLoad(Load):
    """Proposal outcomes, reward trends and policy performance, tied to policies and
    experience events."""

    family = "learning_metric"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        kind = rng.choices(("reward_trend", "policy_performance", "proposal_accepted",
                            "proposal_rejected"), (5, 3, 1, 1))[0]
        bin_id, version = world.policy()
        if kind == "reward_trend":
            window = rng.choice((100, 1000, 10000))
            data: dict[str, Any] = {"window": window, "mean": round(rng.gauss(0.3, 0.1), 5),
                                    "slope": round(rng.gauss(0.0, 0.01), 6)}
        elif kind == "policy_performance":
            data = {"executions": rng.randint(10, 5000), "avg_reward": round(rng.random(), 5),
                    "success_rate": round(rng.random(), 4)}
        else:
            data = {"proposal_id": world.uuid(), "delta": round(rng.gauss(0, 0.05), 5),
                    "reviewer": rng.choice(("intuition_engine", "operator"))}
        event = world.pick(world.events) if world.events else rng.randbytes(16)
        return {
            "metric_id": world.uuid(), "ts": world.tick(), "metric_type": kind,
            "metric_data": dumps(data),
            "related_state_bin_id": bin_id if kind != "reward_trend" else None,
            "related_policy_version": version if kind != "reward_trend" else None,
            "related_event_id": event if rng.random() < 0.4 else None,
        }


class MemoryEntryLoad(Load):
    """Episodic notes, artifacts and snapshots with provenance (task, step, source
    event) and one to four tags."""

    family = "memory_entry"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        tenant, _, task = world.task()
        kind = rng.choices(("episodic_note", "artifact", "snapshot"), (6, 3, 1))[0]
        if kind == "episodic_note":
            content: dict[str, Any] = {"text": rng.choice(NOTES),
                                       "importance": round(rng.random(), 3)}
        elif kind == "artifact":
            content = {"uri": f"s3://artifacts/{tenant}/{world.uuid()}",
                       "mime": rng.choice(MIME), "bytes": rng.randint(200, 5_000_000)}
        else:
            content = {"checkpoint": rng.randint(1, 200),
                       "state": {"step": rng.randint(1, 40), "open_items": rng.randint(0, 9)}}
        has_task = rng.random() < 0.9
        return {
            "entry_id": world.uuid(), "tenant_id": tenant, "ts": world.tick(),
            "entry_type": kind, "content": dumps(content),
            "task_id": task if has_task else None,
            "step_id": f"step-{rng.randint(1, 12):02d}" if has_task else None,
            "source_event_id": f"evt-{world.uuid()}" if rng.random() < 0.5 else None,
            "tags": rng.sample(TAGS, rng.randint(1, 4)),
        }


class WorkerEventLoad(Load):
    """Lifecycle events of the agent platform's workers: heartbeats, task starts and
    completions, TTL expirations."""

    family = "worker_event"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        worker, job = world.worker()
        kind = rng.choices(("heartbeat", "task_started", "task_completed", "spawned",
                            "ttl_expired", "retired"), (10, 3, 3, 1, 1, 1))[0]
        if kind == "heartbeat":
            payload: dict[str, Any] = {"cpu": round(rng.random(), 3),
                                       "memory_mb": rng.randint(64, 4096)}
        elif kind.startswith("task_"):
            payload = {"task_id": world.task()[2], "attempt": rng.randint(1, 3)}
            if kind == "task_completed":
                payload["duration_ms"] = rng.randint(5, 120_000)
        elif kind == "spawned":
            payload = {"ttl_seconds": rng.choice((300, 3600)), "host": f"node-{rng.randint(1, 9)}"}
        else:
            payload = {"reason": kind, "uptime_s": rng.randint(10, 86_400)}
        return {"event_id": world.uuid(), "worker_id": worker, "job_id": job,
                "event_type": kind, "payload": dumps(payload), "occurred_at": world.tick()}


class AuditEntryLoad(Load):
    """Each tenant's actions in time order, on entities whose ``before`` is the previous
    entry's ``after``. ``content_hash`` is left None: the publisher fills it."""

    family = "audit_entry"

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self._entities: dict[str, dict[str, dict[str, Any]]] = {}  # tenant -> id -> state

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        tenant = rng.choice(world.tenants)
        entities = self._entities.setdefault(tenant, {})
        action = rng.choice(tuple(ACTIONS))
        kind = ACTIONS[action]
        ids = [i for i in entities if i.startswith(kind + ":")]
        before: dict[str, Any] | None = None
        if action.startswith(("create_", "store_", "grant_")) or not ids:
            ident = f"{kind}:{world.serial(kind[:4])}"
            after: dict[str, Any] | None = {"id": ident, "status": "created", "count": 0}
        else:
            ident = rng.choice(ids)
            before = entities[ident]
            after = None if action.startswith(("delete_", "cancel_")) else {
                **before, "status": rng.choice(("running", "updated", "paused")),
                "count": before["count"] + 1}
        if after is None:
            del entities[ident]
        else:
            entities[ident] = after
            if len(entities) > 50:
                del entities[next(iter(entities))]
        _, _, task = world.task(tenant)
        return {
            "entry_id": world.uuid(), "tenant_id": tenant, "ts": world.tick(),
            "actor": rng.choice((*world.agents[:8], "operator", "system")),
            "action": action,
            "before": None if before is None else dumps(before),
            "after": None if after is None else dumps(after),
            "metadata": dumps({"reason": rng.choice(REASONS), "entity": ident}),
            "task_id": task, "step_id": f"step-{rng.randint(1, 12):02d}",
            "source_event_id": f"evt-{world.uuid()}" if rng.random() < 0.7 else None,
            "content_hash": None,
        }
