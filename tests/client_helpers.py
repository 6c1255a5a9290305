"""Helpers shared by the client tests: drive confluent-kafka (librdkafka) producers and
manually-assigned consumers, and speak single raw requests with kafka-python's protocol classes.

Consumers from `rdkafka_consumer` never join a group: they `assign` partitions and read from
explicit offsets. librdkafka insists on a `group.id` even then; it is never used for anything but
the client's own bookkeeping (no commits, no subscribe). `GroupMember` is the one that subscribes
in a consumer group."""

import socket
import struct
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka.protocol.consumer import FetchRequest, FetchResponse
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse
from kafka.record.memory_records import MemoryRecords

FETCH_VERSION = 12  # the newest Fetch without topic ids


def rdkafka_producer(broker, **conf):
    settings = {"bootstrap.servers": broker.bootstrap, "linger.ms": 5}
    settings.update({key.replace("_", "."): value for key, value in conf.items()})
    return Producer(settings)


def rdkafka_consumer(broker, **conf):
    settings = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": "manual-assignment-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
    }
    settings.update({key.replace("_", "."): value for key, value in conf.items()})
    return Consumer(settings)


def produce(producer, topic, records, timeout=30):
    """Produces `records` (dicts of produce() keyword arguments) and waits for every delivery
    report. Returns one (error, partition, offset, timestamp) per record, in input order."""
    reports = [None] * len(records)

    def report_into(index):
        def on_delivery(error, message):
            reports[index] = (error, message.partition(), message.offset(), message.timestamp()[1])
        return on_delivery

    for index, record in enumerate(records):
        while True:
            try:
                producer.produce(topic, on_delivery=report_into(index), **record)
                break
            except BufferError:
                producer.poll(0.1)
    remaining = producer.flush(timeout)
    assert remaining == 0, f"{remaining} records still undelivered after {timeout}s"
    assert all(report is not None for report in reports)
    return reports


def produce_ok(producer, topic, records, timeout=30):
    reports = produce(producer, topic, records, timeout)
    errors = [report[0] for report in reports if report[0] is not None]
    assert not errors, errors[:3]
    return [(partition, offset) for _, partition, offset, _ in reports]


def consume_range(consumer, topic, partition, start, end, timeout=30):
    """Reads offsets [start, end) of one partition through `assign` + explicit offset."""
    consumer.assign([TopicPartition(topic, partition, start)])
    messages = []
    deadline = time.time() + timeout
    while (not messages or messages[-1].offset() < end - 1) and time.time() < deadline:
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            assert message.error() is None, message.error()
            if message.offset() < end:
                messages.append(message)
    assert messages and messages[-1].offset() == end - 1, (
        f"{topic}/{partition}: wanted offsets {start}..{end - 1}, got "
        f"{[message.offset() for message in messages[-3:]]} in {timeout}s")
    return messages


def consume_all(broker, topic, partitions, timeout=30):
    """Every record of the given partitions, from the log start to the high watermark, read
    through one consumer assigned to all of them: {partition: [message, ...]}."""
    consumer = rdkafka_consumer(broker)
    try:
        starts, ends, assignment = {}, {}, []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10)
            starts[partition], ends[partition] = low, high
            if high > low:
                assignment.append(TopicPartition(topic, partition, low))
        result = {partition: [] for partition in partitions}
        consumer.assign(assignment)
        deadline = time.time() + timeout
        while time.time() < deadline and any(
                (result[p][-1].offset() if result[p] else -1) < ends[p] - 1 for p in result):
            for message in consumer.consume(num_messages=10000, timeout=0.2):
                assert message.error() is None, message.error()
                if message.offset() < ends[message.partition()]:
                    result[message.partition()].append(message)
        for partition, messages in result.items():
            assert [message.offset() for message in messages] == list(
                range(starts[partition], ends[partition])), f"{topic}/{partition} after {timeout}s"
        return result
    finally:
        consumer.close()


def message_tuple(message):
    """What a record is made of, comparable across reads."""
    return (message.partition(), message.offset(), message.key(), message.value(),
            message.headers(), message.timestamp()[1])


class RawConnection:
    """One TCP connection sending requests built by kafka-python's protocol classes, so a test
    controls exactly which partitions travel in a single request."""

    def __init__(self, broker, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
        self.correlation_id = 0

    def send(self, request, version):
        self.correlation_id += 1
        request.with_header(correlation_id=self.correlation_id, client_id="raw-test")
        self.sock.sendall(request.encode(version=version, header=True, framed=True))
        return self.correlation_id

    def receive(self, response_class, version, correlation_id):
        size = struct.unpack(">i", self._read_exactly(4))[0]
        response = response_class.decode(self._read_exactly(size), version=version, header=True)
        assert response.header.correlation_id == correlation_id
        return response

    def call(self, request, response_class, version):
        return self.receive(response_class, version, self.send(request, version))

    def _read_exactly(self, count):
        data = bytearray()
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            assert chunk, "broker closed the connection"
            data += chunk
        return bytes(data)

    def close(self):
        self.sock.close()


def fetch_request(topic, partitions_and_offsets, max_wait_ms=0, min_bytes=1,
                  max_bytes=64 << 20, partition_max_bytes=16 << 20):
    """One Fetch (v12) for several partitions of one topic: {partition: offset}."""
    fetch_topic = FetchRequest.FetchTopic
    return FetchRequest(
        replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
        isolation_level=0, session_id=0, session_epoch=-1, rack_id="",
        forgotten_topics_data=[],
        topics=[fetch_topic(topic=topic, partitions=[
            fetch_topic.FetchPartition(partition=partition, fetch_offset=offset,
                                       partition_max_bytes=partition_max_bytes,
                                       log_start_offset=-1, current_leader_epoch=-1,
                                       last_fetched_epoch=-1)
            for partition, offset in partitions_and_offsets.items()])])


def batches_of(records_bytes):
    """The record batches in a Fetch response's records field (kafka-python's parser)."""
    records = MemoryRecords(bytes(records_bytes or b""))
    batches = []
    while records.has_next():
        batches.append(records.next_batch())
    return batches


def stored_batches(broker, topic, partition):
    """Every record batch of a partition exactly as the broker serves it (raw Fetch), so tests
    can check what was stored: codec, producer id, sequences."""
    connection = RawConnection(broker)
    try:
        batches, offset = [], 0
        while True:
            response = connection.call(fetch_request(topic, {partition: offset}), FetchResponse,
                                       FETCH_VERSION)
            [answer] = response.responses[0].partitions
            assert answer.error_code == 0, answer
            new = batches_of(answer.records)
            if not new:
                assert offset == answer.high_watermark
                return batches
            batches += [batch for batch in new if batch.next_offset > offset]
            offset = batches[-1].next_offset
    finally:
        connection.close()


def assert_idempotent_batches(batches):
    """Batches from one idempotent producer: all carry its producer id, and sequences run on
    without gaps or repeats (a retried duplicate stored twice would repeat a sequence)."""
    assert batches
    assert {batch.producer_id for batch in batches} != {-1}
    assert len({(batch.producer_id, batch.producer_epoch) for batch in batches}) == 1
    expected = 0
    for batch in batches:
        assert batch.base_sequence == expected, (batch.base_offset, batch.base_sequence)
        expected += batch.last_offset_delta + 1


def advertised_apis(broker):
    """{api_key: (min, max)} from the broker's ApiVersions answer."""
    connection = RawConnection(broker)
    try:
        response = connection.call(
            ApiVersionsRequest(client_software_name="raw-test", client_software_version="1"),
            ApiVersionsResponse, 3)
        assert response.error_code == 0
        return {api.api_key: (api.min_version, api.max_version) for api in response.api_keys}
    finally:
        connection.close()


def new_names(prefix):
    """A fresh (topic, group) pair, so tests sharing a broker never meet."""
    suffix = uuid.uuid4().hex[:6]
    return f"{prefix}-{suffix}", f"g-{prefix}-{suffix}"


class GroupMember:
    """One confluent-kafka consumer subscribed to `topic` in `group`. It keeps every message it
    polled and what each rebalance callback was given. With `commit_on_revoke` it commits the
    positions of the partitions it gives up synchronously inside the revoke callback, so the
    next owner starts exactly after what this member consumed."""

    def __init__(self, broker, group, topic, strategy=None, commit_on_revoke=False, **conf):
        settings = {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
        if strategy is not None:
            settings["partition.assignment.strategy"] = strategy
        settings.update(conf)
        self.consumer = Consumer(settings)
        self.commit_on_revoke = commit_on_revoke
        self.assigned, self.revoked, self.lost = [], [], []
        self.messages, self.errors, self.commit_failures = [], [], []
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _on_assign(self, _consumer, partitions):
        self.assigned.append(sorted(tp.partition for tp in partitions))

    def _on_revoke(self, _consumer, partitions):
        self.revoked.append(sorted(tp.partition for tp in partitions))
        if self.commit_on_revoke:
            try:
                self.commit(partitions)
            except Exception as error:  # raised out of poll() it would escape pytest
                self.commit_failures.append(error)

    def _on_lost(self, _consumer, partitions):
        self.lost.append(sorted(tp.partition for tp in partitions))

    def commit(self, partitions=None):
        """Commits (synchronously) the position after the last polled message of `partitions`
        (default: the whole assignment); partitions with nothing consumed are left alone."""
        where = partitions if partitions is not None else self.consumer.assignment()
        positions = [tp for tp in self.consumer.position(where) if tp.offset >= 0]
        if positions:
            self.consumer.commit(offsets=positions, asynchronous=False)

    def owned(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def poll(self, timeout=0.05):
        message = self.consumer.poll(timeout)
        if message is None:
            return None
        if message.error() is not None:
            self.errors.append(message.error())
            return None
        self.messages.append(message)
        return message

    def consumed(self):
        return [(message.partition(), message.offset()) for message in self.messages]

    def close(self):
        self.consumer.close()


def poll_members(members, done, timeout=30, poll_timeout=0.05):
    """Polls every member in turn until `done()` holds; fails with their assignments if it does
    not within `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for member in members:
            member.poll(poll_timeout)
        if done():
            return
    raise AssertionError(f"timed out after {timeout}s; owned: {[m.owned() for m in members]}, "
                         f"consumed: {[len(m.messages) for m in members]}")


def poll_for(members, seconds, poll_timeout=0.05):
    """Polls every member in turn for `seconds` (to catch records delivered twice)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        for member in members:
            member.poll(poll_timeout)
