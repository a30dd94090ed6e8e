"""The cluster's pure parts: node layout, server.properties, topic replication defaults by
cluster size, and reading the quorum and under-replicated partitions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sinkfleet.catalogue import load_catalogue
from sinkfleet.catalogue.models import TopicSpec
from sinkfleet.config import load_settings
from sinkfleet.dev.stack.cluster import ClusterRecord, KafkaNode, plan_nodes, write_record
from sinkfleet.dev.stack.health import Voter, parse_replication, under_replicated
from sinkfleet.dev.stack.kafka_node import cluster_defaults, node_properties, parse_properties
from sinkfleet.errors import StackError
from sinkfleet.ops.setup.topics import desired_topics
from tests.support.catalogue import ROOT, without_kafka_layout_env


@pytest.fixture(scope="module", autouse=True)
def _own_kafka_layout() -> Iterator[None]:
    with without_kafka_layout_env():
        yield


def _settings(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    return load_settings(home=tmp_path, state_dir=tmp_path / "state", **kw)


def test_one_bootstrap_port_spreads_nodes_two_ports_apart(tmp_path: Path) -> None:
    nodes = plan_nodes(_settings(tmp_path), 3)  # the defaults: 19092 and controller 19093
    assert nodes == [KafkaNode(1, "127.0.0.1", 19092, 19093),
                     KafkaNode(2, "127.0.0.1", 19094, 19095),
                     KafkaNode(3, "127.0.0.1", 19096, 19097)]


def test_listed_brokers_keep_their_ports_and_controllers_their_offset(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_bootstrap="127.0.0.1:39092,127.0.0.1:39093,"
                         "127.0.0.1:39094", kafka_controller_port=39192)
    assert [(n.id, n.port, n.controller_port) for n in plan_nodes(settings, 3)] == [
        (1, 39092, 39192), (2, 39093, 39193), (3, 39094, 39194)]


def test_overlapping_ports_and_a_wrong_count_are_refused(tmp_path: Path) -> None:
    clash = _settings(tmp_path, kafka_bootstrap="127.0.0.1:39092,127.0.0.1:39093,"
                      "127.0.0.1:39094", kafka_controller_port=39093)
    with pytest.raises(StackError, match="overlap"):
        plan_nodes(clash, 3)
    two = _settings(tmp_path, kafka_bootstrap="127.0.0.1:39092,127.0.0.1:39093")
    with pytest.raises(StackError, match="lists 2 brokers and --brokers is 3"):
        plan_nodes(two, 3)


def test_a_recorded_cluster_is_the_settings_bootstrap_and_size(tmp_path: Path) -> None:
    nodes = (KafkaNode(1, "127.0.0.1", 39092, 39192), KafkaNode(2, "127.0.0.1", 39093, 39193),
             KafkaNode(3, "127.0.0.1", 39094, 39194))
    assert _settings(tmp_path).kafka_brokers is None
    write_record(tmp_path / "state", ClusterRecord("abc", nodes))
    settings = _settings(tmp_path)
    assert settings.kafka_bootstrap == "127.0.0.1:39092,127.0.0.1:39093,127.0.0.1:39094"
    assert settings.kafka_brokers == 3
    # what the user sets wins over the record
    assert _settings(tmp_path, kafka_bootstrap="remote:9092").kafka_bootstrap == "remote:9092"


def test_node_properties_name_every_voter_and_replicate_internal_topics(
        tmp_path: Path) -> None:
    nodes = plan_nodes(_settings(tmp_path), 3)
    text = node_properties(nodes[1], nodes, tmp_path / "data", clustered=True)
    lines = text.splitlines()
    assert "node.id=2" in lines
    assert ("controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
            in lines)
    assert "listeners=PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095" in lines
    for line in ("offsets.topic.replication.factor=3", "transaction.state.log.min.isr=2",
                 "default.replication.factor=3", "min.insync.replicas=2",
                 "unclean.leader.election.enable=false"):
        assert line in lines
    assert "offsets.topic.replication.factor=1" in node_properties(
        nodes[0], nodes[:1], tmp_path / "data", clustered=False)


def test_a_node_s_overrides_replace_rendered_keys_in_place_and_add_the_others(
        tmp_path: Path) -> None:
    nodes = plan_nodes(_settings(tmp_path), 3)
    plain = node_properties(nodes[0], nodes, tmp_path / "data", clustered=True).splitlines()
    overrides = parse_properties("# a comment\n\ninter.broker.listener.name = B1\n"
                                 "listeners=B1://127.0.0.1:26311\nreplica.lag.time.max.ms=6000\n")
    assert overrides == {"inter.broker.listener.name": "B1",
                         "listeners": "B1://127.0.0.1:26311",
                         "replica.lag.time.max.ms": "6000"}
    text = node_properties(nodes[0], nodes, tmp_path / "data", clustered=True,
                           overrides=overrides).splitlines()
    replaced = {"inter.broker.listener.name=PLAINTEXT": "inter.broker.listener.name=B1",
                "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093":
                    "listeners=B1://127.0.0.1:26311"}
    assert set(replaced) <= set(plain)
    assert text == [replaced.get(ln, ln) for ln in plain] + ["replica.lag.time.max.ms=6000"]


@pytest.mark.parametrize(("brokers", "rf", "isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_replication_defaults_by_cluster_size(brokers: int, rf: int, isr: int) -> None:
    assert f"default.replication.factor={rf}" in cluster_defaults(brokers)
    assert f"min.insync.replicas={isr}" in cluster_defaults(brokers)
    desired = desired_topics(load_catalogue(ROOT), brokers)
    assert len(desired) == 2 * len(load_catalogue(ROOT).topics)
    assert {(d.replication_factor, d.config["min.insync.replicas"]) for d in desired} == {
        (rf, str(isr))}


def test_a_topic_spec_may_set_its_own_replication() -> None:
    spec = TopicSpec.model_validate({"name": "t", "schema": "s", "partitions": 1,
                                     "replication_factor": 2,
                                     "config": {"min.insync.replicas": "2"}})
    assert spec.replication(5) == (2, 2)
    plain = TopicSpec.model_validate({"name": "t", "schema": "s", "partitions": 1})
    assert plain.replication(1) == (1, 1)
    assert plain.replication(3) == (3, 2)


# as kafka-metadata-quorum 4.1 prints it (tab-separated, padded), static quorum
REPLICATION = "".join("\t".join(row) + "\t\n" for row in [
    ["NodeId", "DirectoryId           ", "LogEndOffset", "Lag", "LastFetchTimestamp",
     "LastCaughtUpTimestamp", "Status  "],
    ["2     ", "AAAAAAAAAAAAAAAAAAAAAA", "43          ", "0  ", "1796524514905     ",
     "1796524514905        ", "Leader  "],
    ["1     ", "AAAAAAAAAAAAAAAAAAAAAA", "43          ", "0  ", "1796524514668     ",
     "1796524514668        ", "Follower"],
    ["3     ", "AAAAAAAAAAAAAAAAAAAAAA", "40          ", "3  ", "1796524514674     ",
     "1796524514674        ", "Follower"]])


def test_the_quorum_table_is_read_by_its_header() -> None:
    quorum = parse_replication(REPLICATION)
    assert quorum.leader == 2
    assert quorum.voters == [Voter(2, "Leader", 43, 0), Voter(1, "Follower", 43, 0),
                             Voter(3, "Follower", 40, 3)]
    assert quorum.observers == []
    assert quorum.max_lag == 3
    with pytest.raises(StackError, match="no replication table"):
        parse_replication("Error while executing\n")


def test_under_replicated_partitions_are_those_with_fewer_in_sync() -> None:
    topics = [{"topic": "b", "partitions": [
        {"partition": 1, "leader": 2, "replicas": [1, 2, 3], "isr": [2, 3]},
        {"partition": 0, "leader": 1, "replicas": [1, 2, 3], "isr": [1, 2, 3]}]},
        {"topic": "a", "partitions": [
            {"partition": 0, "leader": -1, "replicas": [3], "isr": []}]}]
    assert [(u.topic, u.partition, u.leader, u.isr) for u in under_replicated(topics)] == [
        ("a", 0, -1, []), ("b", 1, 2, [2, 3])]
