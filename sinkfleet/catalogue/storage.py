"""``storage:`` of a sink spec: how its table is laid out on disk (docs/storage.md).

Every setting keeps what is stored (columns, types, values) and changes only how:

* ``key: time_first`` — the primary key's B-tree leads with the time column
  (``(ts, event_id)`` for ``id: [event_id, ts]``): the same uniqueness, but inserts land
  at the right edge whatever the ids look like (random ids split pages and leave them
  half full), and the key serves ``ORDER BY time … LIMIT`` (newest-first reads), which
  a BRIN index cannot.
* ``key_fillfactor`` — how full right-edge page splits leave the key's leaf pages
  (PostgreSQL's default is 90; 100 suits append-only, time-ordered keys).
* ``column_order: aligned`` — partitions created from now on store the columns widest
  alignment first (8-byte, then 4-, 2-byte, then variable-length), so no padding sits
  between them; the table's column order, as readers see it, does not change.
* ``compact: true`` — once a partition's range has ended, its B-tree indexes are rebuilt
  packed full (an index written at many points at once stays half full otherwise).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StorageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Literal["as_id", "time_first"] = Field("as_id", description=(
        "column order of the primary key: as the sink's id lists them, or the time"
        " column first"))
    key_fillfactor: int | None = Field(None, ge=10, le=100, description=(
        "fillfactor of the primary key's B-tree (PostgreSQL's default: 90)"))
    column_order: Literal["as_listed", "aligned"] = Field("as_listed", description=(
        "physical column order of new time partitions"))
    compact: bool = Field(False, description=(
        "rebuild the B-tree indexes of closed time partitions once, packed full"
        " (`retention run --every`; sinkfleet/ops/lifecycle/compact.py)"))

    @property
    def reshapes_key(self) -> bool:
        """Whether the key differs from what the sink's first migration created."""
        return self.key != "as_id" or self.key_fillfactor is not None

    def digest(self) -> str:
        """A short fingerprint of the key settings: each change is its own migration."""
        text = json.dumps({"key": self.key, "key_fillfactor": self.key_fillfactor},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]
