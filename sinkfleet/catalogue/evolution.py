"""Schema evolution of the catalogue: where each family's schema stands against its
earlier versions (registered in PostgreSQL, or .avsc files for CI without a
database), and the refusal of incompatible changes. The verdict comes from
``sinkfleet.avro.compat`` (the avro package's checker). No database access here:
``sinkfleet.sink.postgres.schema_versions`` feeds it registered versions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sinkfleet.avro.codec import SchemaStore, schema_fingerprint
from sinkfleet.avro.compat import DEFAULT_LEVEL, Level, Prior, problems
from sinkfleet.catalogue.loader import Catalogue
from sinkfleet.errors import CatalogueError, ConfigError, DecodeError, SchemaIncompatible


@dataclass(frozen=True)
class Known:
    """An earlier version of a family's schema, from the registry or a file."""

    label: str  # "version 3" or a file name, as messages name it
    version: int | None
    fingerprint: bytes
    schema: Any  # Avro JSON


@dataclass
class FamilyStatus:
    """Where a catalogue schema stands against its family's earlier versions."""

    family: str
    level: Level
    fingerprint: bytes
    text: str  # the exact .avsc text (what `register` stores)
    known: list[Known]
    same_as: Known | None  # an earlier version with this very schema
    problems: list[str] = field(default_factory=list)

    @property
    def latest(self) -> Known | None:
        return self.known[-1] if self.known else None

    @property
    def is_new_version(self) -> bool:
        return self.same_as is None

    @property
    def next_version(self) -> int:
        return max((k.version or 0 for k in self.known), default=0) + 1

    def summary(self) -> str:
        latest = self.latest
        if self.problems:
            return f"{self.family}: incompatible ({self.level})"
        if latest is None:
            return f"{self.family}: new family (nothing to check against)"
        if self.same_as is latest:
            return f"{self.family}: unchanged ({latest.label})"
        if self.same_as is not None:
            return f"{self.family}: same as {self.same_as.label}; compatible with" \
                   f" {latest.label} ({self.level})"
        return f"{self.family}: compatible with {latest.label} ({self.level})"


def families_of(cat: Catalogue, only: Sequence[str] | None = None) -> list[str]:
    """The catalogue's families (``schemas/*.avsc``), or ``only`` after checking them."""
    if not only:
        return sorted(cat.schemas)
    unknown = sorted(set(only) - set(cat.schemas))
    if unknown:
        known = ", ".join(sorted(cat.schemas)) or "none"
        raise CatalogueError(f"no schema {', '.join(unknown)} in schemas/ (families: {known})")
    return sorted(set(only))


def level_of(cat: Catalogue, family: str) -> Level:
    """``compatibility:`` of the topics carrying ``family`` (they must agree)."""
    levels = {t.compatibility for t in cat.topics.values()
              if t.schema_ == family and t.compatibility is not None}
    if len(levels) > 1:
        raise CatalogueError(f"the topics carrying {family} set different compatibility levels"
                             f" ({', '.join(sorted(levels))}): set the same one in each")
    return cast(Level, levels.pop()) if levels else DEFAULT_LEVEL


def fingerprint_of(schema: Any) -> bytes:
    """The fingerprint publishers frame records with (``Codec.fingerprint``)."""
    return schema_fingerprint(SchemaStore().add(schema))


def assess(cat: Catalogue, family: str, known: list[Known]) -> FamilyStatus:
    """Check ``family``'s catalogue schema against ``known`` (oldest first)."""
    text = (cat.root / "schemas" / f"{family}.avsc").read_text()
    schema = cat.schemas[family]
    fp, level = fingerprint_of(schema), level_of(cat, family)
    same = [k for k in known if k.fingerprint == fp]
    status = FamilyStatus(family, level, fp, text, known, same[-1] if same else None)
    if status.same_as is not None and status.same_as is status.latest:
        return status  # registered as the latest version: checked when it was registered
    priors = [Prior(k.label, k.schema) for k in known if k.fingerprint != fp]
    status.problems = problems(family, schema, priors, level)
    return status


def refuse_incompatible(statuses: Sequence[FamilyStatus]) -> None:
    """Raise ``SchemaIncompatible`` listing every problem, if there is one."""
    bad = [s for s in statuses if s.problems]
    if not bad:
        return
    lines = [p for s in bad for p in s.problems]
    levels = ", ".join(f"{s.family} {s.level}" for s in bad)
    lines.append(f"incompatible schema change refused (compatibility: {levels}): give added"
                 " fields a default, change types only as Avro promotes them, or set"
                 " `compatibility:` in the family's topic spec (topics/*.yaml)")
    raise SchemaIncompatible("\n".join(lines))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogueError(f"{path}: not a readable JSON schema: {exc}") from None


def known_in_dir(directory: Path, family: str) -> list[Known]:
    """``DIR/<family>/<N>.avsc`` (version N, in order), then ``DIR/<family>.avsc`` (the
    latest, e.g. the schemas/ folder of the main branch)."""
    paths: list[tuple[Path, int | None]] = []
    sub = directory / family
    if sub.is_dir():
        numbered = [(p, int(p.stem) if p.stem.isdigit() else None) for p in sub.glob("*.avsc")]
        paths += sorted(numbered, key=lambda pv: (pv[1] is None, pv[1] or 0, pv[0].name))
    if (directory / f"{family}.avsc").is_file():
        paths.append((directory / f"{family}.avsc", None))
    known = []
    for path, version in paths:
        schema = _read(path)
        try:
            fp = fingerprint_of(schema)
        except DecodeError as exc:
            raise CatalogueError(f"{path}: {exc}") from None
        label = f"version {version}" if version is not None else f"the schema in {path}"
        known.append(Known(label, version, fp, schema))
    return known


def check_against_dir(cat: Catalogue, directory: Path,
                      only: Sequence[str] | None = None) -> list[FamilyStatus]:
    if not directory.is_dir():
        raise ConfigError(f"--against {directory}: not a directory of .avsc files")
    return [assess(cat, f, known_in_dir(directory, f)) for f in families_of(cat, only)]
