"""The exporter's reference gauges: orphans per reference between sinks
(docs/references.md), polled from PostgreSQL far less often than lag (each count scans
the referring table), and rendered for /metrics and /api/references.

    sinkfleet_reference_orphans{sink,columns,target}                 rows whose target is missing
    sinkfleet_reference_orphan_oldest_seconds{sink,columns,target}   how long the oldest has waited

An unknown count (no table yet, a timeout, PostgreSQL down) is left out, not shown as 0.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sinkfleet.catalogue import Catalogue, load_catalogue
from sinkfleet.config import Settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.sink.postgres.connect import RETRIABLE_STORAGE, pg
from sinkfleet.sink.postgres.references import OrphanCount, orphan_counts

log = logging.getLogger("sinkfleet.lag")
REFERENCES_INTERVAL_S = 60.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_orphans(counts: list[OrphanCount], now: float) -> str:
    """The two gauge families in the Prometheus text format."""
    if not counts:
        return ""
    known = [c for c in counts if c.orphans is not None]
    lines = ["# HELP sinkfleet_reference_orphans Rows whose reference names no stored row"
             " of the target sink (yet)\n# TYPE sinkfleet_reference_orphans gauge\n"]
    ages = ["# HELP sinkfleet_reference_orphan_oldest_seconds How long the oldest orphan"
            " has been stored\n# TYPE sinkfleet_reference_orphan_oldest_seconds gauge\n"]
    for c in known:
        labels = (f'columns="{_escape(",".join(c.columns))}",sink="{_escape(c.sink)}",'
                  f'target="{_escape(c.target)}"')
        lines.append(f"sinkfleet_reference_orphans{{{labels}}} {c.orphans}\n")
        age = c.age_seconds(now)
        ages.append(f"sinkfleet_reference_orphan_oldest_seconds{{{labels}}}"
                    f" {0.0 if age is None else age!r}\n")
    return "".join(lines + ages)


class ReferencePoller:
    """Counts orphans every ``interval`` seconds; the last counts stay served between
    polls and through a PostgreSQL outage (with the error)."""

    def __init__(self, settings: Settings, catalogue: Catalogue | None = None, *,
                 interval: float = REFERENCES_INTERVAL_S) -> None:
        self.settings, self.interval = settings, interval
        self.catalogue = catalogue
        self.counts: list[OrphanCount] = []
        self.at: float | None = None
        self.error: str | None = None
        self._next = 0.0

    def _load(self) -> Catalogue | None:
        if self.catalogue is None:
            try:
                self.catalogue = load_catalogue(self.settings.home)
            except SinkfleetError as exc:  # an exporter away from the catalogue
                self.error = f"no catalogue, no reference gauges: {exc}"
                return None
        return self.catalogue

    async def poll(self, force: bool = False) -> None:
        """Count if the interval has passed (or ``force``)."""
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.interval
        cat = self._load()
        if cat is None or not any(s.spec.references for s in cat.sinks.values()):
            return
        try:
            async with pg(self.settings) as conn:
                self.counts = await orphan_counts(conn, cat)
            self.at, self.error = time.time(), None
        except RETRIABLE_STORAGE as exc:
            self.error = f"PostgreSQL unavailable: {type(exc).__name__}"
            log.warning("counting orphans failed: %s", self.error)

    def metrics(self, now: float) -> bytes:
        return render_orphans(self.counts, now).encode()

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "error": self.error,
                "references": [c.as_dict() for c in self.counts]}
