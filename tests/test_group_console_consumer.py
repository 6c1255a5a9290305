"""The Apache Kafka 4.x console consumer with `--group`, unmodified: two runs in the same group,
each stopped by `--max-messages`, read disjoint records and together all of them. The first run
commits what it printed when it closes; the second resumes exactly there."""

import re
import uuid

import pytest
from confluent_kafka import TopicPartition

from client_helpers import produce_ok, rdkafka_consumer, rdkafka_producer
from test_groups import create_topic
from test_java_tools import CONSOLE_CONSUMER, kafka_jars, kafka_tool, ok  # noqa: F401

PARTITIONS = 2
RECORDS = 20
LINE = re.compile(r"^Partition:(\d+)\tOffset:(\d+)\t(.*)$")


def console_consume(broker, topic, group, max_messages):
    """One run; the (partition, offset, value) it printed."""
    result = kafka_tool(
        CONSOLE_CONSUMER, "--bootstrap-server", broker.bootstrap, "--topic", topic,
        "--group", group, "--max-messages", str(max_messages), "--timeout-ms", "30000",
        "--consumer-property", "auto.offset.reset=earliest",
        "--consumer-property", "session.timeout.ms=6000",
        "--property", "print.partition=true", "--property", "print.offset=true")
    lines = ok(result).splitlines()
    assert f"Processed a total of {max_messages} messages" in result.stderr
    printed = []
    for line in lines:
        match = LINE.match(line)
        assert match, line
        printed.append((int(match.group(1)), int(match.group(2)), match.group(3)))
    return printed


@pytest.mark.usefixtures("kafka_jars")
def test_two_runs_in_one_group_split_the_records(broker):
    topic = f"console-group-{uuid.uuid4().hex[:6]}"
    group = f"g-{topic}"
    create_topic(broker, topic, PARTITIONS)
    records = [{"value": f"line-{index}".encode(), "partition": index % PARTITIONS}
               for index in range(RECORDS)]
    placed = produce_ok(rdkafka_producer(broker), topic, records)
    produced = sorted((partition, offset, record["value"].decode())
                      for (partition, offset), record in zip(placed, records))

    first = console_consume(broker, topic, group, 7)
    second = console_consume(broker, topic, group, RECORDS - 7)
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == produced

    # What the group committed is the end of each partition.
    checker = rdkafka_consumer(broker, **{"group.id": group})
    try:
        committed = checker.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 10)
    finally:
        checker.close()
    assert [tp.offset for tp in committed] == [RECORDS // PARTITIONS] * PARTITIONS
