"""Schema evolution rules: is a new schema compatible with the registered versions?

The verdict is the apache ``avro`` package's ``ReaderWriterCompatibilityChecker``
(the port of Java's ``SchemaCompatibility``); this module picks the reader/writer
pairs for a compatibility level (Confluent's names) and turns the checker's
locations and messages into one sentence per problem that names the field.
Pure: no I/O.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sinkfleet.errors import CatalogueError

Level = Literal["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                "FULL", "FULL_TRANSITIVE", "NONE"]
LEVELS: tuple[str, ...] = get_args(Level)
DEFAULT_LEVEL: Level = "BACKWARD"


@dataclass(frozen=True)
class Prior:
    """A previously registered schema: ``label`` names it in messages ("version 3")."""

    label: str
    schema: Any  # Avro JSON


def problems(family: str, new: Any, priors: Sequence[Prior], level: Level) -> list[str]:
    """One message per incompatibility of ``new`` with ``priors`` (oldest first) at
    ``level``; empty if compatible. BACKWARD: the new schema reads what the last prior
    wrote; FORWARD: the last prior reads what the new one writes; FULL: both;
    ``_TRANSITIVE``: against every prior, not only the last."""
    if level == "NONE" or not priors:
        return []
    targets = priors if level.endswith("_TRANSITIVE") else priors[-1:]
    base = level.removesuffix("_TRANSITIVE")
    reader_new = _parse(new, family, "the new schema")
    found: dict[tuple[str, bool], list[str]] = {}  # (what, backward?) -> prior labels
    for prior in targets:
        old = _parse(prior.schema, family, prior.label)
        if base in ("BACKWARD", "FULL"):
            for what in _pair(reader_new, old, backward=True):
                found.setdefault((what, True), []).append(prior.label)
        if base in ("FORWARD", "FULL"):
            for what in _pair(old, reader_new, backward=False):
                found.setdefault((what, False), []).append(prior.label)
    out = []
    for (what, backward), labels in found.items():
        which = " and ".join(dict.fromkeys(labels))
        if backward:
            out.append(f"{family}: {what}: records written with {which} cannot be read")
        else:
            out.append(f"{family}: {what}: readers still on {which} cannot read records"
                       " written with the new schema")
    return out


def _parse(schema: Any, family: str, label: str) -> Any:
    from avro.errors import AvroException
    from avro.schema import parse

    try:
        with warnings.catch_warnings():  # e.g. IgnoredLogicalType: not ours to report
            warnings.simplefilter("ignore")
            return parse(schema if isinstance(schema, str) else json.dumps(schema))
    except (AvroException, ValueError, TypeError, KeyError) as exc:
        raise CatalogueError(f"{family}: {label} is not a schema the avro package can"
                             f" check: {exc}") from None


def _checker() -> Any:
    from avro.compatibility import ReaderWriterCompatibilityChecker

    class Checker(ReaderWriterCompatibilityChecker):
        """The avro package's checker, with one fix: when it compares union branches it
        restarts the location at the root; here they keep their parent's location, so
        a field that lost ``null`` is named, not reported at ``/``."""

        def __init__(self) -> None:
            super().__init__()
            self._at: list[str] | None = None

        def get_compatibility(self, reader: Any, writer: Any, reference_token: str = "/",
                              location: list[str] | None = None) -> Any:
            if location is None and self._at is not None:
                location, reference_token = self._at, ""
            return super().get_compatibility(reader, writer, reference_token, location)

        def calculate_compatibility(self, reader: Any, writer: Any, location: list[str]
                                    ) -> Any:
            outer, self._at = self._at, location
            try:
                return super().calculate_compatibility(reader, writer, location)
            finally:
                self._at = outer

    return Checker()


def _pair(reader: Any, writer: Any, *, backward: bool) -> list[str]:
    """What makes ``reader`` unable to read ``writer``, one phrase per location."""
    from avro.compatibility import SchemaCompatibilityType

    checker = _checker()
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    why = _Why(checker, reader, writer, backward, set())
    return list(dict.fromkeys(why.describe(result)))


@dataclass
class _Why:
    """Turns one checker result into phrases (``backward``: the reader is the new
    schema and the writer an old one; else the other way round)."""

    checker: Any
    reader: Any
    writer: Any
    backward: bool
    seen: set[int]  # ids of memoised results already described (recursive schemas)

    def describe(self, result: Any) -> Iterator[str]:
        if id(result) in self.seen:
            return
        self.seen.add(id(result))
        # merge() adds a compatible result's default location "/" to the others
        locations = sorted(result.locations - {"/"}) or ["/"]
        for location in locations:
            spot = _walk(self.reader, self.writer, location)
            yield from _explain(self, spot, set(result.messages))


@dataclass
class _Spot:
    """Where a location points: the field path, the reader and writer schemas there
    (the writer's may be unknown), and how the location ends."""

    path: list[str]
    reader: Any
    writer: Any
    end: str  # "field" (a reader field, no type below), "name", "size", "symbols",
    #           "branch" (a writer union branch: ``index``), or "type"
    index: int = -1

    @property
    def name(self) -> str:
        text = ""
        for part in self.path:
            text += part if part.startswith("[") or not text else f".{part}"
        return text


_DESCEND = {"fields": "record", "items": "array", "values": "map", "symbols": "enum",
            "size": "fixed"}


def _branch(node: Any, kind: str | None, like: Any = None) -> Any:
    """The branch of a union ``node`` that a location continues into."""
    if node is None or node.type != "union":
        return node
    candidates = [b for b in node.schemas if kind is None or b.type == kind]
    if like is not None and getattr(like, "fullname", None):
        named = [b for b in candidates if getattr(b, "fullname", None) == like.fullname]
        candidates = named or candidates
    return candidates[0] if candidates else None


def _walk(reader: Any, writer: Any, location: str) -> _Spot:
    from avro.compatibility import lookup_writer_field

    tokens = [t for t in location.split("/") if t]
    spot = _Spot([], reader, writer, "type")
    i = 0
    while i < len(tokens):
        token = tokens[i]
        kind = _DESCEND.get(token)
        if kind is not None or token == "name":
            spot.reader = _branch(spot.reader, kind)
            spot.writer = _branch(spot.writer, kind, spot.reader)
        r, w = spot.reader, spot.writer
        if token == "fields" and i + 1 < len(tokens) and r is not None:
            field = r.fields[int(tokens[i + 1])]
            found = lookup_writer_field(w, field) if w is not None else None
            spot.path.append(field.name)
            spot.reader, spot.writer, spot.end = field, found, "field"
            i += 2
            continue
        if token == "type":
            spot.reader = r.type if r is not None else None
            spot.writer = w.type if w is not None else None
            spot.end = "type"
        elif token in ("items", "values"):
            spot.path.append("[]" if token == "items" else "[*]")
            spot.reader = getattr(r, token, None)
            spot.writer = getattr(w, token, None)
            spot.end = "type"
        elif token.isdigit():
            spot.end, spot.index = "branch", int(token)
        elif token in ("name", "size", "symbols"):
            spot.end = token
        i += 1
    return spot


def _type_label(node: Any) -> str:
    if node is None:
        return "?"
    if node.type == "union":
        return "[" + ", ".join(_type_label(b) for b in node.schemas) + "]"
    return getattr(node, "fullname", None) or node.type


def _explain(why: _Why, spot: _Spot, messages: set[str]) -> Iterator[str]:
    backward = why.backward
    field = f"field {spot.name!r}" if spot.path else "the record"
    if spot.end == "field":  # a reader field the writer lacks, without a default
        if backward:
            yield f"{field} was added without a default"
        else:
            yield f"{field} was removed, and the old schema has no default for it"
        return
    if spot.end == "name":
        theirs = next((m.removeprefix("expected: ") for m in messages
                       if m.startswith("expected: ") and "found" not in m), "?")
        ours = _type_label(spot.reader)
        before, after = (theirs, ours) if backward else (ours, theirs)
        yield (f"{field}: type {before} was renamed to {after} (name the old one in"
               " \"aliases\")")
        return
    if spot.end == "size":
        yield f"{field}: the fixed size changed from {_type_size(spot, backward)}"
        return
    if spot.end == "symbols":
        symbols = _symbols(spot)
        change = "removed" if backward else "added"
        owner = "new" if backward else "old"
        yield f"{field}: enum symbols {symbols} were {change}, and the {owner} enum has no default"
        return
    if spot.reader is not None and (spot.end == "branch" or spot.reader.type == "union"):
        deeper = list(_union_detail(why, spot))
        if deeper:
            yield from deeper
            return
    reads = _reader_types(spot.reader)
    wrote = sorted({m.split("writer type: ", 1)[1] for m in messages
                    if m.startswith("reader type: ") and m.split(" ")[2] in reads}
                   & _writer_types(spot))
    if spot.end == "branch" or not wrote:
        lacking = sorted({m.split("writer type", 1)[1].strip(": ").lower() for m in messages
                          if m.startswith("reader union lacking")} & _writer_types(spot))
        wrote = wrote or lacking or sorted(_writer_types(spot))
    what = " or ".join(wrote)
    if backward:
        yield f"{field}: the new type {_type_label(spot.reader)} cannot read {what}"
    else:
        yield f"{field}: the old type {_type_label(spot.reader)} cannot read the new {what}"


def _symbols(spot: _Spot) -> str:
    ours = set(getattr(spot.reader, "symbols", ()) or ())
    theirs = set(getattr(spot.writer, "symbols", ()) or ())
    return ", ".join(sorted(theirs - ours)) or "?"


def _type_size(spot: _Spot, backward: bool) -> str:
    ours, theirs = getattr(spot.reader, "size", "?"), getattr(spot.writer, "size", "?")
    before, after = (theirs, ours) if backward else (ours, theirs)
    return f"{before} to {after}"


def _reader_types(node: Any) -> set[str]:
    if node is None:
        return set()
    if node.type == "union":
        return {b.type for b in node.schemas}
    return {node.type}


def _writer_types(spot: _Spot) -> set[str]:
    node = spot.writer
    if node is None:
        return set()
    if node.type == "union":
        if spot.end == "branch" and 0 <= spot.index < len(node.schemas):
            return {node.schemas[spot.index].type}
        return {b.type for b in node.schemas}
    return {node.type}


def _union_detail(why: _Why, spot: _Spot) -> Iterator[str]:
    """A union branch that no longer matches because of a change inside it (a field of
    a nullable record, say): name that change, from the checker's memoised results."""
    from avro.compatibility import SchemaCompatibilityType

    w = spot.writer
    if w is None:
        return
    branches = ([w.schemas[spot.index]] if w.type == "union" and spot.end == "branch"
                and 0 <= spot.index < len(w.schemas) else
                list(w.schemas) if w.type == "union" else [w])
    readers = list(spot.reader.schemas) if spot.reader.type == "union" else [spot.reader]
    for branch in branches:
        for candidate in readers:
            if candidate.type != branch.type or candidate.type not in (
                    "record", "array", "map", "enum", "fixed"):
                continue
            if getattr(candidate, "fullname", None) not in (
                    None, getattr(branch, "fullname", None)):
                continue
            for pair, result in why.checker.memoize_map.items():
                if (pair.reader is candidate and pair.writer is branch and
                        result.compatibility is SchemaCompatibilityType.incompatible):
                    yield from why.describe(result)
