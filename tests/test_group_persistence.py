"""Consumer groups survive a broker restart: committed offsets (with their metadata) and group
tombstones are records in the internal compacted topic `__consumer_offsets`, replayed on start.
Restarts are clean (SIGTERM) and `kill -9`; a new consumer of the same group resumes exactly after
the last commit, and kafka-python's admin client sees the same offsets."""

import time
import uuid

import pytest
from confluent_kafka import TopicPartition
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from client_helpers import produce, rdkafka_producer
from test_groups import create_topic, group_consumer

RECORDS_PER_PARTITION = 10


def consume_all(consumer, count, timeout=30):
    messages = []
    deadline = time.time() + timeout
    while len(messages) < count and time.time() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            messages.append(message)
    return messages


def group_offsets(broker, group):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
        return {(tp.topic, tp.partition): (meta.offset, meta.metadata) for tp, meta in offsets.items()}
    finally:
        admin.close()


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "kill-9"])
def test_group_resumes_after_restart(broker, clean):
    topic = f"persist-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    producer = rdkafka_producer(broker)
    produce(producer, topic, [{"value": f"p{i % 2}-{i // 2}".encode(), "partition": i % 2}
                              for i in range(2 * RECORDS_PER_PARTITION)])
    group = f"g-{uuid.uuid4().hex[:6]}"

    consumer = group_consumer(broker, group)
    consumer.subscribe([topic])
    assert len(consume_all(consumer, 2 * RECORDS_PER_PARTITION)) == 2 * RECORDS_PER_PARTITION
    # Two commits per partition: only the last one may count after the restart.
    consumer.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 3)],
                    asynchronous=False)
    consumer.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 7)],
                    asynchronous=False)
    consumer.close()
    before = group_offsets(broker, group)
    assert before == {(topic, 0): (4, ""), (topic, 1): (7, "")}

    broker.restart(clean=clean)

    assert group_offsets(broker, group) == before
    resumed = group_consumer(broker, group)
    resumed.subscribe([topic])
    expected = (RECORDS_PER_PARTITION - 4) + (RECORDS_PER_PARTITION - 7)
    rest = consume_all(resumed, expected)
    # Anything beyond the expected count would be a record consumed twice.
    extra = consume_all(resumed, 1, timeout=2)
    resumed.close()
    assert extra == []
    seen = sorted((m.partition(), m.offset()) for m in rest)
    assert seen == [(0, offset) for offset in range(4, RECORDS_PER_PARTITION)] + \
        [(1, offset) for offset in range(7, RECORDS_PER_PARTITION)]


def test_deletes_survive_a_restart(broker):
    """OffsetDelete and DeleteGroups write tombstones: deleted offsets and groups stay deleted,
    and the other groups' offsets (with their metadata) stay."""
    topic = f"persist-del-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    prefix = uuid.uuid4().hex[:6]
    kept, deleted = f"kept-{prefix}", f"deleted-{prefix}"
    tp0, tp1 = KafkaTopicPartition(topic, 0), KafkaTopicPartition(topic, 1)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.alter_group_offsets(kept, {tp0: OffsetAndMetadata(5, "", -1),
                                         tp1: OffsetAndMetadata(6, "meta", -1)})
        admin.alter_group_offsets(deleted, {tp0: OffsetAndMetadata(9, "", -1)})
        admin.delete_group_offsets(kept, [tp0])
        assert admin.delete_groups([deleted])[deleted] == "OK"
    finally:
        admin.close()

    broker.restart(clean=False)

    assert group_offsets(broker, kept) == {(topic, 1): (6, "meta")}
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        groups = {g["group_id"] for g in admin.list_groups()}
        assert kept in groups and deleted not in groups
        topics = {t["name"]: t for t in admin.describe_topics()}
    finally:
        admin.close()
    # Kafka lists the offsets topic among all topics, marked internal.
    offsets_topic = topics["__consumer_offsets"]
    assert offsets_topic["is_internal"] is True
    assert len(offsets_topic["partitions"]) == 50
