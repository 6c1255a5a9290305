"""Consumer groups (classic protocol, in memory): partitions shared among members, rebalances
when a member leaves, committed offsets resumed by the next member, with confluent-kafka
(librdkafka) and kafka-python consumers."""

import struct
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.record._crc32c import crc as crc32c
from kafka.structs import OffsetAndMetadata
from kafka import TopicPartition as KafkaTopicPartition

from client_helpers import produce, rdkafka_producer


def create_topic(broker, name, partitions):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(30)


def group_consumer(broker, group, **conf):
    settings = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    settings.update(conf)
    return Consumer(settings)


def poll_until(consumers, done, timeout=30):
    """Polls every consumer in turn until `done()` holds; returns the messages seen per consumer."""
    seen = [[] for _ in consumers]
    deadline = time.time() + timeout
    while time.time() < deadline:
        for index, consumer in enumerate(consumers):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                seen[index].append(message)
        if done():
            return seen
    raise AssertionError(f"timed out; assignments: {[sorted(p.partition for p in c.assignment()) for c in consumers]}")


def partitions_of(consumer):
    return sorted(partition.partition for partition in consumer.assignment())


def test_two_members_share_then_one_leaves(broker):
    topic = f"groups-share-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 4)
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = group_consumer(broker, group)
    second = group_consumer(broker, group)
    first.subscribe([topic])
    second.subscribe([topic])
    poll_until([first, second],
               lambda: len(partitions_of(first)) == 2 and len(partitions_of(second)) == 2)
    assert sorted(partitions_of(first) + partitions_of(second)) == [0, 1, 2, 3]

    second.close()  # a clean LeaveGroup: the survivor gets everything at once
    started = time.time()
    poll_until([first], lambda: partitions_of(first) == [0, 1, 2, 3], timeout=20)
    assert time.time() - started < 6, "the rebalance waited for a session timeout"
    first.close()


def test_commit_and_resume_in_the_same_group(broker):
    topic = f"groups-resume-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    group = f"g-{uuid.uuid4().hex[:6]}"
    producer = rdkafka_producer(broker)
    produce(producer, topic, [{"value": f"v{i}".encode(), "partition": i % 2} for i in range(20)])

    consumer = group_consumer(broker, group)
    consumer.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < 10 and time.time() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got.append(message)
    assert len(got) >= 10
    consumer.commit(asynchronous=False)  # commits the positions after everything polled
    committed = {tp.partition: tp.offset for tp in consumer.committed(consumer.assignment(), 10)}
    expected = {}
    for message in got:
        expected[message.partition()] = max(expected.get(message.partition(), 0), message.offset() + 1)
    for partition, offset in expected.items():
        assert committed[partition] == offset
    consumer.close()

    resumed = group_consumer(broker, group)
    resumed.subscribe([topic])
    rest = []
    deadline = time.time() + 30
    while len(got) + len(rest) < 20 and time.time() < deadline:
        message = resumed.poll(0.2)
        if message is not None and message.error() is None:
            rest.append(message)
    resumed.close()
    values = sorted(m.value() for m in got) + sorted(m.value() for m in rest)
    assert len(rest) == 20 - len(got), "records consumed twice or skipped after the commit"
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(20))
    for message in rest:
        assert message.offset() >= expected.get(message.partition(), 0)


def test_kafka_python_group_consumes_and_commits(broker):
    topic = f"groups-kp-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    group = f"kp-{uuid.uuid4().hex[:6]}"
    producer = rdkafka_producer(broker)
    produce(producer, topic, [{"value": f"k{i}".encode(), "partition": i % 2} for i in range(6)])

    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=15000)
    values = []
    for message in consumer:
        values.append(message.value)
        if len(values) == 6:
            break
    assert sorted(values) == sorted(f"k{i}".encode() for i in range(6))
    consumer.commit()
    assert consumer.committed(KafkaTopicPartition(topic, 0)) == 3
    assert consumer.committed(KafkaTopicPartition(topic, 1)) == 3
    consumer.close()

    # The commit is visible to another client of the same group.
    checker = group_consumer(broker, group)
    committed = checker.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], 10)
    assert [tp.offset for tp in committed] == [3, 3]
    checker.close()


def coordinator_shard(group, shards=2):
    """The broker's placement (net/src/group_service.rs): Java's String.hashCode of the group id,
    masked positive, modulo 50 partitions of __consumer_offsets, then that partition's shard."""
    hash_code = 0
    for unit in struct.unpack(f">{len(group.encode('utf-16-be')) // 2}H", group.encode("utf-16-be")):
        hash_code = (hash_code * 31 + unit) & 0xFFFFFFFF
    partition = (hash_code & 0x7FFFFFFF) % 50
    return crc32c(b"__consumer_offsets" + struct.pack(">i", partition)) % shards


def test_admin_apis_on_groups_of_both_shards(broker):
    """Offsets altered, fetched (several groups in one OffsetFetch v8+), listed, described and
    deleted for two groups coordinated by different shards: whichever shard serves the admin
    connection, one of them is remote."""
    prefix = uuid.uuid4().hex[:6]
    by_shard = {}
    index = 0
    while len(by_shard) < 2:
        group = f"admin-{prefix}-{index}"
        by_shard.setdefault(coordinator_shard(group), group)
        index += 1
    first, second = by_shard[0], by_shard[1]
    topic = f"groups-admin-{prefix}"
    create_topic(broker, topic, 2)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        tp0, tp1 = KafkaTopicPartition(topic, 0), KafkaTopicPartition(topic, 1)
        admin.alter_group_offsets(first, {tp0: OffsetAndMetadata(5, "meta", -1),
                                          tp1: OffsetAndMetadata(7, "", -1)})
        admin.alter_group_offsets(second, {tp1: OffsetAndMetadata(9, "", -1)})
        offsets = admin.list_group_offsets({first: None, second: None})
        assert {tp: (o.offset, o.metadata) for tp, o in offsets[first].items()} == \
            {tp0: (5, "meta"), tp1: (7, "")}
        assert {tp: o.offset for tp, o in offsets[second].items()} == {tp1: 9}

        listed = {g["group_id"]: g["group_state"] for g in admin.list_groups()}
        assert listed.get(first) == "Empty" and listed.get(second) == "Empty"
        described = admin.describe_groups([first, second])
        assert described[first]["group_state"] == "Empty"
        assert described[second]["members"] == []

        admin.delete_group_offsets(first, [tp0])
        assert set(admin.list_group_offsets({first: None})[first]) == {tp1}

        results = admin.delete_groups([first, second, f"never-{prefix}"])
        assert results[first] == "OK" and results[second] == "OK"
        assert results[f"never-{prefix}"] == "GroupIdNotFoundError"
        remaining = {g["group_id"] for g in admin.list_groups()}
        assert first not in remaining and second not in remaining
    finally:
        admin.close()


def test_active_group_is_described_and_protected(broker):
    topic = f"groups-active-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    group = f"active-{uuid.uuid4().hex[:6]}"
    consumer = group_consumer(broker, group, **{"client.id": "active-client"})
    consumer.subscribe([topic])
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        poll_until([consumer], lambda: partitions_of(consumer) == [0, 1])
        described = admin.describe_groups([group])[group]
        assert described["group_state"] == "Stable"
        assert described["protocol_type"] == "consumer"
        assert [m["client_id"] for m in described["members"]] == ["active-client"]
        assert admin.delete_groups([group])[group] == "NonEmptyGroupError"
        errors = admin.delete_group_offsets(group, [KafkaTopicPartition(topic, 0)])
        assert errors[KafkaTopicPartition(topic, 0)].__name__ == "GroupSubscribedToTopicError"
    finally:
        consumer.close()
        admin.close()
