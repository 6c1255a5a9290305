"""The Apache Kafka 4.x command-line tools, unmodified (jars from Maven Central fetched by
scripts/kafka-jars.sh, run with `java -cp`): the Kafka quickstart against runnel.

`kafka-console-consumer` without `--group` still makes up a group id and subscribes, so the exact
quickstart command exercises the group coordinator (FindCoordinator, JoinGroup, SyncGroup, ...);
the `--partition 0` variant covers manual assignment without a group."""

import os
import shutil
import subprocess

import pytest
from confluent_kafka import TopicPartition

from client_helpers import assert_idempotent_batches, rdkafka_consumer, stored_batches
from conftest import ROOT

JARS = os.path.join(ROOT, ".tools", "kafka-jars")
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
PRODUCER_PERF_TEST = "org.apache.kafka.tools.ProducerPerformance"
EVENTS = ["This is my first event", "This is my second event"]


@pytest.fixture(scope="module", autouse=True)
def kafka_jars():
    if shutil.which("java") is None or not os.path.isdir(JARS):
        pytest.fail("the Kafka tool jars are missing: run scripts/kafka-jars.sh (needs maven)")


def kafka_tool(main_class, *args, stdin=None, timeout=120):
    """Runs one tool; returns the CompletedProcess (stdout and stderr as text)."""
    command = ["java", "-XX:TieredStopAtLevel=1",
               "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
               "-cp", os.path.join(JARS, "*"), main_class, *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_quickstart(broker):
    bootstrap = ["--bootstrap-server", broker.bootstrap]
    created = ok(kafka_tool(TOPIC_COMMAND, "--create", "--topic", "quickstart-events",
                            *bootstrap))
    assert "Created topic quickstart-events." in created
    described = ok(kafka_tool(TOPIC_COMMAND, "--describe", "--topic", "quickstart-events",
                              *bootstrap))
    assert "Topic: quickstart-events" in described
    assert "PartitionCount: 1" in described and "ReplicationFactor: 1" in described
    assert "Partition: 0\tLeader: 1\tReplicas: 1\tIsr: 1" in described
    ok(kafka_tool(CONSOLE_PRODUCER, "--topic", "quickstart-events", *bootstrap,
                  stdin="".join(event + "\n" for event in EVENTS)))
    consumed = kafka_tool(CONSOLE_CONSUMER, "--topic", "quickstart-events", "--from-beginning",
                          "--partition", "0", "--max-messages", "2", "--timeout-ms", "30000",
                          *bootstrap)
    assert ok(consumed).splitlines() == EVENTS
    assert "Processed a total of 2 messages" in consumed.stderr


def test_quickstart_consumer_with_its_own_group(broker):
    bootstrap = ["--bootstrap-server", broker.bootstrap]
    ok(kafka_tool(CONSOLE_PRODUCER, "--topic", "quickstart-events", *bootstrap,
                  stdin="".join(event + "\n" for event in EVENTS)))
    consumed = kafka_tool(CONSOLE_CONSUMER, "--topic", "quickstart-events", "--from-beginning",
                          "--max-messages", "2", "--timeout-ms", "20000", *bootstrap)
    assert ok(consumed).splitlines() == EVENTS


def test_producer_perf_test_with_its_defaults(broker):
    """Defaults of the Java producer: idempotent, acks=all."""
    records = 20000
    out = ok(kafka_tool(PRODUCER_PERF_TEST, "--topic", "perf-test",
                        "--num-records", str(records), "--throughput", "-1",
                        "--record-size", "100",
                        "--producer-props", f"bootstrap.servers={broker.bootstrap}"))
    assert f"{records} records sent" in out
    consumer = rdkafka_consumer(broker)
    try:
        assert consumer.get_watermark_offsets(
            TopicPartition("perf-test", 0), timeout=10) == (0, records)
    finally:
        consumer.close()
    assert_idempotent_batches(stored_batches(broker, "perf-test", 0))
