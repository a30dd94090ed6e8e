"""Synthetic CRDT state for the merge families (docs/merge-mode.md): distributed metrics
and capability sets (seed 003), skill success counts (seed 004).

Each record is one replica's whole state for one id, as a state-based CRDT publishes
it: its count so far, its sets so far. A replica's state only grows (an or_set removes
by adding tombstones), so any order of these records joins to the same row.
"""

from __future__ import annotations

from typing import Any

from sinkfleet.dev.synthetic.base import Load

METRICS = ("tasks_completed", "active_tadpoles", "tokens_spent", "jobs_failed")
SCOPES = ("mesh", "pool", "agent")
CAPABILITIES = ("retrieval", "planning", "coding", "analysis", "vision", "negotiation",
                "summarise", "translate")


class MergeLoad(Load):
    """Replicas (``replicas`` of them) updating ``ids`` ids; subclasses say how one
    replica's state of one id starts (:meth:`start`) and grows (:meth:`grow`)."""

    replicas = 4
    ids = 24

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self._ids: list[tuple[Any, ...]] = []
        self._states: dict[tuple[Any, ...], dict[str, Any]] = {}  # (id, replica) -> state
        self._replicas = [f"{self.world.prefix}replica-{i}" for i in range(self.replicas)]

    def new_id(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def start(self, ident: tuple[Any, ...], replica: str) -> dict[str, Any]:
        raise NotImplementedError

    def grow(self, state: dict[str, Any], replica: str) -> None:
        raise NotImplementedError

    def record(self, ident: tuple[Any, ...], replica: str, state: dict[str, Any]
               ) -> dict[str, Any]:
        raise NotImplementedError

    def __next__(self) -> dict[str, Any]:
        rng = self.rng
        if len(self._ids) < self.ids and (not self._ids or rng.random() < 0.2):
            self._ids.append(self.new_id())
        ident = rng.choice(self._ids)
        replica = rng.choice(self._replicas)
        state = self._states.get((*ident, replica))
        if state is None:
            state = self._states[(*ident, replica)] = self.start(ident, replica)
        self.grow(state, replica)
        return self.record(ident, replica, state)


class DistributedMetricLoad(MergeLoad):
    """Counters of a mesh, a job pool or an agent: a grow-only total, a level that goes
    up and down, who reported, and the latest observation."""

    family = "distributed_metric"

    def new_id(self) -> tuple[Any, ...]:
        scope = f"{self.rng.choice(SCOPES)}-{self.world.serial('scope')}"
        return scope, self.rng.choice(METRICS)

    def start(self, ident: tuple[Any, ...], replica: str) -> dict[str, Any]:
        return {"total": 0, "inc": 0, "dec": 0, "reporters": set(),
                "gauge": ident[1] == "active_tadpoles"}

    def grow(self, state: dict[str, Any], replica: str) -> None:
        rng = self.rng
        state["total"] += rng.randint(1, 20)
        state["inc"] += rng.randint(0, 3)
        state["dec"] += rng.randint(0, 2)
        state["reporters"].add(replica if rng.random() < 0.7 else rng.choice(
            self.world.agents))

    def record(self, ident: tuple[Any, ...], replica: str, state: dict[str, Any]
               ) -> dict[str, Any]:
        return {"scope": ident[0], "metric": ident[1], "replica_id": replica,
                # a gauge-like metric has a level and no total, a count the reverse
                "total": None if state["gauge"] else state["total"],
                "level": {"increments": state["inc"], "decrements": state["dec"]}
                if state["gauge"] else None,
                "reporters": sorted(state["reporters"]), "observed_at": self.world.tick()}


class CapabilitySetLoad(MergeLoad):
    """An owner's capabilities as an observed-remove set: a replica adds a capability
    with a fresh tag, or removes one with the tags it has observed."""

    family = "capability_set"

    def new_id(self) -> tuple[Any, ...]:
        return (self.world.serial("owner"),)

    def start(self, ident: tuple[Any, ...], replica: str) -> dict[str, Any]:
        return {"adds": {}, "removes": set(), "ever": set(), "n": 0}

    def grow(self, state: dict[str, Any], replica: str) -> None:
        rng = self.rng
        state["n"] += 1
        if state["adds"] and rng.random() < 0.3:
            element = rng.choice(sorted(state["adds"]))
            state["removes"] |= state["adds"].pop(element)
            return
        element = rng.choice(CAPABILITIES)
        state["adds"].setdefault(element, set()).add(f"{replica}:{state['n']}")
        state["ever"].add(element)

    def record(self, ident: tuple[Any, ...], replica: str, state: dict[str, Any]
               ) -> dict[str, Any]:
        return {"owner_id": ident[0], "replica_id": replica,
                "capabilities": {"adds": {e: sorted(t) for e, t in state["adds"].items()},
                                 "removes": sorted(state["removes"])},
                "ever_held": sorted(state["ever"]), "observed_at": self.world.tick()}


class SkillUseLoad(MergeLoad):
    """Skills' success counts, each replica counting its own (seed 004's
    increment_skill_success)."""

    family = "skill_use"

    def new_id(self) -> tuple[Any, ...]:
        return (self.world.ref("skill", lambda: self.world.serial("skill")),)

    def start(self, ident: tuple[Any, ...], replica: str) -> dict[str, Any]:
        return {"successes": 0}

    def grow(self, state: dict[str, Any], replica: str) -> None:
        state["successes"] += self.rng.randint(1, 3)

    def record(self, ident: tuple[Any, ...], replica: str, state: dict[str, Any]
               ) -> dict[str, Any]:
        return {"skill_id": ident[0], "replica_id": replica,
                "successes": state["successes"], "last_used": self.world.tick()}
