"""The exporter's /metrics: a lag snapshot in the Prometheus text format, rendered once.

prometheus_client rebuilds every sample object on every scrape (~0.25 s for 20,000
series). A snapshot only changes once per poll, so a ``MetricsPage`` renders it once:
all lines as bytes, except ``sinkfleet_group_lag_seconds``, which ages with the clock
(the oldest unconsumed record keeps waiting between polls). Those lines are kept as
their label part and the record's timestamp, and finished at each scrape (a few ms
for 5,000 partitions). Unknown values are left out, not faked.
"""

from __future__ import annotations

from collections.abc import Iterable

from sinkfleet.ops.lag.collect import Snapshot
from sinkfleet.ops.lag.model import STATUSES, Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = dict[tuple[str, str, int], str]  # (group, topic, partition) -> label text


def age_now(sample: Sample, now: float) -> float:
    """Lag in seconds at scrape time, not at the last poll: the oldest unconsumed record
    keeps ageing between polls (exact while the group is stalled, which is when it
    matters)."""
    if sample.first_unconsumed_ts is None or not sample.lag_records:
        return sample.lag_seconds or 0.0
    return max(0.0, now - sample.first_unconsumed_ts)


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, doc: str) -> str:
    return f"# HELP {name} {doc}\n# TYPE {name} gauge\n"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


class MetricsPage:
    """/metrics of one snapshot. ``labels`` is shared between pages so that each
    partition's label text is built once, not once per poll."""

    def __init__(self, snap: Snapshot, labels: Labels | None = None) -> None:
        self.snapshot = snap
        old = labels if labels is not None else {}
        self.labels: Labels = {}
        committed, end, lag = [_family("sinkfleet_group_committed_offset",
                                       "Committed offset (next to consume)")], [
            _family("sinkfleet_group_log_end_offset", "Log-end offset")], [
            _family("sinkfleet_group_lag_records",
                    "Records not yet consumed (log end - committed, as Kafka counts)")]
        expired = [_family("sinkfleet_group_expired_records",
                           "Records deleted by retention before the group read them")]
        # (line head, timestamp that ages, or None and the fixed value)
        self._lag_seconds: list[tuple[str, float | None, float]] = []
        for g in snap.groups:
            for p in g.partitions:
                key = (g.group, p.topic, p.partition)
                text = old.get(key) or (f'group="{escape(g.group)}",partition='
                                        f'"{p.partition}",topic="{escape(p.topic)}"')
                self.labels[key] = text
                s = p.sample
                end.append(f"sinkfleet_group_log_end_offset{{{text}}} {s.log_end}\n")
                if s.committed is not None:
                    committed.append(
                        f"sinkfleet_group_committed_offset{{{text}}} {s.committed}\n")
                if s.lag_records is not None:
                    lag.append(f"sinkfleet_group_lag_records{{{text}}} {s.lag_records}\n")
                if s.expired_records is not None:
                    expired.append(
                        f"sinkfleet_group_expired_records{{{text}}} {s.expired_records}\n")
                if s.lag_seconds is not None:
                    ageing = s.first_unconsumed_ts if s.lag_records else None
                    self._lag_seconds.append((f"sinkfleet_group_lag_seconds{{{text}}} ",
                                              ageing, age_now(s, snap.at)))
        self._head = "".join([*committed, *end, *lag, *expired, _family(
            "sinkfleet_group_lag_seconds", "Age of the oldest unconsumed record")]).encode()
        self._tail = "".join(self._rest(snap)).encode()

    @staticmethod
    def _rest(snap: Snapshot) -> Iterable[str]:
        yield _family("sinkfleet_group_status",
                      "1 for the group's current status (OK, WARN, REWIND, STALL, ERROR)")
        for g in snap.groups:
            group = escape(g.group)
            for s in STATUSES:
                yield (f'sinkfleet_group_status{{group="{group}",status="{s}"}}'
                       f" {1 if g.status == s else 0}\n")
        yield _family("sinkfleet_group_members", "Live members of the group")
        for g in snap.groups:
            yield f'sinkfleet_group_members{{group="{escape(g.group)}"}} {g.members}\n'
        yield _family("sinkfleet_dlq_records", "Records in a dead-letter topic")
        for topic, count in sorted(snap.dlq_records.items()):
            yield f'sinkfleet_dlq_records{{topic="{escape(topic)}"}} {count}\n'
        yield _family("sinkfleet_exporter_scrape_seconds",
                      "Time the last collection from Kafka took")
        yield f"sinkfleet_exporter_scrape_seconds {_number(snap.seconds)}\n"
        yield _family("sinkfleet_exporter_last_collect_timestamp_seconds",
                      "When the last collection finished")
        yield f"sinkfleet_exporter_last_collect_timestamp_seconds {_number(snap.at)}\n"

    def render(self, now: float) -> bytes:
        """The page as a scrape at ``now`` sees it."""
        ages = "".join([f"{head}{fixed if ts is None else max(0.0, now - ts)!r}\n"
                        for head, ts, fixed in self._lag_seconds])
        return b"".join((self._head, ages.encode(), self._tail))
