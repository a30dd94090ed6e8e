"""Synthetic records of seed 003's population-state ledgers: judgement snapshots, egg
revisions, the job resource ledger, job events, the worker journal and tadpole activity
(append-only, each with its retention tier: docs/retention.md)."""

from __future__ import annotations

from typing import Any

from sinkfleet.dev.synthetic.base import Load, dumps

RUBRICS = ("rubric-v3", "rubric-v4", "rubric-v5")
VERDICTS = ((0.8, "exemplary"), (0.6, "sound"), (0.4, "marginal"), (0.0, "unsound"))
PRINCIPLES = ("honesty", "helpfulness", "harmlessness", "efficiency", "autonomy")
EGG_FLOW = {"proposed": ("approved", "rejected"), "approved": ("applied",),
            "rejected": ("proposed",), "applied": ("proposed",)}
POOLS = ("gpu-a", "gpu-b", "cpu-general", "cpu-burst")
JOB_FLOW = ("queued", "assigned", "started", "progress", "progress", "completed")
JOURNAL = ("feedback", "reflection", "report")
NOTES = ("throughput fell after the rebalance", "retry budget exhausted once",
         "cache warm-up took longer than planned", "handed two partitions over cleanly",
         "memory pressure near the limit", "no incident")
ACTIVITY = ("spawned", "probed", "negotiated", "replicated", "expired", "retired")


class JudgementSnapshotLoad(Load):
    """An agent judged against a rubric: per-principle scores, a verdict by score band."""

    family = "judgement_snapshot"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        scores = {p: round(rng.betavariate(5, 2), 3) for p in PRINCIPLES}
        overall = round(sum(scores.values()) / len(scores), 4)
        verdict = next(name for floor, name in VERDICTS if overall >= floor)
        return {"snapshot_id": world.uuid(), "agent_id": rng.choice(world.agents),
                "rubric_version": rng.choice(RUBRICS), "verdict": verdict,
                "overall_score": overall, "scores": dumps(scores),
                "judge_id": f"judge-{rng.randint(1, 4)}" if rng.random() < 0.8 else None,
                "judged_at": world.tick()}


class EggRevisionLoad(Load):
    """Revisions of eggs (agent blueprints), numbered per egg, proposed → approved or
    rejected → applied."""

    family = "egg_revision"

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.eggs: dict[str, tuple[int, str]] = {}  # egg -> (last revision, last action)

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        if len(self.eggs) < 12 or rng.random() < 0.1:
            egg = world.serial("egg")
            revision, action = 1, "proposed"
        else:
            egg = rng.choice(list(self.eggs))
            last, previous = self.eggs[egg]
            revision, action = last + 1, rng.choice(EGG_FLOW[previous])
        self.eggs[egg] = (revision, action)
        changes = {"field": rng.choice(("temperament", "toolset", "budget", "goals")),
                   "delta": round(rng.gauss(0, 0.2), 3)}
        return {"revision_id": world.uuid(), "egg_id": egg, "revision": revision,
                "action": action, "author": rng.choice(("operator", "evolver", "reviewer")),
                "changes": dumps(changes),
                "rationale": "fitness plateaued" if rng.random() < 0.3 else None,
                "revised_at": world.tick()}


class JobResourceLoad(Load):
    """Resources allocated to jobs from a pool, released later (or still held)."""

    family = "job_resource_allocation"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        at = world.tick()
        held = rng.random() < 0.2
        return {"allocation_id": world.uuid(), "job_id": world.job(),
                "pool": rng.choice(POOLS), "compute_units": rng.randint(1, 64),
                "memory_mb": rng.choice((512, 1024, 2048, 4096, 8192)),
                "bandwidth_mbps": rng.choice((10, 100, 1000)),
                "thread_count": rng.randint(1, 32), "allocated_at": at,
                "released_at": None if held else at + rng.randint(1_000_000, 3_600_000_000)}


class JobEventLoad(Load):
    """Each job's lifecycle in order: queued, assigned, started, progress, an end."""

    family = "job_event"

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.steps: dict[str, int] = {}  # job -> index into JOB_FLOW of its next event

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        job = world.job()
        step = self.steps.get(job, 0)
        kind = JOB_FLOW[step] if step < len(JOB_FLOW) else "progress"
        if kind == "completed" and rng.random() < 0.15:
            kind = "failed"
        self.steps[job] = step + 1
        details: dict[str, Any] = {"step": step}
        if kind == "progress":
            details["percent"] = min(100, 20 * step + rng.randint(0, 19))
        if kind == "failed":
            details["error"] = rng.choice(("timeout", "oom", "dependency failed"))
        return {"event_id": world.uuid(), "job_id": job, "event_type": kind,
                "status": kind if kind in ("completed", "failed", "started") else None,
                "details": dumps(details), "occurred_at": world.tick()}


class WorkerJournalLoad(Load):
    """What workers write down: feedback, reflections, reports, with their metrics."""

    family = "worker_journal_entry"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        worker, job = world.worker()
        return {"entry_id": world.uuid(), "worker_id": worker,
                "job_id": job if rng.random() < 0.7 else None,
                "entry_type": rng.choice(JOURNAL), "body": rng.choice(NOTES),
                "metrics": dumps({"processed": rng.randint(0, 10_000),
                                  "errors": rng.randint(0, 5),
                                  "latency_ms": round(rng.lognormvariate(3, 0.5), 1)}),
                "written_at": world.tick()}


class TadpoleActivityLoad(Load):
    """Short-lived tadpoles from spawn to expiry: entropy, pressure, protocol success."""

    family = "tadpole_activity"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        worker, job = world.worker()
        return {"activity_id": world.uuid(), "tadpole_id": f"{worker}-t{rng.randint(1, 6)}",
                "worker_id": worker if rng.random() < 0.9 else None,
                "job_id": job if rng.random() < 0.6 else None,
                "activity": rng.choice(ACTIVITY),
                "attributes": dumps({"entropy": round(rng.random(), 3),
                                     "pressure": round(rng.random(), 3),
                                     "protocol_success": rng.random() < 0.85}),
                "observed_at": world.tick()}


LEDGER_LOADS: tuple[type[Load], ...] = (
    JudgementSnapshotLoad, EggRevisionLoad, JobResourceLoad, JobEventLoad,
    WorkerJournalLoad, TadpoleActivityLoad)
