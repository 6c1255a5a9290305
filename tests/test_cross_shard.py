"""Cross-shard: with --shards 2, single Produce, Fetch and ListOffsets requests that touch
partitions owned by both shards; long polls woken by appends on either shard; pipelined
requests answered in order; and librdkafka driving it all end to end.

The requests are built with kafka-python's protocol classes and sent on one raw connection,
so each one really carries partitions of both shards (whichever shard accepted the connection,
some of them are remote to it)."""

import struct
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol.consumer import (FetchResponse, ListOffsetsRequest, ListOffsetsResponse)
from kafka.protocol.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.record._crc32c import crc as crc32c
from kafka.record.memory_records import MemoryRecordsBuilder

from client_helpers import (FETCH_VERSION, RawConnection, batches_of, consume_all,
                            fetch_request, produce_ok, rdkafka_producer)

SHARDS = 2
PARTITIONS = 8
TOPIC = "xshard"
PRODUCE_VERSION = 9
LIST_OFFSETS_VERSION = 7
METADATA_VERSION = 12
CODECS = [0, 1, 2, 3, 4]  # none, gzip, snappy, lz4, zstd


def owner_shard(topic, partition):
    """The broker's partition placement (net/src/shard.rs `owner_shard`): CRC-32C of the topic
    name then the partition index (big-endian i32), modulo the shard count."""
    return crc32c(topic.encode() + struct.pack(">i", partition)) % SHARDS


@pytest.fixture
def two_shards(broker_factory):
    instance = broker_factory(shards=SHARDS)
    connection = RawConnection(instance)
    admin = AdminClient({"bootstrap.servers": instance.bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(10)
    owners = {partition: owner_shard(TOPIC, partition) for partition in range(PARTITIONS)}
    assert set(owners.values()) == set(range(SHARDS)), "the topic must span both shards"
    yield instance, connection, owners
    connection.close()


def batch(codec, records, timestamp_ms=None):
    """One record batch v2 built by kafka-python: records are (key, value, headers)."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 20)
    for key, value, headers in records:
        builder.append(timestamp_ms or int(time.time() * 1000), key, value, headers)
    builder.close()
    return bytes(builder.buffer())


def records_for(partition, round_number, count=5):
    return [(f"k{partition}".encode(), f"p{partition}-r{round_number}-{index}".encode(),
             [("round", str(round_number).encode())]) for index in range(count)]


def produce_request(partition_batches, acks=-1):
    topic_data = ProduceRequest.TopicProduceData
    return ProduceRequest(
        transactional_id=None, acks=acks, timeout_ms=10000,
        topic_data=[topic_data(name=TOPIC, partition_data=[
            topic_data.PartitionProduceData(index=partition, records=records)
            for partition, records in partition_batches.items()])])


def produce_all(connection, round_number):
    """One Produce request with a batch for every partition; returns {partition: answer}."""
    request = produce_request({
        partition: batch(CODECS[partition % len(CODECS)], records_for(partition, round_number))
        for partition in range(PARTITIONS)})
    response = connection.call(request, ProduceResponse, PRODUCE_VERSION)
    [topic] = response.responses
    assert topic.name == TOPIC
    return {answer.index: answer for answer in topic.partition_responses}


def decoded(records_bytes):
    return [(record.offset, record.key, record.value, [tuple(header) for header in record.headers])
            for stored in batches_of(records_bytes) for record in stored]


def test_single_requests_span_both_shards(two_shards):
    broker, connection, owners = two_shards
    for round_number in range(2):
        answers = produce_all(connection, round_number)
        assert sorted(answers) == list(range(PARTITIONS))
        for partition, answer in answers.items():
            assert (answer.error_code, answer.base_offset) == (0, 5 * round_number), partition

    # One Fetch for every partition: each answer holds exactly what that partition was sent.
    response = connection.call(fetch_request(TOPIC, {p: 0 for p in range(PARTITIONS)}),
                               FetchResponse, FETCH_VERSION)
    [topic] = response.responses
    assert [answer.partition_index for answer in topic.partitions] == list(range(PARTITIONS))
    for answer in topic.partitions:
        partition = answer.partition_index
        assert (answer.error_code, answer.high_watermark) == (0, 10), partition
        expected = [(offset, key, value, headers) for offset, (key, value, headers) in
                    enumerate(records_for(partition, 0) + records_for(partition, 1))]
        assert decoded(answer.records) == expected, (partition, owners[partition])

    # One ListOffsets for every partition, latest and earliest.
    for timestamp, offset in ((-1, 10), (-2, 0)):
        request = ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[
            ListOffsetsRequest.ListOffsetsTopic(name=TOPIC, partitions=[
                ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                    partition_index=partition, timestamp=timestamp, current_leader_epoch=-1)
                for partition in range(PARTITIONS)])])
        response = connection.call(request, ListOffsetsResponse, LIST_OFFSETS_VERSION)
        assert [(answer.partition_index, answer.error_code, answer.offset)
                for answer in response.topics[0].partitions] == [
            (partition, 0, offset) for partition in range(PARTITIONS)]


def test_partial_failures_stay_per_partition(two_shards):
    broker, connection, owners = two_shards
    good = {partition: batch(0, records_for(partition, 0)) for partition in range(PARTITIONS)}
    corrupt = bytearray(good[1])
    corrupt[-1] ^= 0xFF  # breaks the CRC
    request = produce_request({**good, 1: bytes(corrupt), PARTITIONS + 3: good[0]})
    response = connection.call(request, ProduceResponse, PRODUCE_VERSION)
    answers = response.responses[0].partition_responses
    codes = {answer.index: answer.error_code for answer in answers}
    assert codes == {**{partition: 0 for partition in range(PARTITIONS) if partition != 1},
                     1: 2, PARTITIONS + 3: 3}  # CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION

    response = connection.call(fetch_request(TOPIC, {0: 0, 1: 0, PARTITIONS + 3: 0, 2: 0}),
                               FetchResponse, FETCH_VERSION)
    answers = {answer.partition_index: answer for answer in response.responses[0].partitions}
    assert answers[PARTITIONS + 3].error_code == 3
    assert (answers[1].error_code, answers[1].high_watermark) == (0, 0)
    # An error on one partition ends the wait, but the others still carry their data.
    assert len(decoded(answers[0].records)) == 5 and len(decoded(answers[2].records)) == 5


@pytest.mark.parametrize("shard", range(SHARDS))
def test_long_poll_woken_by_append_on_either_shard(two_shards, shard):
    broker, connection, owners = two_shards
    target = min(partition for partition, owner in owners.items() if owner == shard)
    waiting = fetch_request(TOPIC, {p: 0 for p in range(PARTITIONS)}, max_wait_ms=10000)
    correlation_id = connection.send(waiting, FETCH_VERSION)
    time.sleep(0.3)  # the fetch is parked on every partition's watch by now
    started = time.time()
    other = RawConnection(broker)
    response = other.call(produce_request({target: batch(0, records_for(target, 9, 1))}),
                          ProduceResponse, PRODUCE_VERSION)
    assert response.responses[0].partition_responses[0].error_code == 0
    other.close()
    woken = connection.receive(FetchResponse, FETCH_VERSION, correlation_id)
    assert time.time() - started < 5, "the append did not wake the fetch"
    with_data = {answer.partition_index: decoded(answer.records)
                 for answer in woken.responses[0].partitions if decoded(answer.records)}
    assert list(with_data) == [target]
    assert [value for _, _, value, _ in with_data[target]] == [f"p{target}-r9-0".encode()]


def test_pipelined_requests_answered_in_order(two_shards):
    broker, connection, owners = two_shards
    metadata = MetadataRequest(topics=None, allow_auto_topic_creation=False,
                               include_topic_authorized_operations=False)
    sent = []
    # A long-polling fetch first: the requests behind it must wait for it, not overtake it.
    sent.append((connection.send(fetch_request(TOPIC, {0: 0}, max_wait_ms=300, min_bytes=1 << 20),
                                 FETCH_VERSION), FetchResponse, FETCH_VERSION))
    for round_number in range(3):
        request = produce_request({partition: batch(0, records_for(partition, round_number))
                                   for partition in range(PARTITIONS)})
        sent.append((connection.send(request, PRODUCE_VERSION), ProduceResponse,
                     PRODUCE_VERSION))
    sent.append((connection.send(metadata, METADATA_VERSION), MetadataResponse,
                 METADATA_VERSION))
    responses = [connection.receive(kind, version, correlation_id)
                 for correlation_id, kind, version in sent]
    for round_number, response in enumerate(responses[1:4]):
        assert {answer.base_offset for answer in response.responses[0].partition_responses} == {
            5 * round_number}
    assert TOPIC in [topic.name for topic in responses[4].topics]


def test_librdkafka_across_both_shards(two_shards):
    broker, connection, owners = two_shards
    producer = rdkafka_producer(broker, acks="all", linger_ms=20)
    records = [{"key": f"key-{index % 50}".encode(), "value": f"value-{index}".encode()}
               for index in range(4000)]
    placed = produce_ok(producer, TOPIC, records)
    used = {partition for partition, _ in placed}
    assert {owners[partition] for partition in used} == set(range(SHARDS))
    stored = consume_all(broker, TOPIC, range(PARTITIONS))
    for partition in range(PARTITIONS):
        expected = [record["value"] for record, (where, _) in zip(records, placed)
                    if where == partition]
        assert [message.value() for message in stored[partition]] == expected


def test_concurrent_clients_on_both_shards(two_shards):
    """Several connections (spread over both shards' listeners by SO_REUSEPORT) produce to
    every partition at once; every acknowledged batch lands exactly once."""
    broker, connection, owners = two_shards
    errors = []

    def worker(worker_id):
        try:
            own = RawConnection(broker)
            for round_number in range(10):
                request = produce_request({
                    partition: batch(0, [(b"w", f"{worker_id}-{round_number}".encode(), [])])
                    for partition in range(PARTITIONS)})
                response = own.call(request, ProduceResponse, PRODUCE_VERSION)
                codes = {a.error_code for a in response.responses[0].partition_responses}
                assert codes == {0}, codes
            own.close()
        except Exception as error:  # reported below; a thread cannot fail the test itself
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    response = connection.call(fetch_request(TOPIC, {p: 0 for p in range(PARTITIONS)}),
                               FetchResponse, FETCH_VERSION)
    for answer in response.responses[0].partitions:
        values = sorted(value for _, _, value, _ in decoded(answer.records))
        assert answer.high_watermark == 60
        assert values == sorted(f"{w}-{r}".encode() for w in range(6) for r in range(10))


def test_fetch_response_limit_across_shards(two_shards):
    """KIP-74 over one Fetch for every partition: the first partition with data gets its whole
    batch even past the limits; after that a partition gets data only if its batches fit in
    what is left of the response limit, otherwise just its offsets."""
    broker, connection, owners = two_shards
    value = bytes(range(256)) * 120  # ~30 KiB per batch; incompressible enough uncompressed
    request = produce_request({partition: batch(0, [(b"k", value, [])])
                               for partition in range(PARTITIONS)})
    response = connection.call(request, ProduceResponse, PRODUCE_VERSION)
    assert {a.error_code for a in response.responses[0].partition_responses} == {0}
    batch_bytes = len(batch(0, [(b"k", value, [])]))

    limit = 2 * batch_bytes + batch_bytes // 2
    response = connection.call(
        fetch_request(TOPIC, {p: 0 for p in range(PARTITIONS)}, max_bytes=limit,
                      partition_max_bytes=batch_bytes // 3),  # below one batch
        FetchResponse, FETCH_VERSION)
    sizes = [len(answer.records or b"") for answer in response.responses[0].partitions]
    # Only the first partition may exceed partition_max_bytes; the others get nothing, as their
    # batch is bigger than their own limit.
    assert sizes == [batch_bytes] + [0] * (PARTITIONS - 1)
    assert {answer.high_watermark for answer in response.responses[0].partitions} == {1}

    response = connection.call(
        fetch_request(TOPIC, {p: 0 for p in range(PARTITIONS)}, max_bytes=limit),
        FetchResponse, FETCH_VERSION)
    sizes = [len(answer.records or b"") for answer in response.responses[0].partitions]
    assert sizes == [batch_bytes] * 2 + [0] * (PARTITIONS - 2)
    assert sum(sizes) <= limit
