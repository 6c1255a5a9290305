"""DeleteRecords (21) through confluent-kafka's admin client: the log start moves to the given
offset (-1: the high watermark), reads start there, errors come back per partition, and the new
start survives a restart."""

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from client_helpers import consume_all, produce_ok, rdkafka_consumer, rdkafka_producer


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def delete_before(client, topic, partition, offset):
    tp = TopicPartition(topic, partition, offset)
    return client.delete_records([tp])[tp].result(30).low_watermark


def watermarks(broker, topic, partition):
    consumer = rdkafka_consumer(broker)
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        consumer.close()


def refused(call):
    with pytest.raises(KafkaException) as raised:
        call()
    return raised.value.args[0].code()


def test_delete_moves_the_log_start_on_every_shard(broker):
    client = admin(broker)
    client.create_topics([NewTopic("trimmed", 4, 1)])["trimmed"].result(30)
    producer = rdkafka_producer(broker)
    produce_ok(producer, "trimmed", [{"value": b"%d" % i, "partition": p}
                                     for p in range(4) for i in range(10)])
    for partition in range(4):
        assert delete_before(client, "trimmed", partition, 4 + partition) == 4 + partition
    for partition in range(4):
        assert watermarks(broker, "trimmed", partition) == (4 + partition, 10)
    read = consume_all(broker, "trimmed", range(4))
    for partition in range(4):
        assert [message.offset() for message in read[partition]] == list(range(4 + partition, 10))
    # An offset below the current start changes nothing.
    assert delete_before(client, "trimmed", 0, 2) == 4
    # -1: everything up to the high watermark.
    assert delete_before(client, "trimmed", 1, -1) == 10
    broker.restart(clean=True)
    assert watermarks(broker, "trimmed", 0) == (4, 10)
    assert watermarks(broker, "trimmed", 1) == (10, 10)


def test_errors_per_partition(broker):
    client = admin(broker)
    created = client.create_topics([
        NewTopic("bounded", 1, 1),
        NewTopic("compacted", 1, 1, config={"cleanup.policy": "compact"})])
    for future in created.values():
        future.result(30)
    produce_ok(rdkafka_producer(broker), "bounded", [{"value": b"x"}] * 3)
    assert refused(lambda: delete_before(client, "bounded", 0, 4)) == (
        KafkaError.OFFSET_OUT_OF_RANGE)
    assert refused(lambda: delete_before(client, "compacted", 0, 0)) == (
        KafkaError.POLICY_VIOLATION)
    assert watermarks(broker, "bounded", 0) == (0, 3)
