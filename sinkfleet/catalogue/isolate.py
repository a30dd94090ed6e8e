"""A copy of a catalogue under fresh names: its own topics, tables and groups.

Benchmarks, tests and trials use it to run the real families side by side with a
live deployment (or each other) on one cluster and one database.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sinkfleet.catalogue.loader import Catalogue, load_catalogue


@dataclass
class IsolatedCatalogue:
    root: Path
    catalogue: Catalogue
    topics: dict[str, str] = field(default_factory=dict)  # original → copy
    sinks: dict[str, str] = field(default_factory=dict)  # original sink (= table) → copy
    groups: dict[str, str] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)  # worker spec names kept

    def sink(self, original: str) -> str:
        return self.sinks[original]


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def isolated_copy(source: Path, dest: Path, suffix: str, *, sinks: list[str] | None = None,
                  partitions: int | None = None) -> IsolatedCatalogue:
    """Copy ``sinks`` (default all) of the catalogue at ``source`` into ``dest``, every
    topic, table and group renamed with ``suffix`` (lower-case letters and digits)."""
    if not suffix.isalnum() or not suffix.islower():
        raise ValueError(f"suffix {suffix!r}: use lower-case letters and digits")
    for sub in ("schemas", "topics", "sinks", "workers"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    specs = {p: _yaml(p) for p in sorted((source / "sinks").glob("*.yaml"))}
    chosen = {s["name"]: (p, s) for p, s in specs.items()
              if sinks is None or s["name"] in sinks}
    missing = set(sinks or ()) - set(chosen)
    if missing:
        raise ValueError(f"no sinks {sorted(missing)} in {source / 'sinks'}")
    out = IsolatedCatalogue(dest, Catalogue(dest))
    wanted_topics = {s["topic"] for _, s in chosen.values()}
    for path in sorted((source / "topics").glob("*.yaml")):
        topic = _yaml(path)
        if topic["name"] not in wanted_topics:
            continue
        out.topics[topic["name"]] = f"{topic['name']}.{suffix}"
        topic["name"] = out.topics[topic["name"]]
        if topic.get("dead_letter_topic"):
            topic["dead_letter_topic"] = f"{topic['dead_letter_topic']}.{suffix}"
        if partitions is not None:
            topic["partitions"] = partitions
        shutil.copy(source / "schemas" / f"{topic['schema']}.avsc", dest / "schemas")
        (dest / "topics" / path.name).write_text(yaml.safe_dump(topic, sort_keys=False))
    out.sinks = {name: f"{name[:54 - len(suffix)]}_{suffix}"  # room for "_history"
                 for name in chosen}
    for name, (path, spec) in chosen.items():
        new = out.sinks[name]
        spec.update(name=new, table=new, topic=out.topics[spec["topic"]])
        if "references" in spec:
            # a reference follows its sink into the copy; one to a sink not copied
            # cannot resolve (the catalogue refuses it), so it is left out
            refs = [{**r, "sink": out.sinks[r["sink"]]} for r in spec.pop("references")
                    if r["sink"] in out.sinks]
            if refs:
                spec["references"] = refs
        if spec.get("state", {}).get("history_table"):
            spec["state"]["history_table"] = f"{new}_history"
        (dest / "sinks" / path.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    for path in sorted((source / "workers").glob("*.yaml")):
        worker = _yaml(path)
        kept = [out.sinks[s] for s in worker["sinks"] if s in out.sinks]
        if not kept:
            continue
        out.groups[worker["group"]] = f"{worker['group']}.{suffix}"
        worker.update(group=out.groups[worker["group"]], sinks=kept)
        out.workers.append(worker["name"])
        (dest / "workers" / path.name).write_text(yaml.safe_dump(worker, sort_keys=False))
    out.catalogue = load_catalogue(dest)
    return out
