"""A merge family holding every CRDT kind, a Python model of its join, and the project's
seed 003 merge families as test families (the files under schemas/, topics/, sinks/)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sinkfleet.config import Settings
from tests.support.catalogue import ROOT
from tests.support.family import Family, make_family

SCHEMA = {
    "type": "record", "name": "crdt_all", "namespace": "test.sinkfleet",
    "fields": [
        {"name": "key", "type": "string"},
        {"name": "replica", "type": "string"},
        {"name": "hits", "type": ["null", "long"], "default": None},
        {"name": "level", "type": ["null", {"type": "record", "name": "Pn", "fields": [
            {"name": "increments", "type": "long"}, {"name": "decrements", "type": "long"}]}],
         "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "caps", "type": {"type": "record", "name": "Or", "fields": [
            {"name": "adds", "type": {"type": "map",
                                      "values": {"type": "array", "items": "string"}}},
            {"name": "removes", "type": {"type": "array", "items": "string"}}]}},
        {"name": "seen", "type": "long"},
    ],
}
TOPIC = {"key": ["key"]}
SINK = {
    "mode": "merge", "id": ["key"],
    "merge": {"replica": "replica", "crdts": {"hits": "g_counter", "level": "pn_counter",
                                              "tags": "g_set", "caps": "or_set",
                                              "seen": "max"}},
    "columns": [{"name": f["name"], "from": f["name"]} for f in SCHEMA["fields"]]
    + [{"name": "first_seen_at", "default": "now()"}],
}


async def make_crdt_family(tmp: Path, stack: Settings) -> Family:
    return await make_family(tmp, stack, SCHEMA, TOPIC, SINK)


async def project_family(tmp: Path, stack: Settings, sink_name: str) -> Family:
    """The project catalogue's sink ``sink_name`` (its schema, topic and sink files) under
    unique names: the family as shipped, not a test's copy of it."""
    sink = yaml.safe_load((ROOT / "sinks" / f"{sink_name}.yaml").read_text())
    topic = next(t for p in (ROOT / "topics").glob("*.yaml")
                 if (t := yaml.safe_load(p.read_text()))["name"] == sink["topic"])
    schema = json.loads((ROOT / "schemas" / f"{topic['schema']}.avsc").read_text())
    # make_family names the family, files and tables by the record's name. A family of
    # its own ("<family>_shipped"): the schema registry is shared by every test, and the
    # shipped family's name must stay bound to the shipped schema (a demo, the worker
    # tests of that family).
    schema["name"] = f"{topic['schema']}_shipped"
    topic = {k: v for k, v in topic.items() if k not in ("name", "schema", "partitions")}
    sink = {k: v for k, v in sink.items() if k not in ("name", "topic", "table")}
    return await make_family(tmp, stack, schema, topic, sink)


@dataclass
class Replica:
    """One replica's CRDT states; each operation publishes its whole state."""

    name: str
    hits: int = 0
    inc: int = 0
    dec: int = 0
    tags: set[str] = field(default_factory=set)
    adds: dict[str, set[str]] = field(default_factory=dict)
    removes: set[str] = field(default_factory=set)
    n: int = 0
    seen: int = 0

    def apply(self, op: str, element: str, key: str) -> dict[str, Any]:
        self.n += 1
        self.seen = max(self.seen, self.n * 7 % 11)
        if op == "hit":
            self.hits += 1
        elif op == "inc":
            self.inc += 2
        elif op == "dec":
            self.dec += 1
        elif op == "tag":
            self.tags.add(element)
        elif op == "add":  # a fresh, unique add tag
            self.adds.setdefault(element, set()).add(f"{self.name}:{self.n}")
        elif op == "remove":  # the tags this replica observed for the element
            self.removes |= self.adds.pop(element, set())
        return self.record(key)

    def record(self, key: str) -> dict[str, Any]:
        return {"key": key, "replica": self.name, "hits": self.hits,
                "level": {"increments": self.inc, "decrements": self.dec},
                "tags": sorted(self.tags),
                "caps": {"adds": {e: sorted(t) for e, t in self.adds.items()},
                         "removes": sorted(self.removes)},
                "seen": self.seen}


def expected_values(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The joined values of ``records`` (one id), computed in Python: the model the SQL
    joins must agree with."""
    hits: dict[str, int] = {}
    level: dict[str, tuple[int, int]] = {}
    adds: set[tuple[str, str]] = set()
    removes: set[str] = set()
    tags: set[str] = set()
    for r in records:
        rep = r["replica"]
        hits[rep] = max(hits.get(rep, 0), r["hits"])
        p, n = level.get(rep, (0, 0))
        level[rep] = (max(p, r["level"]["increments"]), max(n, r["level"]["decrements"]))
        tags |= set(r["tags"])
        adds |= {(e, t) for e, ts in r["caps"]["adds"].items() for t in ts}
        removes |= set(r["caps"]["removes"])
    return {"hits": sum(hits.values()), "level": sum(p - n for p, n in level.values()),
            "tags": sorted(tags), "caps": sorted({e for e, t in adds if t not in removes}),
            "seen": max(r["seen"] for r in records)}
