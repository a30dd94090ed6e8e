"""The exporter's /metrics page (pure): the same series prometheus_client would write,
rendered once per snapshot, lag_seconds aged to the scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from sinkfleet.ops.lag.collect import GroupLag, PartitionLag, Snapshot
from sinkfleet.ops.lag.metrics import MetricsPage, age_now
from sinkfleet.ops.lag.model import STATUSES, Sample

AT = 1_764_000_000.25


def snapshot() -> Snapshot:
    odd = 'g"quoted\\back\nline'  # group ids are free text: labels must be escaped
    samples = {
        ("orders", "t", 0): Sample(AT, 40, 0, 100, AT - 12.5),  # waiting: ages
        ("orders", "t", 1): Sample(AT, 100, 0, 100),  # caught up: 0, does not age
        ("orders", "t", 2): Sample(AT, None, 0, 7),  # no offset: only the log end
        ("orders", "t.x", 0): Sample(AT, 5, 0, 9),  # timestamp unknown: left out
        (odd, "t", 0): Sample(AT, 3, 10, 20, AT - 1),  # below the log start
    }
    groups: dict[str, GroupLag] = {}
    for (group, topic, partition), sample in samples.items():
        g = groups.setdefault(group, GroupLag(group, "Empty", 2 if group == "orders" else 0))
        g.partitions.append(PartitionLag(topic, partition, sample, "OK"))
    groups[odd].status = "ERROR"
    return Snapshot(AT, list(groups.values()), {"t.dlq": 3, "u.dlq": 0}, 0.125)


class Reference(Collector):
    """What the exporter served through prometheus_client before it rendered pages."""

    def __init__(self, snap: Snapshot, now: float) -> None:
        self.snap, self.now = snap, now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily("sinkfleet_group_committed_offset", "", labels=labels)
        end = GaugeMetricFamily("sinkfleet_group_log_end_offset", "", labels=labels)
        lag = GaugeMetricFamily("sinkfleet_group_lag_records", "", labels=labels)
        expired = GaugeMetricFamily("sinkfleet_group_expired_records", "", labels=labels)
        lag_s = GaugeMetricFamily("sinkfleet_group_lag_seconds", "", labels=labels)
        status = GaugeMetricFamily("sinkfleet_group_status", "", labels=["group", "status"])
        members = GaugeMetricFamily("sinkfleet_group_members", "", labels=["group"])
        for g in self.snap.groups:
            members.add_metric([g.group], g.members)
            for s in STATUSES:
                status.add_metric([g.group, s], 1.0 if g.status == s else 0.0)
            for p in g.partitions:
                key, sample = [g.group, p.topic, str(p.partition)], p.sample
                end.add_metric(key, sample.log_end)
                if sample.committed is not None:
                    committed.add_metric(key, sample.committed)
                if sample.lag_records is not None:
                    lag.add_metric(key, sample.lag_records)
                if sample.expired_records is not None:
                    expired.add_metric(key, sample.expired_records)
                if sample.lag_seconds is not None:
                    lag_s.add_metric(key, age_now(sample, self.now))
        dlq = GaugeMetricFamily("sinkfleet_dlq_records", "", labels=["topic"])
        for topic, count in sorted(self.snap.dlq_records.items()):
            dlq.add_metric([topic], count)
        yield from (committed, end, lag, expired, lag_s, status, members, dlq,
                    GaugeMetricFamily("sinkfleet_exporter_scrape_seconds", "",
                                      value=self.snap.seconds),
                    GaugeMetricFamily("sinkfleet_exporter_last_collect_timestamp_seconds", "",
                                      value=self.snap.at))


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_page_has_the_series_prometheus_client_would_write() -> None:
    snap = snapshot()
    now = AT + 7.75
    registry = CollectorRegistry()
    registry.register(Reference(snap, now))
    expected = parsed(generate_latest(registry).decode())
    got = parsed(MetricsPage(snap).render(now).decode())
    assert got == expected
    assert got[("sinkfleet_group_lag_seconds",
                (("group", "orders"), ("partition", "0"), ("topic", "t")))] == 20.25
    assert not any(k[0] == "sinkfleet_group_lag_seconds" and ("topic", "t.x") in k[1]
                   for k in got)  # unknown, not 0


def test_one_page_serves_every_scrape_and_only_lag_seconds_ages() -> None:
    snap = snapshot()
    page = MetricsPage(snap)
    first, later = parsed(page.render(AT).decode()), parsed(page.render(AT + 60).decode())
    changed = {k for k in first if first[k] != later[k]}
    assert changed == {("sinkfleet_group_lag_seconds", (("group", g), ("partition", "0"),
                                                        ("topic", "t")))
                       for g in ("orders", 'g"quoted\\back\nline')}
    again = MetricsPage(snapshot(), page.labels)  # the next poll reuses the label text
    assert again.render(AT + 60) == page.render(AT + 60)
