"""Building blocks of the synthetic loads (pure, deterministic for a given seed).

A :class:`World` holds what the loads share — tenants, agents, and the ids of
workflows, tasks, jobs, workers and policies recently published — so that a mixed
load refers to things that exist (a memory entry's task, a worker event's job).
A :class:`StateLoad` publishes versions of entities: each id's versions increase,
now and then an older version is re-published (a stale writer) and now and then a
finished entity is deleted with a :class:`Tombstone`.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

STALE_P = 0.03   # share of a state load's records that re-publish an older version
DELETE_P = 0.3   # chance that a finished entity is deleted (a tombstone) when retired


@dataclass(frozen=True)
class Tombstone:
    """A state deletion: ``key`` holds the values of the topic's key fields, in order
    (publish it with ``Publisher.delete(family, *key)``)."""

    key: tuple[Any, ...]


Item = dict[str, Any] | Tombstone


def dumps(value: Any) -> str:
    """Compact JSON text, as agents send it."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class World:
    """Ids shared by the loads of one run; ``prefix`` keeps test runs apart."""

    def __init__(self, rng: random.Random, *, prefix: str = "", tenants: int = 8,
                 agents: int = 32, start_us: int | None = None) -> None:
        self.rng = rng
        self.prefix = prefix
        self.tenants = [f"{prefix}tenant-{i:03d}" for i in range(tenants)]
        self.agents = [f"{prefix}agent-{i:04d}" for i in range(agents)]
        self.clock = int(time.time() * 1_000_000) if start_us is None else start_us
        self.tasks: deque[tuple[str, str, str]] = deque(maxlen=512)  # tenant, workflow, task
        self.workflows: deque[tuple[str, str]] = deque(maxlen=256)  # tenant, workflow
        self.jobs: deque[str] = deque(maxlen=256)
        self.workers: deque[tuple[str, str | None]] = deque(maxlen=256)  # worker, job
        self.policies: deque[tuple[str, int]] = deque(maxlen=256)  # state bin, version
        self.events: deque[bytes] = deque(maxlen=256)  # experience event ids
        self.pools: dict[str, deque[Any]] = {}  # kind -> ids of other families (seeds 001, 004)
        self._serial = 0

    def tick(self, low: int = 200, high: int = 20_000) -> int:
        """Advance the shared clock (µs since the epoch) and return it."""
        self.clock += self.rng.randint(low, high)
        return self.clock

    def serial(self, kind: str) -> str:
        """A new readable id such as ``wf-000123``, unique within the run."""
        self._serial += 1
        return f"{self.prefix}{kind}-{self._serial:06d}"

    def uuid(self) -> str:
        """A random UUID, reproducible for a seed; with a ``prefix``, a different one for
        each prefix (uuid-keyed families of two runs never share ids)."""
        value = uuid.UUID(int=self.rng.getrandbits(128), version=4)
        return str(uuid.uuid5(value, self.prefix) if self.prefix else value)

    def pick(self, pool: deque[Any]) -> Any:
        return pool[self.rng.randrange(len(pool))] if pool else None

    # References into other families: a recently published id, or (while fewer than a
    # handful exist, e.g. when one family is produced on its own) a plausible new one.
    def workflow(self, tenant: str | None = None) -> tuple[str, str]:
        found = self._pick_of(self.workflows, tenant)
        if found is None:
            found = (tenant or self.rng.choice(self.tenants), self.serial("wf"))
            self.workflows.append(found)
        return found

    def task(self, tenant: str | None = None) -> tuple[str, str, str]:
        found = self._pick_of(self.tasks, tenant)
        if found is None:
            found = (*self.workflow(tenant), self.serial("task"))
            self.tasks.append(found)
        return found

    def job(self) -> str:
        if len(self.jobs) < 8:
            self.jobs.append(self.serial("job"))
        return self.pick(self.jobs)

    def worker(self) -> tuple[str, str | None]:
        if len(self.workers) < 8:
            self.workers.append((self.serial("tadpole"), self.job()))
        return self.pick(self.workers)

    def policy(self) -> tuple[str, int]:
        if len(self.policies) < 8:
            self.policies.append((self.serial("bin"), 1))
        return self.pick(self.policies)

    def add(self, kind: str, ident: Any) -> None:
        """Remember a published id of ``kind`` for other loads to refer to."""
        self.pools.setdefault(kind, deque(maxlen=256)).append(ident)

    def ref(self, kind: str, new: Any) -> Any:
        """A recently published id of ``kind``; while fewer than a handful exist, the id
        ``new()`` makes (remembered): a reference to a record not published yet, as
        asynchronous producers make them (docs/references.md)."""
        pool = self.pools.setdefault(kind, deque(maxlen=256))
        if len(pool) < 8:
            pool.append(new())
        return self.pick(pool)

    def _pick_of(self, pool: deque[Any], tenant: str | None) -> Any:
        if len(pool) < 8:
            return None
        for _ in range(8):
            found = self.pick(pool)
            if tenant is None or found[0] == tenant:
                return found
        return None


class Load:
    """An endless, reproducible stream of one family's records."""

    family = ""

    def __init__(self, seed: int = 0, *, world: World | None = None, prefix: str = "",
                 agents: int = 32, start_us: int | None = None) -> None:
        self.rng = random.Random(f"{self.family}:{seed}")
        self.world = world or World(self.rng, prefix=prefix, agents=agents, start_us=start_us)

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        raise NotImplementedError


class StateLoad(Load):
    """Versions of entities keyed by ``key`` (the topic's key fields, in order).

    Subclasses say how an entity starts (:meth:`create`), how it changes
    (:meth:`update`, which returns None once the entity is finished) and how many are
    live at once (``live``).
    """

    key: tuple[str, ...] = ()
    live = 24

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self._live: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._versions: dict[tuple[Any, ...], int] = {}  # last version ever published
        self._older: dict[tuple[Any, ...], list[dict[str, Any]]] = {}  # earlier versions
        self._pending: deque[Item] = deque()

    def create(self) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, prev: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    def id_of(self, record: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(record[k] for k in self.key)

    def __next__(self) -> Item:
        if self._pending:
            return self._pending.popleft()
        rng = self.rng
        if self._older and rng.random() < STALE_P:
            ident = rng.choice(list(self._older))
            return dict(rng.choice(self._older[ident]))  # a stale writer's old version
        if len(self._live) < self.live and (not self._live or rng.random() < 0.25):
            created = self.create()
            # An id deleted (or retired) before and created again continues its versions.
            created["version"] = self._versions.get(self.id_of(created), 0) + 1
            self._remember(created)
            return created
        ident = rng.choice(list(self._live))
        prev = self._live[ident]
        record = self.update(dict(prev))
        if record is None:  # finished: retire it, and sometimes delete it
            del self._live[ident]
            self._older.pop(ident, None)
            if rng.random() < DELETE_P:
                return Tombstone(ident)
            return next(self)
        record["version"] = prev["version"] + 1
        self._remember(record)
        return record

    def _remember(self, record: dict[str, Any]) -> None:
        ident = self.id_of(record)
        prev = self._live.get(ident)
        if prev is not None:
            older = self._older.setdefault(ident, [])
            older.append(prev)
            del older[:-4]
        self._live[ident] = record
        self._versions[ident] = record["version"]
