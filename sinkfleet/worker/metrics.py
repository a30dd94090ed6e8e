"""Prometheus metrics of one worker process (names: sinkfleet_*, labels group/topic/
partition/sink/stage — the same words the logs and the CLI use)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sinkfleet.http import Health, Phase

BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10_000, 50_000)
KNOWN_COMPONENTS = ("storage", "dead-letters", "schema-registry", "cache", "heartbeat",
                    "rebalance")
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _EventTimeLag(Collector):
    """now - timestamp of the last record committed, computed at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sinkfleet_event_time_lag_seconds",
            "Age of the newest record committed, per partition (now - its Kafka timestamp)",
            labels=["group", "topic", "partition"])
        now_ms = time.time() * 1000
        for tp, ts_ms in sorted(self.metrics.last_committed_ts.items()):
            family.add_metric([self.metrics.group, tp.topic, str(tp.partition)],
                              max(0.0, (now_ms - ts_ms) / 1000))
        yield family


class _Health(Collector):
    """The worker's health at scrape time: the same words as /healthz."""

    def __init__(self, group: str, health: Health) -> None:
        self.group, self.health = group, health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        problems = GaugeMetricFamily(
            "sinkfleet_worker_degraded", "1 while a part of the worker fails and is being"
            " retried (component: storage, dead-letters, cache, heartbeat, rebalance)",
            labels=["group", "component"])
        current = self.health.current_problems()
        for component in sorted({*KNOWN_COMPONENTS, *current}):
            problems.add_metric([self.group, component], 1.0 if component in current else 0.0)
        yield problems
        phase = GaugeMetricFamily("sinkfleet_worker_phase", "1 for the worker's phase",
                                  labels=["group", "phase"])
        for p in Phase:
            phase.add_metric([self.group, p.value], 1.0 if self.health.phase is p else 0.0)
        yield phase


class WorkerMetrics:
    """All of a worker's metrics, on their own registry (several workers may share a
    process in tests)."""

    def __init__(self, group: str, registry: CollectorRegistry | None = None) -> None:
        self.group = group
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("sinkfleet_records_consumed", "Records consumed and decoded or"
                                " dead-lettered", ["group", "topic"], registry=r)
        self.stored = Counter("sinkfleet_records_stored", "Rows newly stored",
                              ["group", "sink"], registry=r)
        self.duplicates = Counter("sinkfleet_records_duplicate", "Rows already stored"
                                  " (re-deliveries absorbed by the idempotent sink)",
                                  ["group", "sink"], registry=r)
        self.state_conflicts = Counter(
            "sinkfleet_state_conflicts", "Same-version conflicts of state sinks newly"
            " recorded in sinkfleet.state_conflicts (two contents at one version)",
            ["group", "sink"], registry=r)
        self.dead = Counter("sinkfleet_records_dead_lettered", "Records sent to the"
                            " dead-letter topic", ["group", "topic", "stage"], registry=r)
        self.batch_records = Histogram("sinkfleet_batch_records", "Records per stored batch",
                                       ["group"], buckets=BATCH_BUCKETS, registry=r)
        self.flush_seconds = Histogram("sinkfleet_flush_seconds", "Time to store a batch"
                                       " (rows + offsets, one transaction)", ["group"],
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.commit_seconds = Histogram("sinkfleet_kafka_commit_seconds", "Time to commit"
                                        " offsets to Kafka", ["group"],
                                        buckets=SECONDS_BUCKETS, registry=r)
        self.fenced = Counter("sinkfleet_fenced_batches", "Batches refused because another"
                              " worker had stored past their start (this worker had lost"
                              " their partitions without noticing)", ["group"], registry=r)
        self.rebalances = Counter("sinkfleet_rebalances", "Partition assignments received",
                                  ["group"], registry=r)
        self.storage_retries = Counter("sinkfleet_storage_retries", "Store attempts retried"
                                       " because PostgreSQL was unavailable", ["group"],
                                       registry=r)
        self.dlq_send_failures = Counter("sinkfleet_dead_letter_send_failures", "Attempts"
                                         " to send dead letters that Kafka did not"
                                         " acknowledge (retried)", ["group"], registry=r)
        self.failures = Counter("sinkfleet_worker_failures", "Failures inside the worker,"
                                " by where they happened (also on /healthz and in the log)",
                                ["group", "where"], registry=r)
        self.assigned = Gauge("sinkfleet_assigned_partitions", "Partitions assigned",
                              ["group"], registry=r)
        self.paused = Gauge("sinkfleet_paused_partitions", "Partitions paused by back-off",
                            ["group"], registry=r)
        self.committed = Gauge("sinkfleet_committed_offset", "Next offset stored with the"
                               " rows", ["group", "topic", "partition"], registry=r)
        self.last_committed_ts: dict[TopicPartition, float] = {}
        r.register(_EventTimeLag(self))

    def watch(self, health: Health) -> None:
        """Export ``health`` (read at each scrape)."""
        self.registry.register(_Health(self.group, health))

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalances.labels(self.group).inc()
        self.assigned.labels(self.group).set(len(assigned))
        for tp in list(self.last_committed_ts):
            if tp not in assigned:  # another worker reports it now
                del self.last_committed_ts[tp]
                with contextlib.suppress(KeyError):
                    self.committed.remove(self.group, tp.topic, str(tp.partition))

    def on_stored(self, offsets: dict[TopicPartition, int],
                  timestamps: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self.committed.labels(self.group, tp.topic, str(tp.partition)).set(offset)
        self.last_committed_ts.update(timestamps)
