"""What keeps decoding untrusted bytes bounded (pure, no I/O). See docs/avro.md.

fastavro's Cython reader checks lengths on the read path, but it has no recursion limit
(a recursive schema lets a ~5 KB message overflow the C stack: segfault) and its skip
path (writer fields the reader dropped) never notices the end of the input (a huge block
count of floats spins for hours). This module closes what schema admission can close:

* ``check_schema_depth`` — on the raw schema, before fastavro parses it (its parser
  recurses in C too);
* ``check_bounded`` — arrays of zero-width items, records that can never end;
* ``is_recursive`` / ``scan_body`` — values of recursive schemas are walked here first,
  strictly and with a depth limit, before fastavro sees them.
"""

from __future__ import annotations

from typing import Any

from sinkfleet.errors import DecodeError

MAX_SCHEMA_DEPTH = 100  # nested records/arrays/maps/unions in a schema; ~1 KB C stack each
MAX_SCHEMA_NODES = 100_000
DEFAULT_MAX_DEPTH = 100  # nesting of one decoded value of a recursive schema
MAX_DEPTH_CAP = 300  # the walk recurses in Python (≤ 2 frames a level), fastavro in C

_RECORDS = frozenset({"record", "error"})
_NAMED = _RECORDS | {"enum", "fixed"}


def _kind(node: dict[str, Any]) -> Any:
    """A schema dict's "type": a string, or a nested schema (dict or union list)."""
    return node.get("type")


def _is(kind: Any, group: frozenset[str]) -> bool:
    return isinstance(kind, str) and kind in group


def check_schema_depth(schema: Any, limit: int = MAX_SCHEMA_DEPTH) -> None:
    """Refuse a raw schema nested deeper than ``limit`` (iterative: safe on any input)."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > limit:
            raise DecodeError(f"schema nests deeper than {limit} levels; refused")
        if nodes > MAX_SCHEMA_NODES:
            raise DecodeError(f"schema has more than {MAX_SCHEMA_NODES} types; refused")
        if isinstance(node, list):
            stack.extend((branch, depth + 1) for branch in node)
        elif isinstance(node, dict):
            for key in ("type", "items", "values"):
                child = node.get(key)
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
            fields = node.get("fields")
            if isinstance(fields, list):
                for f in fields:
                    if isinstance(f, dict) and isinstance(f.get("type"), dict | list):
                        stack.append((f["type"], depth + 1))


def definitions(parsed: Any) -> dict[str, Any]:
    """Every named type of a parsed schema by full name (each is defined once, inline)."""
    found: dict[str, Any] = {}
    stack = [parsed]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            kind = _kind(node)
            if _is(kind, _NAMED) and "name" in node:
                found[node["name"]] = node
            if _is(kind, _RECORDS):
                stack.extend(f["type"] for f in node["fields"])
            elif kind == "array":
                stack.append(node["items"])
            elif kind == "map":
                stack.append(node["values"])
            elif isinstance(kind, dict | list):
                stack.append(kind)
    return found


def _children(node: Any) -> list[Any]:
    """The types directly inside ``node``, not following named references."""
    if isinstance(node, list):
        return list(node)
    if isinstance(node, dict):
        kind = _kind(node)
        if _is(kind, _RECORDS):
            return [f["type"] for f in node["fields"]]
        if kind == "array":
            return [node["items"]]
        if kind == "map":
            return [node["values"]]
        if isinstance(kind, dict | list):
            return [kind]
    return []


def _references(node: Any) -> set[str]:
    """Named types ``node`` refers to, by name or by an inline definition."""
    refs: set[str] = set()
    stack = _children(node)
    while stack:
        child = stack.pop()
        if isinstance(child, str):
            refs.add(child)
        elif isinstance(child, dict) and _is(_kind(child), _NAMED) and "name" in child:
            refs.add(child["name"])  # its own definition is a node of the graph
        else:
            stack.extend(_children(child))
    return refs


def is_recursive(parsed: Any) -> bool:
    """Whether a named type of ``parsed`` contains itself (so values can nest unboundedly)."""
    named = definitions(parsed)
    graph = {name: _references(node) & named.keys() for name, node in named.items()}
    for start in graph:
        seen: set[str] = set()
        stack = list(graph[start])
        while stack:
            name = stack.pop()
            if name == start:
                return True
            if name not in seen:
                seen.add(name)
                stack.extend(graph[name])
    return False


def _zero_width(schema: Any, named: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether a value of ``schema`` is encoded in zero bytes."""
    if isinstance(schema, str):
        if schema == "null":
            return True
        if schema in named and schema not in seen:
            return _zero_width(named[schema], named, seen | {schema})
        return False
    if isinstance(schema, dict):
        kind = _kind(schema)
        if _is(kind, _RECORDS):
            return all(_zero_width(f["type"], named, seen) for f in schema["fields"])
        if kind == "fixed":
            return int(schema.get("size", 1)) == 0
        if isinstance(kind, str | dict) and kind not in ("array", "map", "enum"):
            return _zero_width(kind, named, seen)
    return False


def _can_end(schema: Any, ends: dict[str, bool]) -> bool:
    """Whether ``schema`` has a finite value, given which named records do (``ends``)."""
    if isinstance(schema, str):
        return ends.get(schema, True)
    if isinstance(schema, list):
        return any(_can_end(branch, ends) for branch in schema)
    kind = _kind(schema)
    if _is(kind, _RECORDS):
        return all(_can_end(f["type"], ends) for f in schema["fields"])
    if isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in _NAMED
                                          and kind not in ("array", "map")):
        return _can_end(kind, ends)
    return True  # array, map (may be empty), enum, fixed


def check_bounded(parsed: Any) -> None:
    """Refuse schemas whose decoding could loop or recurse without reading bytes."""
    named = definitions(parsed)

    # A record every value of which contains itself (no null branch, array or map on the
    # way) has no finite value; fastavro recurses on it without reading a byte.
    records = [name for name, node in named.items() if _is(_kind(node), _RECORDS)]
    ends = dict.fromkeys(records, False)
    changed = True
    while changed:
        changed = False
        for name in records:
            if not ends[name] and _can_end(named[name], ends):
                ends[name] = changed = True
    for name in records:
        if not ends[name]:
            raise DecodeError(f"schema record {name} always contains itself, so no value of"
                              " it can end; make the recursive field a union with null,"
                              " an array or a map")

    # An array of zero-width items: a block count reads no item bytes at all.
    stack = [parsed]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and node.get("type") == "array" and _zero_width(
                node["items"], named):
            raise DecodeError("schema has an array of zero-width items (e.g. null);"
                              " it cannot be decoded safely")
        stack.extend(_children(node))


_SKIPPED_BLIND = frozenset({"null", "boolean", "float", "double"})


def _skipped_blind(schema: Any, named: dict[str, Any], seen: frozenset[str] = frozenset()
                   ) -> bool:
    """Whether fastavro skips a value of ``schema`` without noticing the end of input.

    ``skip_float``, ``skip_double``, ``skip_boolean`` and ``skip_fixed`` read without
    checking what they got; anything starting with a number (int, long, string, bytes,
    enum, union, array, map) raises at the end.
    """
    if isinstance(schema, str):
        if schema in named:
            return schema in seen or _skipped_blind(named[schema], named, seen | {schema})
        return schema in _SKIPPED_BLIND
    if isinstance(schema, dict):
        kind = _kind(schema)
        if _is(kind, _RECORDS):
            return all(_skipped_blind(f["type"], named, seen) for f in schema["fields"])
        if kind == "fixed":
            return True
        if isinstance(kind, str | dict) and kind not in ("array", "map", "enum"):
            return _skipped_blind(kind, named, seen)
    return False


def _has_blind_array(schema: Any, named: dict[str, Any]) -> bool:
    """Whether skipping ``schema`` can meet an array whose items are skipped blind."""
    stack = [schema]
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if node in named and node not in seen:
                seen.add(node)
                stack.append(named[node])
            continue
        if isinstance(node, dict) and node.get("type") == "array" and _skipped_blind(
                node["items"], named):
            return True
        stack.extend(_children(node))
    return False


def skip_can_spin(writer: Any, reader: Any) -> bool:
    """Whether resolving ``writer`` into ``reader`` may skip an array of blind-skipped items.

    fastavro skips writer fields the reader lacks; ``skip_array`` then loops over a
    block count of such items without ever noticing the end, so a 20-byte message can
    spin for hours. Over-approximates (True when unsure): callers then read through a
    reader whose ``read(n)`` raises on a short read.
    """
    wnamed, rnamed = definitions(writer), definitions(reader)
    seen: set[tuple[int, int]] = set()

    def deref(node: Any, named: dict[str, Any]) -> Any:
        for _ in range(len(named) + 1):
            if isinstance(node, str) and node in named:
                node = named[node]
            elif isinstance(node, dict) and isinstance(node.get("type"), str) and node[
                    "type"] in named:
                node = named[node["type"]]
            else:
                break
        return node

    def walk(w: Any, r: Any) -> bool:
        w, r = deref(w, wnamed), deref(r, rnamed)
        if (id(w), id(r)) in seen:
            return False
        seen.add((id(w), id(r)))
        if isinstance(w, list):
            return any(walk(branch, r) for branch in w)
        if isinstance(r, list):
            return any(walk(w, branch) for branch in r)
        if not (isinstance(w, dict) and isinstance(r, dict)):
            return False
        wk, rk = w.get("type"), r.get("type")
        if isinstance(wk, dict | list):
            return walk(wk, r)
        if isinstance(rk, dict | list):
            return walk(w, rk)
        if _is(wk, _RECORDS) and _is(rk, _RECORDS):
            by_name = {f["name"]: f for f in r["fields"]}
            for f in r["fields"]:
                for alias in f.get("aliases", ()):
                    by_name.setdefault(alias, f)
            for f in w["fields"]:
                kept = by_name.get(f["name"])
                if kept is None:
                    if _has_blind_array(f["type"], wnamed):
                        return True
                elif walk(f["type"], kept["type"]):
                    return True
            return False
        if wk == rk == "array":
            return walk(w["items"], r["items"])
        if wk == rk == "map":
            return walk(w["values"], r["values"])
        return False

    return walk(writer, reader)


class _Scan:
    """A strict walk of one body against its writer schema; raises ``DecodeError``."""

    __slots__ = ("buf", "end", "label", "max_depth", "named")

    def __init__(self, buf: bytes, named: dict[str, Any], max_depth: int, label: str) -> None:
        self.buf = buf
        self.end = len(buf)
        self.named = named
        self.max_depth = max_depth
        self.label = label

    def fail(self, what: str, at: int) -> DecodeError:
        return DecodeError(f"{self.label} {what} (byte {at} of {self.end})")

    def long(self, pos: int) -> tuple[int, int]:
        buf, end, start = self.buf, self.end, pos
        n = shift = 0
        while True:
            if pos >= end:
                raise self.fail("ends inside a number", start)
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise self.fail("has a number longer than 10 bytes", start)
        if n >> 64:
            raise self.fail("has a number larger than 64 bits", start)
        return (n >> 1) ^ -(n & 1), pos

    def take(self, pos: int, size: int, what: str) -> int:
        if size < 0 or size > self.end - pos:
            raise self.fail(f"has a {what} of {size} bytes, past the end", pos)
        return pos + size

    def value(self, schema: Any, pos: int, depth: int) -> int:
        while isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, list):
            return self.union(schema, pos, depth + 1)
        kind = schema if isinstance(schema, str) else schema["type"]
        if not isinstance(kind, str):
            return self.value(kind, pos, depth)
        if kind in self.named:
            return self.value(self.named[kind], pos, depth)
        if kind == "null":
            return pos
        if kind in ("int", "long", "enum"):
            n, after = self.long(pos)
            if kind == "enum" and not 0 <= n < len(schema["symbols"]):
                raise self.fail(f"has enum index {n} out of range", pos)
            return after
        if kind in ("string", "bytes"):
            size, after = self.long(pos)
            end = self.take(after, size, kind)
            if kind == "string":
                try:
                    self.buf[after:end].decode()
                except UnicodeDecodeError:
                    raise self.fail("has a string that is not UTF-8", after) from None
            return end
        if kind in ("float", "double", "boolean", "fixed"):
            size = {"float": 4, "double": 8, "boolean": 1}.get(kind) or int(schema["size"])
            return self.take(pos, size, kind)
        if depth + 1 > self.max_depth:
            raise self.fail(f"nests deeper than {self.max_depth} levels", pos)
        if _is(kind, _RECORDS):
            for f in schema["fields"]:
                pos = self.value(f["type"], pos, depth + 1)
            return pos
        if kind in ("array", "map"):
            return self.blocks(schema, kind == "map", pos, depth + 1)
        raise self.fail(f"uses unknown type {kind!r}", pos)

    def union(self, branches: list[Any], pos: int, depth: int) -> int:
        if depth > self.max_depth:
            raise self.fail(f"nests deeper than {self.max_depth} levels", pos)
        index, after = self.long(pos)
        if not 0 <= index < len(branches):
            raise self.fail(f"has union branch {index} out of range", pos)
        return self.value(branches[index], after, depth)

    def blocks(self, schema: Any, is_map: bool, pos: int, depth: int) -> int:
        item = schema["values"] if is_map else schema["items"]
        while True:
            at = pos
            count, pos = self.long(pos)
            if count == 0:
                return pos
            size = None
            if count < 0:
                count = -count
                size, pos = self.long(pos)
            if count > self.end - pos:  # every item takes at least one byte
                raise self.fail(f"has a block of {count} items, past the end", at)
            start = pos
            for _ in range(count):
                if is_map:
                    pos = self.value("string", pos, depth)
                pos = self.value(item, pos, depth)
            if size is not None and size != pos - start:
                raise self.fail(f"has a block size {size} that does not match its items", at)


def scan_body(buf: bytes, pos: int, schema: Any, named: dict[str, Any],
              max_depth: int = DEFAULT_MAX_DEPTH, label: str = "body") -> int:
    """Walk the value of ``schema`` encoded in ``buf`` from ``pos``; return where it ends.

    Stricter than fastavro (negative union/enum indexes, over-long numbers and block sizes
    that do not match are errors) and bounded: depth ≤ ``max_depth``, time O(len(buf)).
    """
    try:
        return _Scan(buf, named, max_depth, label).value(schema, pos, 0)
    except RecursionError:
        raise DecodeError(f"{label} nests too deeply to decode") from None
