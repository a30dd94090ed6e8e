"""Synthetic state updates: policies, configuration, workflow and task state, jobs and
the agent platform's workers (seeds 000, 002, 003). See :class:`StateLoad`."""

from __future__ import annotations

from typing import Any

from sinkfleet.dev.synthetic.base import StateLoad, dumps

COMPONENTS = {
    "action_controller": ("exploration_rate", "max_actions_per_step", "timeout_ms"),
    "intuition_engine": ("min_confidence", "proposal_batch", "enabled"),
    "experience_stream": ("buffer_capacity", "flush_interval_ms"),
    "policy_learner": ("learning_rate", "discount", "reward_weights"),
}
WORKFLOWS = ("ingest-documents", "triage-ticket", "research-question", "refund-order",
             "nightly-report")
OBJECTIVES = ("summarise the weekly incident reports", "scan listings for monetization",
              "forecast Cardano staking yield", "label 500 support tickets",
              "benchmark retrieval quality", "reconcile ledger exports")
SPECIALIZATIONS = ("retrieval", "planning", "coding", "analysis", "negotiation", None)
ERRORS = ("timeout after 30s", "tool returned HTTP 503", "rate limited by upstream",
          "validation failed: missing field 'amount'")


def _weights(rng: Any, actions: int = 6) -> dict[str, float]:
    raw = [rng.random() for _ in range(actions)]
    total = sum(raw)
    return {str(a): round(w / total, 4) for a, w in enumerate(raw)}


class PolicyLoad(StateLoad):
    """Action policies per state bin, versioned with lineage: a version usually derives
    from the one before, now and then from an older, better ancestor (a rollback)."""

    family = "policy"
    key = ("state_bin_id",)
    live = 48

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        # A discretised 4-D state and a serial, so no two bins collide.
        bin_id = world.serial("bin") + "-" + "".join(str(rng.randrange(4)) for _ in range(4))
        world.policies.append((bin_id, self._versions.get((bin_id,), 0) + 1))
        return {
            "state_bin_id": bin_id, "version": 1, "parent_version": None,
            "rule_id": f"rule-{rng.randrange(200):03d}",
            "action_weights": dumps(_weights(rng)),
            "metadata": dumps({"source": "bootstrap", "proposal": None}),
            "total_executions": 0, "avg_reward": 0.0, "updated_at": world.tick(),
        }

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng, world = self.rng, self.world
        if prev["version"] > 5 and rng.random() < 0.01:
            return None  # the bin is merged away: its policy retired (maybe deleted)
        parent = prev["version"]
        if parent > 2 and rng.random() < 0.15:  # roll back to an ancestor
            parent = rng.randint(1, parent - 1)
        weights = {k: round(max(0.0, w + rng.gauss(0, 0.05)), 4)
                   for k, w in _weights(rng).items()}
        executions = prev["total_executions"] + rng.randint(10, 500)
        reward = round(prev["avg_reward"] * 0.8 + rng.gauss(0.3, 0.2) * 0.2, 6)
        record = {**prev, "parent_version": parent, "action_weights": dumps(weights),
                  "metadata": dumps({"source": rng.choice(("intuition_engine", "operator",
                                                           "auto_tuner")),
                                     "proposal": world.uuid(),
                                     "rollback": parent != prev["version"]}),
                  "total_executions": executions, "avg_reward": reward,
                  "updated_at": world.tick()}
        world.policies.append((record["state_bin_id"], prev["version"] + 1))
        return record


class ConfigurationLoad(StateLoad):
    """Runtime configuration per component and key; keys are rarely removed."""

    family = "configuration"
    key = ("component_name", "config_key")
    live = 11

    def _value(self, key: str) -> Any:
        rng = self.rng
        if key == "enabled":
            return rng.random() < 0.8
        if key == "reward_weights":
            return {"homeostasis": 0.4, "curiosity": round(rng.random() * 0.4, 3),
                    "efficiency": 0.2, "goal": 1.0}
        if key.endswith(("_ms", "_batch", "capacity", "_per_step")):
            return rng.choice((8, 16, 32, 100, 250, 1000, 5000))
        return round(rng.random(), 4)

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        taken = set(self._live)
        free = [(world.prefix + c, k) for c, keys in COMPONENTS.items() for k in keys
                if (world.prefix + c, k) not in taken]
        component, key = rng.choice(free) if free else (world.prefix + "experimental",
                                                        world.serial("flag"))
        return {"component_name": component, "config_key": key, "version": 1,
                "config_value": dumps(self._value(key)), "updated_by": "bootstrap",
                "updated_at": world.tick()}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng = self.rng
        if rng.random() < 0.01:
            return None  # a key removed (maybe with a tombstone)
        return {**prev, "config_value": dumps(self._value(prev["config_key"])),
                "updated_by": rng.choice(("operator", "auto_tuner", *self.world.agents[:3])),
                "updated_at": self.world.tick()}


class WorkflowStateLoad(StateLoad):
    """Workflows per tenant: pending → running (step by step) → completed or failed."""

    family = "workflow_state"
    key = ("tenant_id", "workflow_id")

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        tenant = rng.choice(world.tenants)
        workflow = world.serial("wf")
        world.workflows.append((tenant, workflow))
        return {"tenant_id": tenant, "workflow_id": workflow, "version": 1,
                "workflow_name": rng.choice(WORKFLOWS), "status": "pending",
                "current_step": None, "error": None,
                "metadata": dumps({"requested_by": rng.choice(world.agents),
                                   "priority": rng.choice(("low", "normal", "high"))}),
                "started_at": None, "updated_at": world.tick(), "completed_at": None}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng, now = self.rng, self.world.tick()
        status = prev["status"]
        if status in ("completed", "failed", "cancelled"):
            return None
        record = {**prev, "updated_at": now}
        if status == "pending":
            record.update(status="running", started_at=now, current_step="step-01")
        elif status == "paused":
            record["status"] = "running"
        else:
            step = int(str(prev["current_step"]).rsplit("-", 1)[1])
            roll = rng.random()
            if roll < 0.04:
                record.update(status="failed", error=rng.choice(ERRORS), completed_at=now)
            elif roll < 0.06:
                record["status"] = "paused"
            elif roll < 0.07:
                record.update(status="cancelled", completed_at=now)
            elif step >= rng.randint(3, 12):
                record.update(status="completed", current_step=None, completed_at=now)
            else:
                record["current_step"] = f"step-{step + 1:02d}"
        return record


class TaskStateLoad(StateLoad):
    """Tasks of tenants' workflows: pending → running → succeeded, or failed attempts
    retried (retry_count, error) up to three times."""

    family = "task_state"
    key = ("tenant_id", "workflow_id", "task_id")
    live = 32

    def create(self) -> dict[str, Any]:
        world = self.world
        tenant, workflow = world.workflow()
        task = world.serial("task")
        world.tasks.append((tenant, workflow, task))
        return {"tenant_id": tenant, "workflow_id": workflow, "task_id": task, "version": 1,
                "status": "pending", "retry_count": 0, "error": None, "result": None,
                "started_at": None, "updated_at": world.tick(), "completed_at": None}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng, now = self.rng, self.world.tick()
        status = prev["status"]
        if status in ("succeeded", "failed", "skipped"):
            return None
        record = {**prev, "updated_at": now}
        if status in ("pending", "retrying"):
            if status == "pending" and rng.random() < 0.03:
                record.update(status="skipped", completed_at=now)
            else:
                record.update(status="running", started_at=prev["started_at"] or now,
                              error=None)
        elif rng.random() < 0.15:  # this attempt failed
            retries = prev["retry_count"] + 1
            record.update(error=rng.choice(ERRORS), retry_count=min(retries, 3),
                          status="retrying" if retries <= 3 else "failed")
            if retries > 3:
                record["completed_at"] = now
        else:
            record.update(status="succeeded", completed_at=now,
                          result=dumps({"items": rng.randint(0, 500),
                                        "cost_usd": round(rng.random() / 10, 5)}))
        return record


class JobLoad(StateLoad):
    """Jobs: queued → running → completed (with a reward signal) or failed."""

    family = "job"
    key = ("job_id",)
    live = 16

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        job = world.serial("job")
        world.jobs.append(job)
        return {"job_id": job, "version": 1, "objective": rng.choice(OBJECTIVES),
                "status": "queued", "reward_signal": None,
                "requested_resources": dumps({
                    "compute_units": rng.choice((1, 2, 4, 8)),
                    "memory_mb": rng.choice((512, 1024, 4096)),
                    "bandwidth_mbps": rng.choice((10, 100)),
                    "thread_count": rng.choice((1, 2, 4))}),
                "metadata": dumps({"requested_by": rng.choice(world.agents),
                                   "trial": rng.random() < 0.2}),
                "spawned_at": world.tick(), "started_at": None, "completed_at": None}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng, now = self.rng, self.world.tick()
        if prev["status"] == "queued":
            return {**prev, "status": "running", "started_at": now}
        if prev["status"] != "running":
            return None
        if rng.random() < 0.5:  # progress report: reward so far
            return {**prev, "reward_signal": round(rng.random(), 6)}
        done = rng.random() < 0.85
        return {**prev, "status": "completed" if done else "failed", "completed_at": now,
                "reward_signal": round(rng.random(), 6) if done else prev["reward_signal"]}


class FleetWorkerLoad(StateLoad):
    """The agent platform's workers: spawned for a job with a TTL, active and idle in
    turn, then retired or expired."""

    family = "fleet_worker"
    key = ("worker_id",)
    live = 32

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        kind = rng.choice(("tadpole", "tadpole", "tadpole", "quest_worker", "supervisor"))
        worker = world.serial(kind)
        job = world.job() if kind != "supervisor" else None
        world.workers.append((worker, job))
        ttl = {"tadpole": 300, "quest_worker": 3600, "supervisor": 86400}[kind]
        now = world.tick()
        return {"worker_id": worker, "version": 1, "job_id": job, "worker_type": kind,
                "specialization": rng.choice(SPECIALIZATIONS), "status": "spawning",
                "spawned_at": now, "retired_at": None, "ttl_seconds": ttl,
                "expiry_at": now + ttl * 1_000_000,
                "metadata": dumps({"protocol": rng.choice(("grpc", "http", "queue")),
                                   "generation": rng.randint(1, 40)})}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng, now = self.rng, self.world.tick()
        status = prev["status"]
        if status in ("retired", "expired"):
            return None
        if now >= prev["expiry_at"] or rng.random() < 0.05:
            return {**prev, "status": "expired", "retired_at": now}
        if status != "spawning" and rng.random() < 0.1:
            return {**prev, "status": "retired", "retired_at": now}
        return {**prev, "status": "idle" if status == "active" else "active"}
