"""A publish failure says whether publishing again can help: ``PublishError.retriable``
follows Kafka's own error, on every path (publish()'s batches, send_raw, flush()).

The retriable case against a real cluster (NotEnoughReplicas while a broker is down) is
tests/chaos/test_cluster_faults.py: its publisher publishes again only what says so."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from sinkfleet.dev.synthetic.loads import ExperienceLoad
from sinkfleet.errors import PublishError, PublishTimeout
from sinkfleet.producer import Publisher
from sinkfleet.producer.publisher import all_retriable, publish_error
from tests.support.catalogue import TestCatalogue
from tests.support.kafka import end_offsets


@pytest.mark.parametrize("exc, retriable", [
    (NotEnoughReplicasError(), True), (NotLeaderForPartitionError(), True),
    (RequestTimedOutError(), True), (KafkaConnectionError("gone"), True),
    (MessageSizeTooLargeError(), False), (TopicAuthorizationFailedError(), False)])
def test_kafkas_errors_become_publish_errors_as_retriable_as_they_were(
        exc: Exception, retriable: bool) -> None:
    error = publish_error("t[0]: not acknowledged: ", exc)
    assert isinstance(error, PublishError)
    assert error.retriable is retriable
    assert str(error).startswith("t[0]: not acknowledged: ")
    assert type(exc).__name__ in str(error)  # what Kafka said stays in the message


def test_ours_and_foreign_errors_pass_through() -> None:
    timeout = PublishTimeout("buffer full")
    assert publish_error("x: ", timeout) is timeout and timeout.retriable
    bug = ValueError("a bug stays a bug")
    assert publish_error("x: ", bug) is bug
    assert PublishError("refused").retriable is False


def test_a_missing_topic_says_how_to_create_it() -> None:
    """A newcomer's first publish before the topics exist: the error says what to run."""
    error = publish_error("send to t failed: ", UnknownTopicOrPartitionError())
    assert isinstance(error, PublishError)
    assert "UnknownTopicOrPartition" in str(error)
    assert "`sinkfleet topics apply`" in str(error)
    assert "topics apply" not in str(publish_error("", NotEnoughReplicasError()))


def test_an_aggregate_is_retriable_only_if_each_failure_is() -> None:
    outage = publish_error("", NotEnoughReplicasError())
    refused = publish_error("", MessageSizeTooLargeError())
    assert all_retriable([outage, outage])
    assert not all_retriable([outage, refused])
    assert not all_retriable([outage, ValueError()])


@pytest.mark.integration
async def test_a_record_the_broker_refuses_fails_as_not_retriable_on_every_path(
        catalogue_factory: Any) -> None:
    """The topic takes 1,000 bytes at most (the client allows 1 MiB, so only the broker
    refuses; random bytes, so compression cannot shrink them under the limit): the futures
    of publish() and send_raw() and flush() all carry a PublishError that is not retriable
    (publishing the same bytes again cannot help)."""
    tc: TestCatalogue = await catalogue_factory()
    admin = AIOKafkaAdminClient(bootstrap_servers=tc.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, tc.topic,
                                                  configs={"max.message.bytes": "1000"})])
    finally:
        await admin.close()
    event = next(iter(ExperienceLoad(seed=31)))
    event["action_metadata"] = {"intent_type": "explore", "executor_id": "exec-1",
                                "parameters": json.dumps({"blob": os.urandom(3000).hex()})}
    async with Publisher(tc.settings, catalogue=tc.catalogue) as pub:
        small = await pub.publish("experience_event", next(iter(ExperienceLoad(seed=32))))
        await pub.flush()  # metadata loaded: publish() now takes its batch path
        batched = await pub.publish("experience_event", event)
        raw = await pub.send_raw(tc.topic, os.urandom(4000), key=b"k")
        with pytest.raises(PublishError) as flushed:
            await pub.flush()
        assert flushed.value.retriable is False
        assert "2 record(s) were not acknowledged" in str(flushed.value)
        for fut in (batched, raw):
            error = fut.exception()
            assert isinstance(error, PublishError), repr(error)
            assert error.retriable is False
            assert "MessageSizeTooLarge" in str(error)
    assert small.result().offset == 0
    assert sum((await end_offsets(tc.settings, [tc.topic])).values()) == 1
