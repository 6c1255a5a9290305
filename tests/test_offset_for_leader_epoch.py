"""OffsetForLeaderEpoch (23) with leader epoch -1 everywhere: epoch -1 ends at the high
watermark, an epoch the broker never had has no end (-1/-1), a current epoch ahead of ours is
UNKNOWN_LEADER_EPOCH, and Metadata reports leader epoch -1 too (so clients skip validation)."""

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol.consumer.offsets import (
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
)
from kafka.protocol.metadata import MetadataRequest, MetadataResponse

from client_helpers import RawConnection, produce_ok, rdkafka_producer

UNKNOWN_TOPIC_OR_PARTITION = 3
UNKNOWN_LEADER_EPOCH = 75


def ask(broker, version, topic, partitions):
    """partitions: [(partition, current_leader_epoch, leader_epoch)] -> [(error, epoch, end)]."""
    request_topic = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
    request = OffsetForLeaderEpochRequest(replica_id=-1, topics=[request_topic(
        topic=topic, partitions=[
            request_topic.OffsetForLeaderPartition(
                partition=partition, current_leader_epoch=current, leader_epoch=epoch)
            for partition, current, epoch in partitions])])
    connection = RawConnection(broker)
    try:
        response = connection.call(request, OffsetForLeaderEpochResponse, version)
    finally:
        connection.close()
    [answer] = response.topics
    return [(p.error_code, p.leader_epoch, p.end_offset) for p in answer.partitions]


@pytest.mark.parametrize("version", [2, 3, 4])
def test_epochs_against_the_only_epoch(broker, version):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    client.create_topics([NewTopic("epochs", 2, 1)])["epochs"].result(30)
    produce_ok(rdkafka_producer(broker), "epochs",
               [{"value": b"v", "partition": p} for p in (0, 1, 1, 1)])
    answers = ask(broker, version, "epochs", [
        (0, -1, -1), (1, -1, -1), (1, -1, 0), (1, 0, 0), (1, 3, -1), (5, -1, -1)])
    assert answers == [
        (0, -1, 1),
        (0, -1, 3),
        (0, -1, -1),
        (UNKNOWN_LEADER_EPOCH, -1, -1),
        (UNKNOWN_LEADER_EPOCH, -1, -1),
        (UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
    ]
    assert ask(broker, version, "no-such-topic", [(0, -1, -1)]) == [
        (UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]


def test_metadata_leader_epoch_is_minus_one(broker):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    client.create_topics([NewTopic("epoch-meta", 3, 1)])["epoch-meta"].result(30)
    connection = RawConnection(broker)
    try:
        response = connection.call(
            MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="epoch-meta")],
                            allow_auto_topic_creation=False),
            MetadataResponse, 9)
    finally:
        connection.close()
    [topic] = response.topics
    assert sorted(p.leader_epoch for p in topic.partitions) == [-1, -1, -1]
