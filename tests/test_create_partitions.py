"""CreatePartitions (37) through confluent-kafka's admin client: a topic grows (never shrinks),
validate_only changes nothing, the new partitions are writable and readable on whichever shard
owns them, and the new count survives a restart."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from client_helpers import consume_all, produce_ok, rdkafka_producer


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def grow(client, topic, count, validate_only=False, assignment=None):
    new = NewPartitions(topic, count, assignment) if assignment else NewPartitions(topic, count)
    client.create_partitions([new], validate_only=validate_only)[topic].result(30)


def partition_count(client, topic):
    return len(client.list_topics(topic, timeout=10).topics[topic].partitions)


def refused(call):
    with pytest.raises(KafkaException) as raised:
        call()
    return raised.value.args[0].code()


def test_grow_validate_only_and_refusals(broker):
    client = admin(broker)
    client.create_topics([NewTopic("growing", 2, 1)])["growing"].result(30)
    grow(client, "growing", 5, validate_only=True)
    assert partition_count(client, "growing") == 2
    grow(client, "growing", 5)
    assert partition_count(client, "growing") == 5
    assert refused(lambda: grow(client, "growing", 3)) == KafkaError.INVALID_PARTITIONS
    assert refused(lambda: grow(client, "growing", 5)) == KafkaError.INVALID_PARTITIONS
    assert refused(lambda: grow(client, "never-made", 3)) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # One broker: an assignment may only name it.
    assert refused(lambda: grow(client, "growing", 6, assignment=[[2]])) == (
        KafkaError.INVALID_REPLICA_ASSIGNMENT)
    grow(client, "growing", 6, assignment=[[1]])
    assert partition_count(client, "growing") == 6


def test_new_partitions_work_and_survive_restart(broker):
    client = admin(broker)
    client.create_topics([NewTopic("widened", 1, 1)])["widened"].result(30)
    producer = rdkafka_producer(broker)
    produce_ok(producer, "widened", [{"value": b"before", "partition": 0}])
    grow(client, "widened", 8)
    # librdkafka learns the new count from Metadata.
    producer.list_topics("widened", timeout=10)
    produce_ok(producer, "widened", [{"value": b"p%d" % p, "partition": p} for p in range(8)])
    broker.restart(clean=True)
    assert partition_count(admin(broker), "widened") == 8
    read = consume_all(broker, "widened", range(8))
    assert [message.value() for message in read[0]] == [b"before", b"p0"]
    for partition in range(1, 8):
        assert [message.value() for message in read[partition]] == [b"p%d" % partition]
