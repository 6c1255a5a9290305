"""Kafka Connect standalone, unmodified (connect-runtime and connect-file jars from Maven Central,
fetched by scripts/kafka-jars.sh): `ConnectStandalone worker.properties source.properties
sink.properties` with a FileStreamSource connector copying a file into a topic and a
FileStreamSink connector writing that topic back out to another file.

The source task produces each line as a record; the sink task is a consumer in the group
`connect-<connector name>`, commits its offsets every offset.flush.interval.ms, and appends the
records to its file. The output must become the input, line for line and in order."""

import json
import re
import urllib.error
import urllib.request

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from kafka.admin import KafkaAdminClient

from client_helpers import consume_all
from java_helpers import JavaProgram, require_kafka_jars

CONNECT_STANDALONE = "org.apache.kafka.connect.cli.ConnectStandalone"
CONNECT_DISTRIBUTED = "org.apache.kafka.connect.cli.ConnectDistributed"
WORKER_GROUP = "connect-cluster"
TOPIC = "connect-file-lines"
SINK_GROUP = "connect-file-sink"


@pytest.fixture(scope="module", autouse=True)
def kafka_jars():
    require_kafka_jars()


def write_properties(path, settings):
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    return str(path)


def read_lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_file_source_to_file_sink_through_runnel(broker, tmp_path):
    source_file, sink_file = tmp_path / "input.txt", tmp_path / "output.txt"
    lines = [f"line {n}: the quick brown fox {'jumps ' * (n % 5)}over the lazy dog"
             for n in range(300)]
    source_file.write_text("".join(line + "\n" for line in lines))

    worker = write_properties(tmp_path / "worker.properties", {
        "bootstrap.servers": broker.bootstrap,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        "offset.storage.file.filename": tmp_path / "connect.offsets",
        "offset.flush.interval.ms": 500,
        "listeners": "http://127.0.0.1:0",  # the REST API on a free port
        # The connectors come from jars on the classpath, all with ServiceLoader manifests:
        # this skips a reflective scan of every class (seconds).
        "plugin.discovery": "service_load",
    })
    source = write_properties(tmp_path / "source.properties", {
        "name": "file-source",
        "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
        "tasks.max": 1,
        "file": source_file,
        "topic": TOPIC,
    })
    sink = write_properties(tmp_path / "sink.properties", {
        "name": "file-sink",
        "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
        "tasks.max": 1,
        "file": sink_file,
        "topics": TOPIC,
    })
    connect = JavaProgram(CONNECT_STANDALONE, [worker, source, sink], tmp_path / "connect.log")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        connect.wait_for(lambda: read_lines(sink_file) == lines,
                         "the sink file never became the source file")

        # The source task tails its file: appended lines follow.
        more = [f"appended line {n}" for n in range(50)]
        with open(source_file, "a") as handle:
            handle.write("".join(line + "\n" for line in more))
        lines += more
        connect.wait_for(lambda: read_lines(sink_file) == lines,
                         "the appended lines never reached the sink file")
        assert sink_file.read_text() == source_file.read_text()

        # The topic holds each line once, in order.
        records = consume_all(broker, TOPIC, [0])[0]
        assert [record.value().decode() for record in records] == lines

        # The sink task is a member of the consumer group connect-file-sink, and commits.
        groups = admin.list_consumer_groups().result(10).valid
        assert SINK_GROUP in [group.group_id for group in groups]
        described = admin.describe_consumer_groups([SINK_GROUP])[SINK_GROUP].result(10)
        assert [[(tp.topic, tp.partition) for tp in member.assignment.topic_partitions]
                for member in described.members] == [[(TOPIC, 0)]]

        def committed_to_the_end():
            request = [ConsumerGroupTopicPartitions(SINK_GROUP, [TopicPartition(TOPIC, 0)])]
            result = admin.list_consumer_group_offsets(request)[SINK_GROUP].result(10)
            return [tp.offset for tp in result.topic_partitions] == [len(lines)]

        connect.wait_for(committed_to_the_end, "the sink group never committed the last offset",
                         timeout=30)
    finally:
        connect.stop()
    connect.assert_stopped_cleanly("Kafka Connect stopped")
    # A clean stop leaves the group: no member is left behind.
    described = admin.describe_consumer_groups([SINK_GROUP])[SINK_GROUP].result(10)
    assert described.members == []


def rest(url, method="GET", body=None):
    """One call to the worker's REST API: (status, decoded JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def test_distributed_worker_with_connect_group_and_compacted_internal_topics(broker, tmp_path):
    """ConnectDistributed: the worker creates its compacted config/offset/status topics, joins
    a group of protocol type `connect` (leader election and connector assignment through
    JoinGroup/SyncGroup), and runs connectors submitted over REST."""
    source_file, sink_file = tmp_path / "input.txt", tmp_path / "output.txt"
    lines = [f"distributed line {n}" for n in range(200)]
    source_file.write_text("".join(line + "\n" for line in lines))
    worker = write_properties(tmp_path / "worker.properties", {
        "bootstrap.servers": broker.bootstrap,
        "group.id": WORKER_GROUP,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        "config.storage.topic": "connect-configs",
        "offset.storage.topic": "connect-offsets",
        "status.storage.topic": "connect-status",
        "config.storage.replication.factor": 1,
        "offset.storage.replication.factor": 1,
        "status.storage.replication.factor": 1,
        "offset.flush.interval.ms": 500,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "listeners": "http://127.0.0.1:0",
        "plugin.discovery": "service_load",
    })
    connect = JavaProgram(CONNECT_DISTRIBUTED, [worker], tmp_path / "connect-distributed.log")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        listening = re.compile(r"REST server listening at (http://[^ ,]+/)")
        connect.wait_for(lambda: listening.search(connect.log()),
                         "the REST server never started")
        url = listening.search(connect.log()).group(1)
        connectors = {
            "distributed-source": {
                "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                "tasks.max": "1", "file": str(source_file), "topic": "connect-distributed-lines"},
            "distributed-sink": {
                "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "tasks.max": "1", "file": str(sink_file), "topics": "connect-distributed-lines"},
        }
        for name, config in connectors.items():
            # 409 while the worker is still joining its group.
            connect.wait_for(lambda: rest(url + "connectors", "POST",
                                          {"name": name, "config": config})[0] == 201,
                             f"the worker never accepted connector {name}")
        connect.wait_for(lambda: read_lines(sink_file) == lines,
                         "the sink file never became the source file")
        for name in connectors:
            status = rest(f"{url}connectors/{name}/status")[1]
            assert status["connector"]["state"] == "RUNNING", status
            assert [task["state"] for task in status["tasks"]] == ["RUNNING"], status

        # The worker's own topics, created by its admin client, compacted as it asked.
        topics = admin.list_topics(timeout=10).topics
        for topic, partitions in [("connect-configs", 1), ("connect-offsets", 25),
                                  ("connect-status", 5)]:
            assert len(topics[topic].partitions) == partitions, topic
            resource = ConfigResource("topic", topic)
            configs = admin.describe_configs([resource])[resource].result(10)
            assert configs["cleanup.policy"].value == "compact", topic

        # ListGroups reports the worker group with protocol type connect, next to the sink
        # task's consumer group.
        kafka_python = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            listed = {group["group_id"]: group["protocol_type"]
                      for group in kafka_python.list_groups()}
        finally:
            kafka_python.close()
        assert listed[WORKER_GROUP] == "connect", listed
        assert listed["connect-distributed-sink"] == "consumer", listed
    finally:
        connect.stop()
    connect.assert_stopped_cleanly("Kafka Connect stopped")
