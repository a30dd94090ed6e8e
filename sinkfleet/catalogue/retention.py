"""Retention tiers of a sink (``retention:`` in sinks/*.yaml): detail for N, a summary for
M, the cold archive for K, or forever (docs/retention.md).

Every age is the age of the data — how far its partition (or summary window) ends
before now — not the time since it left the tier before. Durations: ``48h``, ``7d``,
``2w``, ``1y`` (a year is 365 days), or ``forever``.

```yaml
retention: {keep: 7d, archive: true}                       # the first form, kept
retention: forever                                          # never dropped
retention: {detail: forever, archive: true}                 # + an archived copy
retention: {detail: 365d, archive: {keep: 3y}}              # archive files go at 3 years
retention:
  detail: 90d
  summary: {keep: 1y, grain: day, by: [verdict], values: [score]}
```

Which columns ``summary.by``/``values`` name is checked against the sink's columns by
the sink model (models.py); this module knows durations, grains and tier order only.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

FOREVER = "forever"
DURATION_RE = re.compile(r"\A([1-9][0-9]{0,4})([hdwy])\Z")
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1),
         "y": timedelta(days=365)}

#: A summary window: PostgreSQL's ``date_trunc`` field, in UTC (weeks start on Monday).
Grain = Literal["hour", "day", "week", "month"]
GRAINS: tuple[str, ...] = ("hour", "day", "week", "month")
#: The longest window of each grain (a month: 31 days).
GRAIN_SPAN = {"hour": timedelta(hours=1), "day": timedelta(days=1),
              "week": timedelta(weeks=1), "month": timedelta(days=31)}


def parse_keep(value: str) -> timedelta:
    """``48h``, ``7d``, ``2w`` or ``1y`` (365 days) as a timedelta."""
    m = DURATION_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} is not a duration like 48h, 7d or 2w (or 1y: 365 days)")
    return int(m.group(1)) * _UNIT[m.group(2)]


def parse_age(value: str) -> timedelta | None:
    """A duration, or None for ``forever``."""
    return None if value == FOREVER else parse_keep(value)


def _duration(value: str) -> str:
    parse_keep(value)
    return value


def _age(value: str) -> str:
    if value != FOREVER:
        try:
            parse_keep(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a duration like 48h, 7d or 2w (or 1y: 365"
                             " days), nor 'forever'") from None
    return value


Duration = Annotated[str, AfterValidator(_duration)]
Age = Annotated[str, AfterValidator(_age)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SummarySpec(_Strict):
    """The summary tier: rows of the detail grouped by ``grain`` window and the ``by``
    columns — a record count, and count/sum/min/max of each ``values`` column — written
    in the transaction that drops the detail, kept ``keep`` (the window's age)."""

    keep: Age = Field(description="how long summary windows stay: 1y, 2y, … or forever")
    grain: Grain = Field(description="summary window: hour, day, week (Monday) or month")
    by: list[str] = Field(default_factory=list, description="columns to group by")
    values: list[str] = Field(default_factory=list,
                              description="numeric columns: count, sum, min, max")

    @model_validator(mode="before")
    @classmethod
    def _known_grain(cls, data: Any) -> Any:
        if isinstance(data, dict) and "grain" in data and data["grain"] not in GRAINS:
            raise ValueError(f"summary.grain {data['grain']!r} is not a grain: use one of"
                             f" {', '.join(GRAINS)}")
        return data

    @property
    def keep_delta(self) -> timedelta | None:
        return parse_age(self.keep)


class ArchiveSpec(_Strict):
    """The archive tier: ``keep`` is how old data may be before its archive files go."""

    keep: Age = FOREVER

    @property
    def keep_delta(self) -> timedelta | None:
        return parse_age(self.keep)


class RetentionSpec(_Strict):
    """Detail is kept in PostgreSQL for ``detail`` (or forever); `sinkfleet retention run`
    then writes the partition's summary (if any) and archive (if asked), detaches and
    drops it — never a DELETE of detail rows (docs/retention.md). ``keep`` is the first
    spelling of ``detail``, still accepted."""

    detail: Age = Field(description="how long detail stays in PostgreSQL: 90d, 1y, forever")
    summary: SummarySpec | None = None
    archive: bool | ArchiveSpec = Field(
        False, description="true (kept forever), {keep: 3y}, or false: each partition is"
                           " written to the cold archive (Avro) before it is dropped")

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        if data == FOREVER:
            return {"detail": FOREVER}
        if isinstance(data, str):
            raise ValueError(f"retention {data!r} is neither 'forever' nor tiers like"
                             " {detail: 90d, summary: {keep: 1y, grain: day}, archive: true}")
        if isinstance(data, dict) and "keep" in data:
            if "detail" in data:
                raise ValueError("retention: give 'detail' or its older spelling 'keep',"
                                 " not both")
            data = {("detail" if k == "keep" else k): v for k, v in data.items()}
        if isinstance(data, dict) and "detail" not in data:
            raise ValueError("retention needs 'detail' (how long detail rows stay: 90d,"
                             " 1y, forever), or is 'forever'")
        return data

    @model_validator(mode="after")
    def _tiers_in_order(self) -> RetentionSpec:
        detail = self.detail_delta
        summary = self.summary
        if summary is not None:
            if detail is None:
                raise ValueError("retention.summary needs detail to be dropped: with"
                                 " detail: forever the detail rows are their own summary")
            keep = summary.keep_delta
            if keep is not None and keep <= detail:
                raise ValueError(
                    f"retention.summary.keep {summary.keep} is not longer than detail"
                    f" {self.detail}: a summary outlives the detail it sums; raise"
                    " summary.keep or drop the summary")
            if GRAIN_SPAN[summary.grain] > detail:
                raise ValueError(
                    f"retention.summary.grain {summary.grain} is longer than detail"
                    f" {self.detail}: every window must be whole in PostgreSQL before it"
                    " is summed; use a finer grain or keep detail longer")
        if isinstance(self.archive, ArchiveSpec) and self.archive.keep_delta is not None:
            if detail is None:
                raise ValueError("retention.archive.keep needs detail to be dropped: with"
                                 " detail: forever, archive copies are kept forever"
                                 " (archive: true)")
            if self.archive.keep_delta <= detail:
                raise ValueError(
                    f"retention.archive.keep {self.archive.keep} is not longer than detail"
                    f" {self.detail}: the archive holds what PostgreSQL dropped; raise"
                    " archive.keep")
        return self

    @property
    def detail_delta(self) -> timedelta | None:
        """How long detail stays; None: forever."""
        return parse_age(self.detail)

    @property
    def keep(self) -> str:
        """The detail tier's duration as written (the first spelling's name)."""
        return self.detail

    @property
    def keep_delta(self) -> timedelta:
        """The detail tier as a timedelta (a sink whose detail is kept forever has none)."""
        delta = self.detail_delta
        assert delta is not None, "detail: forever has no keep"
        return delta

    @property
    def archives(self) -> bool:
        return self.archive is not False

    @property
    def archive_keep(self) -> timedelta | None:
        """How old data may be before its archive files go; None: forever."""
        return self.archive.keep_delta if isinstance(self.archive, ArchiveSpec) else None

    def describe(self) -> str:
        """``detail 90d, summary 1y by day, archive 3y`` (CLI output)."""
        parts = [f"detail {self.detail}"]
        if self.summary is not None:
            parts.append(f"summary {self.summary.keep} by {self.summary.grain}")
        if self.archives:
            keep = self.archive.keep if isinstance(self.archive, ArchiveSpec) else FOREVER
            parts.append(f"archive {keep}")
        return ", ".join(parts)


#: The summary table's own columns (``by`` columns may not take these names).
SUMMARY_COLUMNS = ("grain", "window_start", "detail_partition", "rows", "summarised_at")
SUMMARY_STATS = ("count", "sum", "min", "max")
#: Column types a summary can sum, and keep the min and max of.
SUMMABLE = frozenset({"smallint", "integer", "bigint", "real", "double precision", "numeric"})


def summary_stat_column(value: str, stat: str) -> str:
    """The summary column holding ``stat`` (count, sum, min, max) of column ``value``."""
    return f"{value}_{stat}"


def summary_problems(summary: SummarySpec, types: dict[str, str]) -> list[str]:
    """What is wrong with a summary tier given the sink's column types (name → pg type);
    the names are known to be among the columns."""
    out = []
    for col in summary.by:
        if col in SUMMARY_COLUMNS:
            out.append(f"retention.summary.by: {col!r} is a column of the summary table"
                       " itself; group by another column")
    # the windows' mean too (Reader.windows returns it beside the stored four)
    stats = {summary_stat_column(v, s) for v in summary.values for s in (*SUMMARY_STATS, "avg")}
    for col in summary.values:
        if types[col] not in SUMMABLE:
            out.append(f"retention.summary.values: {col!r} is {types[col]}, not a number:"
                       " only numeric columns are summed (group by it instead)")
        if len(summary_stat_column(col, "count")) > 63:
            out.append(f"retention.summary.values: {col!r} is too long for its summary"
                       " columns (at most 57 characters)")
    for col in summary.by:
        if col in stats:
            out.append(f"retention.summary.by: {col!r} collides with a summary column of"
                       " the values; rename one of them")
    return out
