"""Synthetic records of seed 001's graph (tokens, connections) and seed 004's
omega-persistence (memories, skills, architectures, intelligences, vectors, reflexion
episodes, causal edges).

They refer to each other through the :class:`World`'s pools (an edge's memories, a
vector's memory, an intelligence's architecture). While a pool is nearly empty a
reference names an id not published yet: such a row is an orphan until its parent
arrives (docs/references.md).
"""

from __future__ import annotations

import struct
from typing import Any

from sinkfleet.dev.synthetic.base import Load, StateLoad, dumps

TOKEN_TYPES = ("word", "image", "audio", "concept")
CONNECTIONS = ("spatial", "temporal", "causal", "semantic")
SKILLS = {"code_review": "review.*code|code.*review", "summarise": "summar(y|ise)",
          "triage": "triage|prioriti[sz]e", "refund": "refund.*order",
          "plan_trip": "plan.*(trip|travel)", "sql_query": "select|query.*table"}
PARADIGMS = ("neural", "symbolic", "hybrid", "evolutionary")
SUBSTRATES = ("pytorch", "rust", "jax", "wasm")
CAPABILITIES = ("reasoning", "learning", "planning", "memory", "tool_use", "vision")
TRIGGERS = ("task failed validation", "user corrected the answer", "tool timed out",
            "plan exceeded budget", "low confidence answer")
ACTIONS = ("retried with a smaller step", "asked a clarifying question",
           "switched to a cached result", "re-planned", "escalated to an operator")
OUTCOMES = ("succeeded", "partially succeeded", "failed again", "user satisfied")
EDGE_TYPES = ("improvement", "regression", "enables", "prevents")
VECTOR_DIM = 32  # sinks/vectors.yaml and sinks/memories.yaml store exactly 32


def f32(x: float) -> float:
    """``x`` rounded to float32, as a real[] column returns it."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


class TokenLoad(StateLoad):
    """Seed 001's tokens: a 64-byte payload at an 8-D position that drifts."""

    family = "token"
    key = ("token_id",)
    live = 64

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        token = world.uuid()
        world.add("token", token)
        return {"token_id": token, "version": 1, "binary_data": rng.randbytes(64),
                "coordinates": [f32(rng.uniform(-10, 10)) for _ in range(8)],
                "token_type": rng.choice(TOKEN_TYPES), "level": rng.randrange(4),
                "updated_at": world.tick()}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng = self.rng
        if prev["version"] > 4 and rng.random() < 0.05:
            return None
        return {**prev, "coordinates": [f32(c + rng.gauss(0, 0.3))
                                        for c in prev["coordinates"]],
                "updated_at": self.world.tick()}


class GraphConnectionLoad(StateLoad):
    """Seed 001's typed, weighted edges between tokens; weights are re-learnt."""

    family = "graph_connection"
    key = ("source_id", "target_id", "connection_type")
    live = 96

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        return {"source_id": world.ref("token", world.uuid),
                "target_id": world.ref("token", world.uuid),
                "connection_type": rng.choice(CONNECTIONS), "version": 1,
                "weight": round(rng.random(), 4), "updated_at": world.tick()}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng = self.rng
        if prev["version"] > 3 and rng.random() < 0.08:
            return None  # pruned
        return {**prev, "weight": round(max(0.0, prev["weight"] + rng.gauss(0, 0.1)), 4),
                "updated_at": self.world.tick()}


def _embedding(rng: Any, centre: list[float]) -> list[float]:
    return [f32(c + rng.gauss(0, 0.2)) for c in centre]


class MemoryLoad(StateLoad):
    """Memories across the 12 tiers; importance is re-rated as they are accessed, and
    a forgotten memory is deleted now and then."""

    family = "memory"
    key = ("memory_id",)
    live = 48

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        memory = world.serial("mem")
        world.add("memory", memory)
        now = world.tick()
        centre = [rng.uniform(-1, 1) for _ in range(VECTOR_DIM)]
        return {"memory_id": memory, "version": 1,
                "content": rng.choice(("Implemented caching layer",
                                       "Response time improved 10x",
                                       "User prefers concise answers",
                                       "Deploys fail on Fridays")),
                "tier": rng.randint(1, 12), "importance": round(rng.random(), 3),
                "embedding": _embedding(rng, centre) if rng.random() < 0.5 else None,
                "created_at": now, "last_accessed": now}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng = self.rng
        if prev["version"] > 3 and rng.random() < 0.06:
            return None  # forgotten
        importance = round(min(1.0, max(0.0, prev["importance"] + rng.gauss(0, 0.1))), 3)
        return {**prev, "importance": importance, "last_accessed": self.world.tick()}


class SkillLoad(StateLoad):
    """Learned skills: a trigger pattern, now and then refined."""

    family = "skill"
    key = ("skill_id",)
    live = 12

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        # the id skill uses may already have counted successes for (docs/references.md)
        skill = world.ref("skill", lambda: world.serial("skill"))
        if (skill,) in self._live:
            skill = world.serial("skill")
            world.add("skill", skill)
        name = rng.choice(sorted(SKILLS))
        now = world.tick()
        return {"skill_id": skill, "version": 1, "name": name,
                "description": f"{name.replace('_', ' ')} with best practices",
                "trigger_pattern": SKILLS[name], "created_at": now, "updated_at": now}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        if prev["version"] > 2 and self.rng.random() < 0.1:
            return None
        return {**prev, "trigger_pattern": prev["trigger_pattern"] + "|" + prev["name"],
                "updated_at": self.world.tick()}


class ArchitectureLoad(StateLoad):
    """Evolved architectures: each from a parent (or a new root), fitness re-measured."""

    family = "architecture"
    key = ("arch_id",)
    live = 16

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        pool = world.pools.get("architecture")
        parent = world.pick(pool) if pool and rng.random() < 0.8 else None
        arch = world.serial("arch")
        world.add("architecture", arch)
        overall = round(rng.random(), 3)
        return {"arch_id": arch, "version": 1, "name": f"Arch-{arch[-4:]}",
                "paradigm": rng.choice(PARADIGMS), "substrate": rng.choice(SUBSTRATES),
                "fitness_overall": overall,
                "fitness": dumps({"overall": overall, "capability": round(rng.random(), 3)}),
                "parent_id": parent, "generation": 0 if parent is None else
                rng.randint(1, 20), "created_at": world.tick()}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng = self.rng
        if prev["version"] > 3 and rng.random() < 0.05:
            return None
        overall = round(min(1.0, max(0.0, prev["fitness_overall"] + rng.gauss(0, 0.05))), 3)
        return {**prev, "fitness_overall": overall,
                "fitness": dumps({"overall": overall, "capability": round(rng.random(), 3)})}


class IntelligenceLoad(StateLoad):
    """Intelligence instances: an architecture, maturing, gaining capabilities."""

    family = "intelligence"
    key = ("intelligence_id",)
    live = 16

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        intel = world.serial("intel")
        world.add("intelligence", intel)
        now = world.tick()
        return {"intelligence_id": intel, "version": 1, "name": intel,
                "arch_id": world.ref("architecture", lambda: world.serial("arch")),
                "maturity": 0.0, "capabilities": sorted(rng.sample(CAPABILITIES, 2)),
                "memory_ids": [world.ref("memory", lambda: world.serial("mem"))],
                "status": "active", "state": dumps({"mode": "training"}),
                "created_at": now, "updated_at": now}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng, world = self.rng, self.world
        if prev["version"] > 5 and rng.random() < 0.05:
            return None
        caps = sorted({*prev["capabilities"], rng.choice(CAPABILITIES)})
        memories = [*prev["memory_ids"][-7:], world.ref("memory", lambda: world.serial("mem"))]
        maturity = round(min(1.0, prev["maturity"] + rng.random() * 0.1), 3)
        return {**prev, "maturity": maturity, "capabilities": caps, "memory_ids": memories,
                "status": rng.choice(("active", "active", "paused")),
                "state": dumps({"mode": "production" if maturity > 0.5 else "training"}),
                "updated_at": world.tick()}


class VectorLoad(StateLoad):
    """Embeddings of memories, clustered (as embeddings are); recomputed by a newer
    model now and then."""

    family = "vector"
    key = ("vector_id",)
    live = 64

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self._centres = [[self.rng.uniform(-5, 5) for _ in range(VECTOR_DIM)]
                         for _ in range(12)]

    def create(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        return {"vector_id": world.serial("vec"), "version": 1,
                "memory_id": world.ref("memory", lambda: world.serial("mem"))
                if rng.random() < 0.9 else None,
                "dimension": VECTOR_DIM,
                "embedding": _embedding(rng, rng.choice(self._centres)),
                "model": "mini-32-v1", "created_at": world.tick()}

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        rng = self.rng
        if prev["version"] > 2 and rng.random() < 0.1:
            return None
        return {**prev, "embedding": _embedding(rng, prev["embedding"]),
                "model": "mini-32-v2", "created_at": self.world.tick()}


class ReflexionEpisodeLoad(Load):
    """Learning episodes of intelligences: trigger, action, outcome, with context."""

    family = "reflexion_episode"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        return {"episode_id": world.uuid(), "ts": world.tick(),
                "intelligence_id": world.ref("intelligence", lambda: world.serial("intel")),
                "trigger": rng.choice(TRIGGERS), "action": rng.choice(ACTIONS),
                "outcome": rng.choice(OUTCOMES), "score": round(rng.random(), 3),
                "context": dumps({"attempt": rng.randint(1, 4),
                                  "memory": world.ref("memory",
                                                      lambda: world.serial("mem"))})}


class CausalEdgeLoad(Load):
    """Directed, weighted causal links between memories, each recorded once."""

    family = "causal_edge"

    def __next__(self) -> dict[str, Any]:
        rng, world = self.rng, self.world
        cause = world.ref("memory", lambda: world.serial("mem"))
        effect = world.ref("memory", lambda: world.serial("mem"))
        return {"edge_id": world.serial("edge"), "from_memory": cause, "to_memory": effect,
                "weight": round(rng.random(), 3), "edge_type": rng.choice(EDGE_TYPES),
                "created_at": world.tick()}
