"""The invariants every chaos scenario ends with, measured rather than asserted (so the
chaos report can print them): exactly once per family, state versions, audit chains,
dead letters, offsets, and Redis caches equal to what PostgreSQL holds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sinkfleet.cache import CacheLayout
from sinkfleet.cache.rebuild import PgSource
from sinkfleet.cache.store import redis_client, scan_keys
from sinkfleet.ops.audit.verify import verify
from sinkfleet.sink.postgres.connect import pg
from tests.chaos.support import ChaosCatalogue, Expected, end_offsets, stored_offsets


@dataclass
class Tally:
    """What a run left behind, against what its acknowledged records demand."""

    records: int = 0  # acknowledged records (all families, tombstones and poison included)
    lost: int = 0  # acknowledged, not stored
    duplicated: int = 0  # stored more than once, or stored without being acknowledged
    regressions: int = 0  # state ids whose latest row is not the newest undeleted version
    audit_broken: int = 0  # broken hash-chain links (sinkfleet audit verify)
    dlq_expected: int = 0
    dlq_actual: int = 0
    offsets_off: int = 0  # partitions whose stored offset is not the log end offset
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.regressions or self.audit_broken
                    or self.offsets_off or self.dlq_actual != self.dlq_expected)


def _diff(tally: Tally, what: str, expected: set[Any], rows: list[Any]) -> None:
    stored = set(rows)
    lost, extra = len(expected - stored), len(stored - expected)
    doubled = len(rows) - len(stored)
    tally.lost += lost
    tally.duplicated += doubled + extra
    if lost or doubled or extra:
        tally.problems.append(f"{what}: {lost} lost, {doubled} stored twice,"
                              f" {extra} never acknowledged")


async def tally(cc: ChaosCatalogue, expected: Expected) -> Tally:
    """Compare PostgreSQL and the dead-letter topics with ``expected``."""
    t = Tally(records=expected.published, dlq_expected=sum(expected.poison.values()))
    ev, wf, au = (cc.sinks[f] for f in ("experience_event", "workflow_state", "audit_entry"))
    async with pg(cc.settings) as conn:
        events = [bytes(r[0]) for r in await conn.fetch(f'SELECT event_id FROM "{ev}"')]
        _diff(t, "experience events", expected.events, events)
        audit = [str(r[0]) for r in await conn.fetch(f'SELECT entry_id FROM "{au}"')]
        _diff(t, "audit entries", expected.audit, audit)
        # Every version of every id and every deletion, once (a stale re-publish of a
        # recorded version is recognised, not recorded again).
        history = [tuple(r) for r in await conn.fetch(
            f'SELECT tenant_id, workflow_id, version, op FROM "{wf}_history"')]
        _diff(t, "state history", expected.history, history)
        latest = {(r[0], r[1]): r[2] for r in await conn.fetch(
            f'SELECT tenant_id, workflow_id, version FROM "{wf}"')}
    want = expected.latest_versions()
    wrong = {i for i in want.keys() | latest.keys() if want.get(i) != latest.get(i)}
    t.regressions = len(wrong)
    if wrong:
        sample = sorted(wrong)[:3]
        t.problems.append(f"state: {len(wrong)} ids not at their newest version, e.g. "
                          + ", ".join(f"{i}: want {want.get(i)} got {latest.get(i)}"
                                      for i in sample))
    checked = await verify(cc.settings, cc.catalogue, sink=au)
    t.audit_broken = len(checked.broken)
    if checked.broken:
        t.problems.append(f"audit: {checked.broken[0]}")
    if checked.entries != len(set(audit)):
        t.problems.append(f"audit verify saw {checked.entries} entries")
    dlq = await end_offsets(cc.settings, [f"{topic}.dlq" for topic in cc.topics.values()])
    t.dlq_actual = sum(dlq.values())
    stored = await stored_offsets(cc)
    ends = await end_offsets(cc.settings, list(cc.topics.values()))
    off = {tp for tp in stored.keys() | ends.keys() if stored.get(tp, 0) != ends.get(tp, 0)}
    t.offsets_off = len(off)
    if off:
        t.problems.append(f"offsets: stored {stored} != log end {ends}")
    return t


async def cache_mismatches(cc: ChaosCatalogue) -> dict[str, int]:
    """Keys whose Redis entry is not what PostgreSQL says it should be: the state sink's
    ``latest`` entries and the events' ``recent`` sets (live keys only: within the TTL)."""
    wf, ev = cc.sink("workflow_state"), cc.sink("experience_event")
    lw, le = CacheLayout.of(wf), CacheLayout.of(ev)
    assert le.recent is not None
    want_latest: dict[str, str] = {}
    want_recent: dict[str, set[str]] = {}
    async with pg(cc.settings) as conn:
        for r in await conn.fetch(PgSource(wf, lw).latest_all):
            row = dict(r)
            want_latest[lw.latest_key(lw.id_of(row))] = lw.row_json(row, "latest")
        src = PgSource(ev, le)
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=le.recent.ttl_seconds)
        for r in await conn.fetch(src.recent_all, cutoff):
            by = tuple(r[f"_sinkfleet_k{i}"] for i in range(len(le.recent.by)))
            row = {c: r[c] for c in le.recent_columns}
            want_recent.setdefault(le.recent_key(by), set()).add(le.row_json(row, "recent"))
    client = redis_client(cc.settings, timeout=10)
    try:
        got_latest = {k async for chunk in scan_keys(client, lw.prefix("latest"))
                      for k in chunk}
        got_recent = {k async for chunk in scan_keys(client, le.prefix("recent"))
                      for k in chunk}
        bad_latest = len(got_latest - want_latest.keys())
        async with client.pipeline(transaction=False) as pipe:
            keys = sorted(want_latest)
            for key in keys:
                pipe.hget(key, "d")
            values = await pipe.execute()
        bad_latest += sum(v != want_latest[k] for k, v in zip(keys, values, strict=True))
        bad_recent = len(got_recent - want_recent.keys())
        async with client.pipeline(transaction=False) as pipe:
            keys = sorted(want_recent)
            for key in keys:
                pipe.zrange(key, 0, -1)
            values = await pipe.execute()
        bad_recent += sum(set(v) != want_recent[k] for k, v in zip(keys, values, strict=True))
    finally:
        await client.aclose()
    return {"latest": bad_latest, "recent": bad_recent}
