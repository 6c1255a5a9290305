"""Kafka Streams (at-least-once), unmodified: the Apache Kafka `WordCountDemo` from the
kafka-streams-examples jar (Maven Central, fetched by scripts/kafka-jars.sh) runs against runnel.

The demo takes an optional properties file (bootstrap.servers etc. are only defaults it fills in
with putIfAbsent), reads lines from `streams-plaintext-input`, re-keys each word through an
internal repartition topic, counts in a RocksDB store backed by a changelog topic, and writes
(word, count as a big-endian long) to `streams-wordcount-output`. Streams' own admin client
creates the internal topics with the configs it wants; it commits its input offsets every
commit.interval.ms and purges consumed repartition records with DeleteRecords."""

import re
import shutil
import struct
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from client_helpers import produce_ok, rdkafka_producer
from java_helpers import JavaProgram, require_kafka_jars

WORD_COUNT_DEMO = "org.apache.kafka.streams.examples.wordcount.WordCountDemo"
APPLICATION_ID = "streams-wordcount"
INPUT = "streams-plaintext-input"
OUTPUT = "streams-wordcount-output"
STORE = "KSTREAM-AGGREGATE-STATE-STORE-0000000003"
REPARTITION = f"{APPLICATION_ID}-{STORE}-repartition"
CHANGELOG = f"{APPLICATION_ID}-{STORE}-changelog"
PARTITIONS = 3

FIRST_LINES = [
    "all streams lead to kafka",
    "hello kafka streams",
    "join kafka summit",
] + [f"line {n} of the first batch, with word{n % 7} and KAFKA" for n in range(40)]
LATER_LINES = [f"later line {n}: word{n % 5} streams" for n in range(30)]
RESTART_LINES = [f"after the restart, line {n} says kafka and word{n % 3}" for n in range(20)]


@pytest.fixture(scope="module", autouse=True)
def kafka_jars():
    require_kafka_jars()


def word_counts(lines):
    """What WordCountDemo computes: lower-case, split on runs of non-word characters."""
    words = Counter()
    for line in lines:
        words.update(word for word in re.split(r"[^a-z0-9_]+", line.lower()) if word)
    return dict(words)


def latest_counts(broker, partitions):
    """The last count per word in the output topic (keys strings, values longs)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wordcount-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        ends = {}
        for partition in partitions:
            ends[partition] = consumer.get_watermark_offsets(
                TopicPartition(OUTPUT, partition), timeout=10)[1]
        consumer.assign([TopicPartition(OUTPUT, p, 0) for p in partitions if ends[p] > 0])
        counts, seen = {}, {p: 0 for p in partitions}
        deadline = time.time() + 20
        while any(seen[p] < ends[p] for p in partitions) and time.time() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                assert message.error() is None, message.error()
                if message.offset() >= ends[message.partition()]:
                    continue
                seen[message.partition()] = message.offset() + 1
                assert len(message.value()) == 8, message.value()
                counts[message.key().decode()] = struct.unpack(">q", message.value())[0]
        return counts
    finally:
        consumer.close()


def topic_config(admin, topic):
    resource = ConfigResource("topic", topic)
    entries = admin.describe_configs([resource])[resource].result(10)
    return {name: entry.value for name, entry in entries.items()}


def start_word_count_demo(broker, tmp_path, run):
    properties = tmp_path / "streams.properties"
    properties.write_text("\n".join([
        f"bootstrap.servers={broker.bootstrap}",
        f"state.dir={tmp_path / 'state'}",
        "commit.interval.ms=200",
        "repartition.purge.interval.ms=200",
        # Streams does not leave its group on close: a restarted instance waits for the old
        # member's session to time out before its first rebalance completes.
        "session.timeout.ms=6000",
        "heartbeat.interval.ms=500",
    ]) + "\n")
    return JavaProgram(WORD_COUNT_DEMO, [properties], tmp_path / f"word-count-demo-{run}.log")


def produce_lines(producer, lines):
    # Keyed by line number so that the lines spread over the input partitions.
    produce_ok(producer, INPUT, [{"key": str(n).encode(), "value": line.encode()}
                                 for n, line in enumerate(lines)])


def test_word_count_demo_counts_words_with_its_own_internal_topics(broker, tmp_path):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    created = admin.create_topics([
        NewTopic(INPUT, num_partitions=PARTITIONS, replication_factor=1),
        NewTopic(OUTPUT, num_partitions=1, replication_factor=1,
                 config={"cleanup.policy": "compact"}),
    ])
    for future in created.values():
        future.result(30)
    producer = rdkafka_producer(broker)
    produce_lines(producer, FIRST_LINES)

    demo = start_word_count_demo(broker, tmp_path, 1)
    try:
        expected = word_counts(FIRST_LINES)
        demo.wait_for(lambda: latest_counts(broker, [0]) == expected,
                      "the first counts never reached the output topic")

        # Streams created its internal topics itself, with the partition count of its input
        # and the configs it asks for (a compacted changelog, an unbounded repartition topic).
        topics = admin.list_topics(timeout=10).topics
        assert len(topics[REPARTITION].partitions) == PARTITIONS
        assert len(topics[CHANGELOG].partitions) == PARTITIONS
        assert topic_config(admin, CHANGELOG)["cleanup.policy"] == "compact"
        repartition = topic_config(admin, REPARTITION)
        assert repartition["cleanup.policy"] == "delete"
        assert repartition["retention.ms"] == "-1"
        assert repartition["segment.bytes"] == str(50 * 1024 * 1024)

        # While running it keeps counting what arrives.
        produce_lines(producer, LATER_LINES)
        expected = word_counts(FIRST_LINES + LATER_LINES)
        demo.wait_for(lambda: latest_counts(broker, [0]) == expected,
                      "the later counts never reached the output topic")

        # At-least-once commits: the group's committed input offsets reach the end of every
        # input partition, and consumed repartition records are purged (DeleteRecords).
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": APPLICATION_ID})
        try:
            ends = [consumer.get_watermark_offsets(TopicPartition(INPUT, p), timeout=10)[1]
                    for p in range(PARTITIONS)]
            assert sum(ends) == len(FIRST_LINES) + len(LATER_LINES)

            def committed_to_the_end():
                committed = consumer.committed(
                    [TopicPartition(INPUT, p) for p in range(PARTITIONS)], timeout=10)
                return [tp.offset for tp in committed] == ends

            def repartition_purged():
                lows = [consumer.get_watermark_offsets(TopicPartition(REPARTITION, p),
                                                       timeout=10)[0]
                        for p in range(PARTITIONS)]
                return sum(lows) > 0

            demo.wait_for(committed_to_the_end, "the input offsets were never all committed",
                          timeout=30)
            demo.wait_for(repartition_purged, "no repartition record was ever purged",
                          timeout=30)
        finally:
            consumer.close()
        groups = admin.list_consumer_groups().result(10).valid
        assert APPLICATION_ID in [group.group_id for group in groups]
    finally:
        demo.stop()
    # SIGTERM runs the demo's shutdown hook, which closes the Streams client.
    demo.assert_stopped_cleanly("Streams client stopped completely")

    # A second run with its local state wiped: it resumes the input after the group's
    # committed offsets and rebuilds its counts from the changelog topic, so the counts go on
    # from where they were (each word once more per new line, nothing counted twice).
    shutil.rmtree(tmp_path / "state")
    produce_lines(producer, RESTART_LINES)
    demo = start_word_count_demo(broker, tmp_path, 2)
    try:
        expected = word_counts(FIRST_LINES + LATER_LINES + RESTART_LINES)
        demo.wait_for(lambda: latest_counts(broker, [0]) == expected,
                      "the counts after the restart never reached the output topic")
    finally:
        demo.stop()
    demo.assert_stopped_cleanly("Streams client stopped completely")
    restored = re.findall(r"Finished restoring changelog \S+ to store \S+ with a total number "
                          r"of (\d+) records", demo.log())
    assert len(restored) == PARTITIONS and sum(map(int, restored)) > 0, restored
