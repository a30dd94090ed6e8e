"""Realistic synthetic agent load (pure, deterministic for a given seed).

Agents run episodes of a few hundred steps; state drifts as a bounded random
walk, actions follow state, rewards mix homeostasis, curiosity, efficiency and
goal terms, and about one step in five carries action metadata.

The other families' loads live in ``state`` and ``append`` (beside this module);
:func:`synthetic_records` makes any of them and :class:`MixedLoad` interleaves them
all in the proportions of a running agent platform.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

from sinkfleet.dev.synthetic.append import (
    AuditEntryLoad,
    LearningMetricLoad,
    MemoryEntryLoad,
    WorkerEventLoad,
)
from sinkfleet.dev.synthetic.base import Item, Load, Tombstone, World
from sinkfleet.dev.synthetic.ledgers import LEDGER_LOADS
from sinkfleet.dev.synthetic.merge import CapabilitySetLoad, DistributedMetricLoad, SkillUseLoad
from sinkfleet.dev.synthetic.omega import (
    ArchitectureLoad,
    CausalEdgeLoad,
    GraphConnectionLoad,
    IntelligenceLoad,
    MemoryLoad,
    ReflexionEpisodeLoad,
    SkillLoad,
    TokenLoad,
    VectorLoad,
)
from sinkfleet.dev.synthetic.state import (
    ConfigurationLoad,
    FleetWorkerLoad,
    JobLoad,
    PolicyLoad,
    TaskStateLoad,
    WorkflowStateLoad,
)
from sinkfleet.producer.ids import uuid7

INTENTS = ("explore", "exploit", "query_memory", "call_tool", "plan", "reflect")
EXECUTORS = ("planner", "tool-runner", "memory", "llm", "policy")
_LOADS: tuple[type[Load], ...] = (
    LearningMetricLoad, MemoryEntryLoad, WorkerEventLoad, AuditEntryLoad,
    PolicyLoad, ConfigurationLoad, WorkflowStateLoad, TaskStateLoad, JobLoad, FleetWorkerLoad,
    DistributedMetricLoad, CapabilitySetLoad, TokenLoad, GraphConnectionLoad,
    MemoryLoad, SkillLoad, SkillUseLoad, ArchitectureLoad, IntelligenceLoad, VectorLoad,
    ReflexionEpisodeLoad, CausalEdgeLoad, *LEDGER_LOADS)
LOADS: dict[str, type[Load]] = {load.family: load for load in _LOADS}
FAMILIES = ("experience_event", *LOADS)
# Relative weights of a mixed load (the first eleven sum to 100): mostly experience
# events, then the audit trail and the state updates that agents' work produces; then
# seed 003's CRDT merges, seed 001's graph and seed 004's omega-persistence.
MIX = {"experience_event": 60, "memory_entry": 8, "worker_event": 6, "learning_metric": 2,
       "audit_entry": 8, "task_state": 6, "workflow_state": 2, "job": 2, "fleet_worker": 3,
       "policy": 2, "configuration": 1,
       "distributed_metric": 2, "capability_set": 1, "token": 3, "graph_connection": 3,
       "memory": 3, "skill": 1, "skill_use": 2, "architecture": 1, "intelligence": 1,
       "vector": 2, "reflexion_episode": 2, "causal_edge": 2,
       "judgement_snapshot": 1, "egg_revision": 1, "job_resource_allocation": 1,
       "job_event": 1, "worker_journal_entry": 1, "tadpole_activity": 1}


def _clip(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def _f32(x: float) -> float:
    # Round through float32 so what we compare against equals what a REAL column returns.
    import struct

    return struct.unpack("f", struct.pack("f", x))[0]


class ExperienceLoad:
    """An endless, reproducible stream of experience events from ``agents`` agents."""

    def __init__(self, seed: int = 0, agents: int = 32, agent_prefix: str = "agent",
                 start_us: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.agents = [f"{agent_prefix}-{i:04d}" for i in range(agents)]
        now_us = int(time.time() * 1_000_000) if start_us is None else start_us
        self._clock = now_us
        self._episode_seq = self.rng.randrange(1, 2**40)
        self._state: dict[str, dict[str, Any]] = {}
        self._policy = self.rng.randrange(-(2**31), 2**31)

    def _new_episode(self, agent: str) -> dict[str, Any]:
        self._episode_seq += 1
        return {
            "episode_id": self._episode_seq,
            "step": 0,
            "length": self.rng.randint(50, 500),
            "state": [self.rng.random() for _ in range(8)],
            "seq": self._state.get(agent, {}).get("seq", 0),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        rng = self.rng
        agent = rng.choice(self.agents)
        ep = self._state.get(agent)
        if ep is None or ep["step"] >= ep["length"]:
            ep = self._state[agent] = self._new_episode(agent)
        ep["state"] = [_clip(s + rng.gauss(0.0, 0.05)) for s in ep["state"]]
        state = [_f32(s) for s in ep["state"]]
        action = [_f32(max(-1.0, min(1.0, 0.5 - s + rng.gauss(0.0, 0.1)))) for s in state]
        self._clock += rng.randint(200, 5000)
        if rng.random() < 0.001:
            self._policy = rng.randrange(-(2**31), 2**31)
        metadata = None
        if rng.random() < 0.2:
            metadata = {
                "intent_type": rng.choice(INTENTS),
                "executor_id": rng.choice(EXECUTORS),
                "parameters": json.dumps({"depth": rng.randint(1, 5),
                                          "temperature": round(rng.random(), 3)}),
            }
        event = {
            # time-ordered, as the Publisher's producers make them (sinkfleet.producer.ids)
            "event_id": uuid7(self._clock // 1000, randbits=rng.getrandbits).bytes,
            "timestamp": self._clock,
            "agent_id": agent,
            "episode_id": ep["episode_id"],
            "step_number": ep["step"],
            "sequence_number": ep["seq"],
            "event_type": rng.choice((1, 1, 1, 2, 3)),
            "flags": rng.choice((0, 0, 0, 1)),
            "state": state,
            "action": action,
            "reward": {
                "homeostasis": _f32(1.0 - abs(state[0] - 0.5) * 2),
                "curiosity": _f32(state[1] * 0.5),
                "efficiency": _f32(-abs(sum(action)) / 8),
                "goal": _f32(1.0 if ep["step"] == ep["length"] - 1 else 0.0),
            },
            "policy_version_hash": self._policy,
            "action_metadata": metadata,
        }
        ep["step"] += 1
        ep["seq"] += 1
        return event


def synthetic_records(family: str, seed: int = 0, *, agents: int = 32, prefix: str = "",
                      start_us: int | None = None) -> Iterator[Item]:
    """Records of ``family`` for `sinkfleet produce` and the demo; state families also
    yield a :class:`Tombstone` now and then."""
    if family == "experience_event":
        return iter(ExperienceLoad(seed=seed, agents=agents, agent_prefix=prefix + "agent",
                                   start_us=start_us))
    if family in LOADS:
        return iter(LOADS[family](seed, prefix=prefix, agents=agents, start_us=start_us))
    raise ValueError(f"no synthetic load for family {family!r} (have: {', '.join(FAMILIES)})")


class MixedLoad:
    """Every family interleaved in the proportions of ``MIX``, over one shared world, so
    records refer to each other (a memory entry's task, a metric's policy and event).
    Yields ``(family, record or Tombstone)``."""

    def __init__(self, seed: int = 0, *, agents: int = 32, prefix: str = "",
                 start_us: int | None = None, mix: dict[str, int] | None = None) -> None:
        self.rng = random.Random(f"mixed:{seed}")
        self.world = World(random.Random(f"world:{seed}"), prefix=prefix, agents=agents,
                           start_us=start_us)
        self.mix = dict(MIX if mix is None else mix)
        unknown = set(self.mix) - set(FAMILIES)
        if unknown:
            raise ValueError(f"no synthetic load for {sorted(unknown)}")
        self._events = ExperienceLoad(seed=seed, agents=agents, agent_prefix=prefix + "agent",
                                      start_us=start_us)
        self._loads: dict[str, Iterator[Item]] = {
            family: LOADS[family](seed, world=self.world) for family in self.mix
            if family != "experience_event"}
        self._families = list(self.mix)
        self._weights = list(self.mix.values())

    def __iter__(self) -> Iterator[tuple[str, Item]]:
        return self

    def __next__(self) -> tuple[str, Item]:
        family = self.rng.choices(self._families, self._weights)[0]
        if family == "experience_event":
            event = next(self._events)
            self.world.events.append(event["event_id"])  # learning metrics cite events
            return family, event
        return family, next(self._loads[family])


__all__ = ["FAMILIES", "MIX", "ExperienceLoad", "MixedLoad", "Tombstone", "synthetic_records"]
