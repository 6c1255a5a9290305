"""confluent-kafka (librdkafka, the wheel's bundled build): admin topics, keys and partitioning,
ordering, headers, null keys and values, a 1 MiB record, the four codecs, the idempotent
producer, consuming from the beginning and from an offset, and ListOffsets by time.
Consumers use manual assignment only."""

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException,
                             TopicCollection, TopicPartition)
from confluent_kafka.admin import (AdminClient, ConfigResource, NewTopic, OffsetSpec)

from client_helpers import (advertised_apis, assert_idempotent_batches, consume_all,
                            consume_range, produce, produce_ok, rdkafka_consumer,
                            rdkafka_producer, stored_batches)

KAFKA_MAX_MESSAGE_BYTES = 1048588  # Kafka's default max.message.bytes (1 MiB + 12)
# The value that makes a one-record batch (key b"k", no headers) exactly that size: 61 bytes of
# batch header, and 12 of record: length (3-byte varint), attributes, timestamp and offset
# deltas, key length, key, value length (3-byte varint), header count.
LARGEST_VALUE = KAFKA_MAX_MESSAGE_BYTES - 61 - 12
FIND_COORDINATOR = 10
DESCRIBE_CONFIGS = 32
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # record batch attribute bits 0-2


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(client, *topics):
    for name, future in client.create_topics(list(topics), operation_timeout=10).items():
        future.result(timeout=10)


def test_admin_create_describe_delete(broker):
    client = admin(broker)
    create(client, NewTopic("orders", num_partitions=3, replication_factor=1,
                            config={"retention.ms": "3600000"}),
           NewTopic("defaults", num_partitions=-1, replication_factor=-1))

    # Errors a client can cause come back as Kafka error codes.
    futures = client.create_topics([NewTopic("orders", 1, 1), NewTopic("bad/name", 1, 1),
                                    NewTopic("too-many-replicas", 1, 3),
                                    NewTopic("no-partitions", 0, 1)])
    expected = {"orders": KafkaError.TOPIC_ALREADY_EXISTS,
                "bad/name": KafkaError.TOPIC_EXCEPTION,
                "too-many-replicas": KafkaError.INVALID_REPLICATION_FACTOR,
                "no-partitions": KafkaError.INVALID_PARTITIONS}
    for name, code in expected.items():
        with pytest.raises(KafkaException) as raised:
            futures[name].result(timeout=10)
        assert raised.value.args[0].code() == code, name
    # validate_only checks without creating.
    client.create_topics([NewTopic("dry-run", 2, 1)], validate_only=True)["dry-run"].result(10)

    metadata = client.list_topics(timeout=10)
    assert {"orders", "defaults"} <= set(metadata.topics)
    assert "dry-run" not in metadata.topics
    assert sorted(metadata.topics["orders"].partitions) == [0, 1, 2]
    assert len(metadata.topics["defaults"].partitions) == 1
    assert list(metadata.brokers) == [1]
    assert metadata.brokers[1].port == broker.port
    for partition in metadata.topics["orders"].partitions.values():
        assert (partition.leader, partition.replicas, partition.isrs) == (1, [1], [1])

    description = client.describe_topics(TopicCollection(["orders"]))["orders"].result(10)
    assert description.name == "orders" and not description.is_internal
    assert description.topic_id is not None
    assert [partition.id for partition in description.partitions] == [0, 1, 2]
    assert all(partition.leader.id == 1 for partition in description.partitions)
    cluster = client.describe_cluster().result(10)
    assert cluster.cluster_id and [node.id for node in cluster.nodes] == [1]
    configs = client.describe_configs([ConfigResource("topic", "orders")])
    if DESCRIBE_CONFIGS in advertised_apis(broker):
        described = list(configs.values())[0].result(10)
        assert described["retention.ms"].value == "3600000"
        assert described["cleanup.policy"].value == "delete"
    else:  # librdkafka refuses locally, without sending anything
        with pytest.raises(KafkaException) as raised:
            list(configs.values())[0].result(10)
        assert raised.value.args[0].code() == KafkaError._UNSUPPORTED_FEATURE

    client.delete_topics(["orders"], operation_timeout=10)["orders"].result(10)
    with pytest.raises(KafkaException) as raised:
        client.delete_topics(["orders"], operation_timeout=10)["orders"].result(10)
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert "orders" not in client.list_topics(timeout=10).topics
    # A recreated topic starts empty.
    create(client, NewTopic("orders", num_partitions=1, replication_factor=1))
    consumer = rdkafka_consumer(broker)
    assert consumer.get_watermark_offsets(TopicPartition("orders", 0), timeout=10) == (0, 0)
    consumer.close()


def test_keys_partitions_and_order(broker):
    create(admin(broker), NewTopic("keyed", num_partitions=4, replication_factor=1))
    producer = rdkafka_producer(broker, acks="all")
    keys = [f"user-{index}".encode() for index in range(12)]
    records = [{"key": keys[index % len(keys)], "value": f"event-{index}".encode()}
               for index in range(240)]
    # Unkeyed records too: the sticky partitioner spreads them, and they must keep their order.
    records += [{"value": f"unkeyed-{index}".encode()} for index in range(60)]
    placed = produce_ok(producer, "keyed", records)

    partition_of_key = {}
    for record, (partition, _) in zip(records, placed):
        if "key" in record:
            assert partition_of_key.setdefault(record["key"], partition) == partition
    assert len(set(partition_of_key.values())) > 1, "12 keys should not all hash to one partition"

    # Per partition: offsets are dense from 0 and follow production order exactly.
    by_partition = {}
    for record, (partition, offset) in zip(records, placed):
        by_partition.setdefault(partition, []).append((offset, record))
    read = consume_all(broker, "keyed", range(4))
    for partition, produced in by_partition.items():
        assert [offset for offset, _ in produced] == list(range(len(produced)))
        assert [(message.key(), message.value()) for message in read[partition]] == [
            (record.get("key"), record["value"]) for _, record in produced]


def test_headers_and_null_keys_and_values(broker):
    producer = rdkafka_producer(broker)
    every_byte = bytes(range(256))
    records = [
        {"key": None, "value": None},
        {"key": b"", "value": b""},
        {"key": b"tombstone", "value": None},
        {"key": None, "value": b"no key"},
        {"key": b"k", "value": b"v", "headers": [
            ("binary", every_byte), ("empty", b""), ("null", None), ("dup", b"1"),
            ("dup", b"2"), ("unicode-\u00e9\u6f22", "\u00fc".encode()), ("", b"empty name")]},
    ]
    placed = produce_ok(producer, "headers", records)
    assert [offset for _, offset in placed] == list(range(len(records)))
    messages = consume_all(broker, "headers", [0])[0]
    assert [(message.key(), message.value()) for message in messages] == [
        (record["key"], record["value"]) for record in records]
    assert [message.headers() for message in messages[:4]] == [None] * 4
    assert messages[4].headers() == records[4]["headers"]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_and_mid_batch_fetch(broker, codec):
    topic = f"codec-{codec}"
    producer = rdkafka_producer(broker, compression_type=codec, linger_ms=50)
    records = [{"key": f"k{index}".encode(), "value": (f"{codec}-{index}-" * 20).encode(),
                "headers": [("index", str(index).encode())]} for index in range(100)]
    placed = produce_ok(producer, topic, records)
    assert placed == [(0, offset) for offset in range(100)]

    consumer = rdkafka_consumer(broker)
    everything = consume_range(consumer, topic, 0, 0, 100)
    assert [(message.key(), message.value(), message.headers()) for message in everything] == [
        (record["key"], record["value"], record["headers"]) for record in records]
    # Starting inside a compressed batch: the broker sends the whole batch, the client skips
    # the records before the offset it asked for.
    from_middle = consume_range(consumer, topic, 0, 37, 100)
    assert [message.offset() for message in from_middle] == list(range(37, 100))
    assert from_middle[0].value() == records[37]["value"]
    consumer.close()
    # Stored as sent: the batches keep the producer's codec.
    codecs = {batch.compression_type for batch in stored_batches(broker, topic, 0)}
    if codec == "lz4" and FIND_COORDINATOR not in advertised_apis(broker):
        # librdkafka enables lz4 only for brokers advertising FindCoordinator (its "Kafka
        # 0.8.2+" probe) and otherwise sends uncompressed batches without a word.
        assert codecs == {0}
    else:
        assert codecs == {CODEC_IDS[codec]}


def test_one_mib_records(broker):
    client = admin(broker)
    create(client, NewTopic("big", 1, 1, config={"max.message.bytes": str(2 << 20)}))
    producer = rdkafka_producer(broker, message_max_bytes=4 << 20)

    # Kafka's default max.message.bytes counts the whole batch: a 1 MiB value does not fit on a
    # default topic (Kafka also refuses it) ...
    one_mib = bytes(range(256)) * 4096
    [(error, _, _, _)] = produce(producer, "default-limit", [{"key": b"k", "value": one_mib}])
    assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    # ... the largest record that fits is accepted, one byte more is not.
    largest = b"x" * LARGEST_VALUE
    [(error, _, _, _)] = produce(producer, "default-limit",
                                 [{"key": b"k", "value": largest + b"x"}])
    assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert produce_ok(producer, "default-limit", [{"key": b"k", "value": largest}]) == [(0, 0)]
    # ... and with max.message.bytes raised on the topic, a 1 MiB value goes through.
    assert produce_ok(producer, "big", [{"key": b"k", "value": one_mib}] * 2) == [(0, 0), (0, 1)]

    # The fetch limits are below the record: at least one whole batch still comes back.
    consumer = rdkafka_consumer(broker, fetch_max_bytes=64 << 10, message_max_bytes=64 << 10,
                                max_partition_fetch_bytes=64 << 10)
    messages = consume_range(consumer, "big", 0, 0, 2)
    assert [message.value() == one_mib for message in messages] == [True, True]
    [message] = consume_range(consumer, "default-limit", 0, 0, 1)
    assert message.value() == largest
    consumer.close()


def test_idempotent_producer(broker):
    create(admin(broker), NewTopic("idempotent", num_partitions=3, replication_factor=1))
    producer = rdkafka_producer(broker, enable_idempotence=True, acks="all",
                                max_in_flight_requests_per_connection=5, linger_ms=1,
                                batch_num_messages=50)
    records = [{"key": f"k{index % 30}".encode(), "value": f"v{index}".encode()}
               for index in range(1500)]
    placed = produce_ok(producer, "idempotent", records)
    assert len(set(placed)) == len(records)
    read = consume_all(broker, "idempotent", range(3))
    values = [message.value() for messages in read.values() for message in messages]
    assert sorted(values) == sorted(record["value"] for record in records)  # exactly once
    for partition, messages in read.items():
        assert [message.offset() for message in messages] == list(range(len(messages)))
        produced = [record["value"] for record, (where, _) in zip(records, placed)
                    if where == partition]
        assert [message.value() for message in messages] == produced
        # The client really ran idempotent: producer id and gap-free sequences on every batch.
        assert_idempotent_batches(stored_batches(broker, "idempotent", partition))


def test_consume_from_beginning_offset_and_end(broker):
    producer = rdkafka_producer(broker)
    produce_ok(producer, "positions", [{"value": f"m{index}".encode()} for index in range(20)])
    consumer = rdkafka_consumer(broker)
    consumer.assign([TopicPartition("positions", 0, OFFSET_BEGINNING)])
    first = consumer.consume(num_messages=20, timeout=10)
    assert [message.offset() for message in first][:1] == [0]

    consumer.seek(TopicPartition("positions", 0, 15))
    after_seek = []
    deadline = time.time() + 10
    while len(after_seek) < 5 and time.time() < deadline:
        after_seek += consumer.consume(num_messages=5, timeout=0.5)
    assert [(message.offset(), message.value()) for message in after_seek] == [
        (offset, f"m{offset}".encode()) for offset in range(15, 20)]

    # From the end: nothing old, then a record produced while the consumer long-polls.
    tail = rdkafka_consumer(broker, fetch_wait_max_ms=2000)
    tail.assign([TopicPartition("positions", 0, OFFSET_END)])
    assert tail.consume(num_messages=1, timeout=1.5) == []
    produce_ok(producer, "positions", [{"value": b"late"}])
    [late] = tail.consume(num_messages=1, timeout=10)
    assert (late.offset(), late.value()) == (20, b"late")
    assert tail.get_watermark_offsets(TopicPartition("positions", 0), timeout=10) == (0, 21)

    # An offset past the end is OFFSET_OUT_OF_RANGE (auto.offset.reset=error surfaces it).
    out_of_range = rdkafka_consumer(broker)
    out_of_range.assign([TopicPartition("positions", 0, 500)])
    errors = []
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        errors = [message.error() for message in out_of_range.consume(1, timeout=0.5)
                  if message.error() is not None]
    assert errors and errors[0].code() == KafkaError._AUTO_OFFSET_RESET
    for each in (consumer, tail, out_of_range):
        each.close()


def test_list_offsets_by_time(broker):
    create(admin(broker), NewTopic("timed", num_partitions=1, replication_factor=1))
    producer = rdkafka_producer(broker, linger_ms=100)
    base = int(time.time() * 1000) - 3_600_000
    stamps = [base + 1000 * index for index in range(10)]
    stamps[8] = base + 50_000  # out of order: the largest timestamp is not the last record
    # Three batches: [0-2], [3-6], [7-9]; lookups below land inside batches, not on their edges.
    for group in ([0, 1, 2], [3, 4, 5, 6], [7, 8, 9]):
        produce_ok(producer, "timed",
                   [{"value": f"t{index}".encode(), "timestamp": stamps[index]} for index in group])

    consumer = rdkafka_consumer(broker)
    wanted = {base - 5000: 0, base: 0, base + 1500: 2, base + 4500: 5, base + 8500: 8,
              base + 50_000: 8, base + 50_001: OFFSET_END}
    for target, offset in wanted.items():
        [found] = consumer.offsets_for_times([TopicPartition("timed", 0, target)], timeout=10)
        assert (found.error, found.offset) == (None, offset), target - base
    [message] = consume_range(consumer, "timed", 0, 5, 6)[:1]
    assert message.timestamp()[1] == stamps[5]
    consumer.close()

    # The admin ListOffsets specs, including max timestamp (ListOffsets v7+).
    client = admin(broker)
    partition = TopicPartition("timed", 0)
    specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
             "max": OffsetSpec.max_timestamp(), "time": OffsetSpec.for_timestamp(base + 4500)}
    answers = {name: client.list_offsets({partition: spec})[partition].result(10)
               for name, spec in specs.items()}
    assert answers["earliest"].offset == 0
    assert answers["latest"].offset == 10
    assert (answers["max"].offset, answers["max"].timestamp) == (8, base + 50_000)
    assert answers["time"].offset == 5
