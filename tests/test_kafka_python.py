"""kafka-python 3.x: broker version probing, admin topics, keys and partitioning, ordering,
headers, null keys and values, a 1 MiB record, the four codecs, the idempotent producer,
consuming from the beginning and from an offset, and ListOffsets by time.
Consumers use manual assignment only (no group_id)."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as Errors
from kafka.admin import ConfigResource, ConfigResourceType, OffsetSpec

from client_helpers import advertised_apis, assert_idempotent_batches, stored_batches

DESCRIBE_CONFIGS = 32
KAFKA_MAX_MESSAGE_BYTES = 1048588  # Kafka's default max.message.bytes (1 MiB + 12)
# The value that makes a one-record batch (key b"k", no headers) exactly that size: 61 bytes of
# batch header, and 12 of record: length (3-byte varint), attributes, timestamp and offset
# deltas, key length, key, value length (3-byte varint), header count.
LARGEST_VALUE = KAFKA_MAX_MESSAGE_BYTES - 61 - 12
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # record batch attribute bits 0-2


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def producer(broker, **config):
    settings = {"bootstrap_servers": broker.bootstrap, "linger_ms": 5}
    settings.update(config)
    return KafkaProducer(**settings)


def consumer(broker, **config):
    settings = {"bootstrap_servers": broker.bootstrap, "enable_auto_commit": False,
                "group_id": None, "fetch_max_wait_ms": 200}
    settings.update(config)
    return KafkaConsumer(**settings)


def send_all(client, topic, records, timeout=30):
    """Sends records (send() keyword arguments) and returns their RecordMetadata, in order."""
    futures = [client.send(topic, **record) for record in records]
    client.flush(timeout)
    return [future.get(timeout) for future in futures]


def read(client, topic, partition, start, end, timeout=30):
    """Offsets [start, end) of one partition via assign + seek."""
    where = TopicPartition(topic, partition)
    client.assign([where])
    client.seek(where, start)
    records = []
    deadline = time.time() + timeout
    while len(records) < end - start and time.time() < deadline:
        for batch in client.poll(timeout_ms=500, max_records=1000).values():
            records += [record for record in batch if record.offset < end]
    assert [record.offset for record in records] == list(range(start, end)), topic
    return records


def read_all(broker, topic, partitions):
    client = consumer(broker)
    where = [TopicPartition(topic, partition) for partition in partitions]
    ends = client.end_offsets(where)
    starts = client.beginning_offsets(where)
    result = {tp.partition: read(client, topic, tp.partition, starts[tp], ends[tp])
              for tp in where}
    client.close()
    return result


def test_version_probe_and_admin_topics(broker):
    client = admin(broker)
    # kafka-python guesses the broker version from the ApiVersions table; a Kafka-shaped table
    # must read as a modern broker (idempotence, zstd and headers need >= 2.1).
    assert client._manager.broker_version >= (2, 1)
    probe = consumer(broker)
    assert probe.config["api_version"] >= (2, 1)
    probe.close()

    created = client.create_topics({"orders": {"num_partitions": 3, "replication_factor": 1,
                                               "configs": {"retention.ms": "3600000"}},
                                    "defaults": {}})
    assert {topic["name"]: topic["error_code"] for topic in created["topics"]} == {
        "orders": 0, "defaults": 0}
    failed = client.create_topics({"orders": {"num_partitions": 1},
                                   "bad/name": {"num_partitions": 1},
                                   "too-many-replicas": {"num_partitions": 1,
                                                         "replication_factor": 3}},
                                  raise_errors=False)
    assert {topic["name"]: topic["error_code"] for topic in failed["topics"]} == {
        "orders": Errors.TopicAlreadyExistsError.errno,
        "bad/name": Errors.InvalidTopicError.errno,
        "too-many-replicas": Errors.InvalidReplicationFactorError.errno}
    dry = client.create_topics({"dry-run": {"num_partitions": 2}}, validate_only=True)
    assert dry["topics"][0]["error_code"] == 0
    # The broker creates the internal __consumer_offsets at start; Kafka lists it too.
    assert set(client.list_topics()) == {"orders", "defaults", "__consumer_offsets"}

    [orders] = client.describe_topics(["orders"])
    assert orders["error_code"] == 0 and orders["is_internal"] is False
    assert orders["topic_id"] is not None
    assert [(partition["partition_index"], partition["leader_id"], partition["replica_nodes"],
             partition["isr_nodes"]) for partition in orders["partitions"]] == [
        (index, 1, [1], [1]) for index in range(3)]
    cluster = client.describe_cluster()
    assert cluster["cluster_id"] and cluster["controller_id"] == 1
    assert [(node["broker_id"], node["port"]) for node in cluster["brokers"]] == [(1, broker.port)]
    if DESCRIBE_CONFIGS in advertised_apis(broker):
        described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "orders")])
        assert described["topic"]["orders"]["retention.ms"]["value"] == "3600000"

    deleted = client.delete_topics(["orders"])
    assert [topic["error_code"] for topic in deleted["topics"]] == [0]
    again = client.delete_topics(["orders"], raise_errors=False)
    assert [topic["error_code"] for topic in again["topics"]] == [
        Errors.UnknownTopicOrPartitionError.errno]
    assert set(client.list_topics()) == {"defaults", "__consumer_offsets"}
    client.close()


def test_keys_partitions_and_order(broker):
    admin(broker).create_topics({"keyed": {"num_partitions": 4, "replication_factor": 1}})
    client = producer(broker, acks="all")
    records = [{"key": f"user-{index % 12}".encode(), "value": f"event-{index}".encode()}
               for index in range(240)]
    records += [{"value": f"unkeyed-{index}".encode()} for index in range(60)]
    placed = send_all(client, "keyed", records)
    client.close()

    partition_of_key = {}
    for record, meta in zip(records, placed):
        if "key" in record:
            assert partition_of_key.setdefault(record["key"], meta.partition) == meta.partition
    assert len(set(partition_of_key.values())) > 1

    stored = read_all(broker, "keyed", range(4))
    for partition, messages in stored.items():
        produced = [record for record, meta in zip(records, placed) if meta.partition == partition]
        offsets = [meta.offset for meta in placed if meta.partition == partition]
        assert offsets == list(range(len(produced)))
        assert [(message.key, message.value) for message in messages] == [
            (record.get("key"), record["value"]) for record in produced]


def test_headers_and_null_keys_and_values(broker):
    client = producer(broker)
    every_byte = bytes(range(256))
    headers = [("binary", every_byte), ("empty", b""), ("dup", b"1"),
               ("dup", b"2"), ("unicode-\u00e9\u6f22", "\u00fc".encode())]
    # kafka-python refuses a record with neither key nor value, and null header values.
    records = [{"key": b"", "value": b""}, {"key": b"tombstone", "value": None},
               {"key": None, "value": b"no key"}, {"key": b"k", "value": b"v", "headers": headers}]
    placed = send_all(client, "headers", records)
    assert [meta.offset for meta in placed] == [0, 1, 2, 3]
    messages = read_all(broker, "headers", [0])[0]
    assert [(message.key, message.value) for message in messages] == [
        (record["key"], record["value"]) for record in records]
    assert [message.headers for message in messages] == [[], [], [], headers]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_and_mid_batch_fetch(broker, codec):
    topic = f"codec-{codec}"
    client = producer(broker, compression_type=codec, linger_ms=50, batch_size=1 << 20)
    records = [{"key": f"k{index}".encode(), "value": (f"{codec}-{index}-" * 20).encode(),
                "headers": [("index", str(index).encode())]} for index in range(100)]
    placed = send_all(client, topic, records)
    assert [(meta.partition, meta.offset) for meta in placed] == [(0, offset) for offset in
                                                                  range(100)]
    reader = consumer(broker)
    everything = read(reader, topic, 0, 0, 100)
    assert [(message.key, message.value, message.headers) for message in everything] == [
        (record["key"], record["value"], record["headers"]) for record in records]
    from_middle = read(reader, topic, 0, 61, 100)  # inside a compressed batch
    assert from_middle[0].value == records[61]["value"]
    reader.close()
    # Stored as sent: the batches keep the producer's codec.
    codecs = {batch.compression_type for batch in stored_batches(broker, topic, 0)}
    assert codecs == {CODEC_IDS[codec]}


def test_one_mib_records(broker):
    admin(broker).create_topics({"big": {"num_partitions": 1, "replication_factor": 1,
                                         "configs": {"max.message.bytes": str(2 << 20)}}})
    client = producer(broker, max_request_size=4 << 20, retries=0)
    one_mib = bytes(range(256)) * 4096
    # Kafka's default max.message.bytes counts the whole batch: a 1 MiB value does not fit on
    # a default topic, and the broker says so with MESSAGE_TOO_LARGE.
    with pytest.raises(Errors.MessageSizeTooLargeError):
        client.send("default-limit", key=b"k", value=one_mib).get(30)
    largest = b"x" * LARGEST_VALUE
    with pytest.raises(Errors.MessageSizeTooLargeError):
        client.send("default-limit", key=b"k", value=largest + b"x").get(30)
    assert client.send("default-limit", key=b"k", value=largest).get(30).offset == 0
    placed = send_all(client, "big", [{"key": b"k", "value": one_mib}] * 2)
    assert [meta.offset for meta in placed] == [0, 1]

    # Fetch limits smaller than the record still return one whole batch (KIP-74).
    reader = consumer(broker, fetch_max_bytes=64 << 10, max_partition_fetch_bytes=64 << 10)
    assert [message.value == one_mib for message in read(reader, "big", 0, 0, 2)] == [True] * 2
    assert read(reader, "default-limit", 0, 0, 1)[0].value == largest
    reader.close()


def test_idempotent_producer(broker):
    admin(broker).create_topics({"idempotent": {"num_partitions": 3, "replication_factor": 1}})
    client = producer(broker, enable_idempotence=True, acks="all", batch_size=2048)
    records = [{"key": f"k{index % 30}".encode(), "value": f"v{index}".encode()}
               for index in range(1000)]
    placed = send_all(client, "idempotent", records)
    client.close()
    assert len({(meta.partition, meta.offset) for meta in placed}) == len(records)
    stored = read_all(broker, "idempotent", range(3))
    values = sorted(message.value for messages in stored.values() for message in messages)
    assert values == sorted(record["value"] for record in records)  # exactly once
    for partition, messages in stored.items():
        assert [message.value for message in messages] == [
            record["value"] for record, meta in zip(records, placed) if meta.partition == partition]
        assert_idempotent_batches(stored_batches(broker, "idempotent", partition))


def test_consume_from_beginning_offset_and_end(broker):
    client = producer(broker)
    send_all(client, "positions", [{"value": f"m{index}".encode()} for index in range(20)])
    where = TopicPartition("positions", 0)
    reader = consumer(broker)
    reader.assign([where])
    reader.seek_to_beginning(where)
    first = reader.poll(timeout_ms=5000, max_records=1)[where]
    assert (first[0].offset, first[0].value) == (0, b"m0")
    assert [message.value for message in read(reader, "positions", 0, 15, 20)] == [
        f"m{offset}".encode() for offset in range(15, 20)]
    assert (reader.beginning_offsets([where])[where], reader.end_offsets([where])[where]) == (0, 20)

    # From the end: nothing old, then a record produced while the consumer waits.
    reader.seek_to_end(where)
    assert reader.poll(timeout_ms=500) == {}
    send_all(client, "positions", [{"value": b"late"}])
    late = []
    deadline = time.time() + 10
    while not late and time.time() < deadline:
        late = reader.poll(timeout_ms=500).get(where, [])
    assert [(message.offset, message.value) for message in late] == [(20, b"late")]

    # Past the end with no reset policy: the client reports OFFSET_OUT_OF_RANGE.
    strict = consumer(broker, auto_offset_reset="none")
    strict.assign([where])
    strict.seek(where, 500)
    with pytest.raises(Errors.OffsetOutOfRangeError):
        deadline = time.time() + 10
        while time.time() < deadline:
            strict.poll(timeout_ms=500)
    for each in (reader, strict, client):
        each.close()


def test_list_offsets_by_time(broker):
    admin(broker).create_topics({"timed": {"num_partitions": 1, "replication_factor": 1}})
    client = producer(broker, linger_ms=100)
    base = int(time.time() * 1000) - 3_600_000
    stamps = [base + 1000 * index for index in range(10)]
    stamps[8] = base + 50_000  # the largest timestamp is not the last record's
    for group in ([0, 1, 2], [3, 4, 5, 6], [7, 8, 9]):  # three batches
        send_all(client, "timed", [{"value": f"t{index}".encode(), "timestamp_ms": stamps[index]}
                                   for index in group])
    client.close()

    reader = consumer(broker)
    where = TopicPartition("timed", 0)
    wanted = {base - 5000: 0, base: 0, base + 1500: 2, base + 4500: 5, base + 8500: 8,
              base + 50_000: 8}
    for target, offset in wanted.items():
        found = reader.offsets_for_times({where: target})[where]
        assert found is not None and found.offset == offset, target - base
        assert found.timestamp >= target
    assert reader.offsets_for_times({where: base + 50_001})[where] is None
    assert read(reader, "timed", 0, 5, 6)[0].timestamp == stamps[5]
    reader.close()

    # The admin ListOffsets specs, including max timestamp (ListOffsets v7+).
    client = admin(broker)
    answers = {spec: client.list_partition_offsets({where: spec})[where]
               for spec in (OffsetSpec.EARLIEST, OffsetSpec.LATEST, OffsetSpec.MAX_TIMESTAMP)}
    assert answers[OffsetSpec.EARLIEST].offset == 0
    assert answers[OffsetSpec.LATEST].offset == 10
    assert (answers[OffsetSpec.MAX_TIMESTAMP].offset,
            answers[OffsetSpec.MAX_TIMESTAMP].timestamp) == (8, base + 50_000)
    client.close()
