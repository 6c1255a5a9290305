"""Log compaction against the real binary: a `cleanup.policy=compact` topic keeps exactly the
latest value of every key at the offset it was produced at, removes tombstones only after
`delete.retention.ms`, stays that way across a `kill -9`; `__consumer_offsets` is compacted too,
and a consumer group still resumes at its last commit after a restart. `--log-cleaner-backoff-ms`
makes the cleaner quick."""

import os
import time
import uuid

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from client_helpers import produce, rdkafka_consumer, rdkafka_producer
from test_groups import group_consumer

KEYS = 20
ROUNDS = 12
DELETED = 5
DELETE_RETENTION_MS = 5000
FAST_CLEANER = ["--log-cleaner-backoff-ms", "100"]


def create_topic(broker, name, configs, partitions=1):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs)])
    futures[name].result(30)


def read_partition(broker, topic, partition=0, timeout=20):
    """Every record from the log start to the high watermark; offsets may skip (compaction)."""
    consumer = rdkafka_consumer(broker)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, low)])
        messages = []
        deadline = time.time() + timeout
        while (not messages or messages[-1].offset() < high - 1) and time.time() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                assert message.error() is None, message.error()
                messages.append(message)
        assert messages and messages[-1].offset() == high - 1, f"read stopped short of {high}"
        offsets = [message.offset() for message in messages]
        assert offsets == sorted(set(offsets)), "offsets must increase"
        return high, messages
    finally:
        consumer.close()


def by_key(messages):
    grouped = {}
    for message in messages:
        grouped.setdefault(message.key(), []).append((message.offset(), message.value()))
    return grouped


def wait_for(condition, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def seal_everything(broker, topic):
    """Two batches larger than segment.bytes: each rolls a new segment, so every earlier record
    ends up in a sealed (cleanable) segment."""
    producer = rdkafka_producer(broker)
    for _ in range(2):
        produce(producer, topic, [{"key": b"filler", "value": os.urandom(1500)}])


def test_compacted_topic_keeps_the_latest_value_of_each_key(broker_factory):
    broker = broker_factory(extra_args=FAST_CLEANER)
    topic = f"compacted-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, {
        "cleanup.policy": "compact",
        "segment.bytes": "1024",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS),
    })
    producer = rdkafka_producer(broker, compression_type="lz4")
    latest = {}
    for round_index in range(ROUNDS):
        records = [{"key": f"key-{k}".encode(), "value": f"value-{k}-{round_index}".encode()}
                   for k in range(KEYS)]
        for record, (error, _, offset, _) in zip(records, produce(producer, topic, records)):
            assert error is None, error
            latest[record["key"]] = (offset, record["value"])
    deletes = [{"key": f"key-{k}".encode(), "value": None} for k in range(DELETED)]
    for record, (error, _, offset, _) in zip(deletes, produce(producer, topic, deletes)):
        assert error is None, error
        latest[record["key"]] = (offset, None)
    # A compacted topic refuses a record without a key, as Kafka does.
    keyless = produce(rdkafka_producer(broker), topic, [{"value": b"no key"}])[0][0]
    assert keyless is not None and keyless.code() == KafkaError.INVALID_RECORD, keyless
    seal_everything(broker, topic)
    live = {key for key, (_, value) in latest.items() if value is not None}
    deleted = set(latest) - live

    def one_record_per_key():
        high, messages = read_partition(broker, topic)
        grouped = by_key(messages)
        if all(len(grouped.get(key, [])) == 1 for key in latest):
            return high, messages
        return None

    high, messages = wait_for(one_record_per_key, "the cleaner to leave one record per key")
    grouped = by_key(messages)
    for key in live:
        assert grouped[key] == [latest[key]], f"{key}: not the latest value at its offset"
    # Tombstones stay for delete.retention.ms after the clean that first passed over them.
    for key in deleted:
        assert grouped[key] == [latest[key]], f"{key}: tombstone gone too early"
    # The offsets skip where superseded records were: from 0 to the last round, at least.
    assert messages[0].offset() > 0 and len(messages) < high / 4, "nothing was compacted"

    def tombstones_gone():
        end, remaining = read_partition(broker, topic)
        return (end, remaining) if not deleted & set(by_key(remaining)) else None

    end, after_expiry = wait_for(tombstones_gone, "tombstones to expire",
                                 timeout=DELETE_RETENTION_MS / 1000 + 30)
    assert end == high, "cleaning moved the log end"
    expected = [(m.offset(), m.key(), m.value()) for m in messages if m.key() not in deleted]
    assert [(m.offset(), m.key(), m.value()) for m in after_expiry] == expected

    broker.restart(clean=False)
    end, after_restart = read_partition(broker, topic)
    assert end == high
    assert [(m.offset(), m.key(), m.value()) for m in after_restart] == expected


def test_topic_configs_for_compaction_are_described_and_altered(broker_factory):
    broker = broker_factory()
    topic = f"compacted-configs-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, {"cleanup.policy": "compact,delete", "delete.retention.ms": "1000"})
    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ResourceType)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("min.cleanable.dirty.ratio", "0.2",
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    entries = described[ConfigResource(ResourceType.TOPIC, topic)].result(30)
    assert entries["cleanup.policy"].value == "compact,delete"
    assert entries["delete.retention.ms"].value == "1000"
    assert entries["min.cleanable.dirty.ratio"].value == "0.2"
    assert entries["min.compaction.lag.ms"].value == "0"
    bad = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("min.cleanable.dirty.ratio", "2",
                    incremental_operation=AlterConfigOpType.SET)])
    try:
        admin.incremental_alter_configs([bad])[bad].result(30)
        raise AssertionError("a ratio of 2 was accepted")
    except Exception as error:  # KafkaException carrying INVALID_CONFIG
        assert "INVALID_CONFIG" in str(error) or "nvalid" in str(error), error


def offsets_topic_bytes(broker):
    total = 0
    for name in os.listdir(broker.data_dir):
        if name.startswith("__consumer_offsets-"):
            directory = os.path.join(broker.data_dir, name)
            total += sum(os.path.getsize(os.path.join(directory, entry))
                         for entry in os.listdir(directory) if entry.endswith(".log"))
    return total


def test_groups_resume_after_consumer_offsets_is_compacted_and_the_broker_restarts(
        tmp_path, broker_factory):
    config = tmp_path / "server.properties"
    config.write_text("log.segment.bytes=1024\nlog.cleaner.min.cleanable.ratio=0.1\n")
    broker = broker_factory(extra_args=["--config", str(config), *FAST_CLEANER])
    suffix = uuid.uuid4().hex[:6]
    topic, group = f"compact-group-{suffix}", f"g-compact-{suffix}"
    create_topic(broker, topic, {}, partitions=2)
    produce(rdkafka_producer(broker), topic,
            [{"value": f"{i}".encode(), "partition": i % 2} for i in range(100)])
    consumer = group_consumer(broker, group)
    consumer.subscribe([topic])
    seen = 0
    deadline = time.time() + 30
    while seen < 100 and time.time() < deadline:
        message = consumer.poll(0.2)
        seen += message is not None and message.error() is None
    assert seen == 100
    # Many commits of the same two keys: most of __consumer_offsets becomes garbage.
    for index in range(150):
        consumer.commit(offsets=[TopicPartition(topic, 0, index % 40 + 1),
                                 TopicPartition(topic, 1, index % 45 + 2)], asynchronous=False)
    last = {0: 149 % 40 + 1, 1: 149 % 45 + 2}

    def offsets_compacted():
        cleaned = [line for line in broker.log().splitlines()
                   if "cleaned a compacted log" in line and "__consumer_offsets-" in line]
        # 150 commits of two offsets took over 20 KB; compacted, a few segments remain.
        return cleaned and offsets_topic_bytes(broker) < 6000

    wait_for(offsets_compacted, "the cleaner to compact __consumer_offsets")
    consumer.close()

    broker.restart(clean=False)
    resumed = group_consumer(broker, group)
    committed = resumed.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=30)
    assert {tp.partition: tp.offset for tp in committed} == last
    resumed.subscribe([topic])
    rest = []
    wanted = (50 - last[0]) + (50 - last[1])
    deadline = time.time() + 30
    while len(rest) < wanted and time.time() < deadline:
        message = resumed.poll(0.2)
        if message is not None and message.error() is None:
            rest.append((message.partition(), message.offset()))
    resumed.close()
    assert sorted(rest) == [(0, offset) for offset in range(last[0], 50)] + \
        [(1, offset) for offset in range(last[1], 50)]
