"""runnel's own CLI (`runnel topic|produce|consume`) against the real broker: the seed's
quickstart, keys and partitioning, --json output, exit codes, start offsets, topic configs,
and interop both ways with producers and consumers nobody here wrote (kcat, confluent-kafka,
kafka-python), compressed batches included so the CLI's decompression is exercised."""

import json
import socket
import subprocess
import time

import pytest
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from client_helpers import stored_batches
from conftest import RUNNEL

CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # record batch attribute bits 0-2
# Values that shrink when compressed: librdkafka sends a batch uncompressed when it would not.
COMPRESSIBLE = "compressible-" * 40


def cli(broker, *args, stdin=None, expect=0, timeout=60):
    """Runs `runnel ARGS --bootstrap-server ...` and checks its exit code."""
    result = subprocess.run(
        [RUNNEL, *args, "--bootstrap-server", broker.bootstrap],
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == expect, (args, result.returncode, result.stdout, result.stderr)
    return result


def consume_lines(broker, topic, *args):
    out = cli(broker, "consume", "--topic", topic, *args).stdout
    return out.splitlines()


def kcat(broker, *args, stdin=None):
    result = subprocess.run(["kcat", "-b", broker.bootstrap, *args],
                            input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def expected_partition(key, partitions):
    """Kafka's default partitioner (Java's murmur2), as kafka-python implements it."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def test_quickstart(broker):
    out = cli(broker, "topic", "create", "--topic", "quickstart-events").stdout
    assert out == "Created topic quickstart-events.\n"

    described = cli(broker, "topic", "describe", "--topic", "quickstart-events").stdout
    summary, partitions = described.split("\n\n")
    assert summary.splitlines()[0].split() == [
        "TOPIC", "TOPIC", "ID", "PARTITIONS", "REPLICATION", "FACTOR", "CONFIGS"]
    assert summary.splitlines()[1].split()[0] == "quickstart-events"
    assert summary.splitlines()[1].split()[2:4] == ["1", "1"]
    assert partitions.splitlines()[1].split() == ["quickstart-events", "0", "1", "1", "1"]

    listed = cli(broker, "topic", "list").stdout.splitlines()
    assert listed[0].split() == ["TOPIC", "PARTITIONS", "REPLICATION", "FACTOR"]
    assert ["quickstart-events", "1", "1"] in [line.split() for line in listed[1:]]

    cli(broker, "produce", "--topic", "quickstart-events",
        stdin="This is my first event\nThis is my second event\n")
    result = cli(broker, "consume", "--topic", "quickstart-events", "--from-beginning",
                 "--max-messages", "2")
    assert result.stdout == "This is my first event\nThis is my second event\n"
    assert "Processed a total of 2 messages" in result.stderr

    assert cli(broker, "topic", "delete", "--topic", "quickstart-events").stdout == \
        "Deleted topic quickstart-events.\n"
    assert "quickstart-events" not in cli(broker, "topic", "list").stdout
    gone = cli(broker, "topic", "describe", "--topic", "quickstart-events", expect=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in gone.stderr


def test_keys_go_to_the_java_clients_partition_in_order(broker):
    cli(broker, "topic", "create", "--topic", "keyed", "--partitions", "3")
    keys = ["user-%d" % (i % 7) for i in range(40)]
    lines = "".join(f"{key}::value {i}::with separator\n" for i, key in enumerate(keys))
    cli(broker, "produce", "--topic", "keyed", "--key-separator", "::", stdin=lines)

    seen = {}
    for partition in range(3):
        out = consume_lines(broker, "keyed", "--partition", str(partition), "--offset", "earliest",
                            "--timeout-ms", "1000", "--print-key", "--print-offset")
        for offset_field, key, value in (line.split("\t") for line in out):
            assert expected_partition(key, 3) == partition, key
            seen.setdefault(partition, []).append((int(offset_field.removeprefix("Offset:")),
                                                   key, value))
    assert sum(len(records) for records in seen.values()) == len(keys)
    assert len(seen) > 1, "7 keys over 3 partitions should use more than one"
    for records in seen.values():
        assert [offset for offset, _, _ in records] == list(range(len(records)))
        numbers = [int(value.split()[1].removesuffix("::with")) for _, _, value in records]
        assert numbers == sorted(numbers), "order within a partition is the input order"
        for _, key, value in records:
            assert value.endswith("::with separator")  # split at the first separator only
            assert keys[int(value.split()[1].removesuffix("::with"))] == key

    # --partition overrides the key; a line without the separator is an input error (exit 2)
    # after the lines before it were sent.
    cli(broker, "produce", "--topic", "keyed", "--partition", "2", "--key-separator", ":",
        stdin="k:first\nno separator here\nk:never\n", expect=2)
    tail = consume_lines(broker, "keyed", "--partition", "2", "--offset", "latest",
                         "--timeout-ms", "300")
    assert tail == []
    everything = consume_lines(broker, "keyed", "--partition", "2", "--from-beginning",
                               "--timeout-ms", "1000", "--print-key")
    assert everything[-1] == "k\tfirst"


def test_json_output_parses(broker):
    created = json.loads(cli(broker, "topic", "create", "--topic", "js", "--partitions", "2",
                             "--json").stdout)
    assert created == {"topic": "js", "created": True}

    listed = json.loads(cli(broker, "topic", "list", "--json").stdout)
    [entry] = [topic for topic in listed if topic["name"] == "js"]
    assert entry["partitions"] == 2 and entry["replication_factor"] == 1
    assert len(entry["topic_id"]) == 22  # Kafka's base64 form of the topic UUID

    [described] = json.loads(cli(broker, "topic", "describe", "--topic", "js", "--json").stdout)
    assert described["name"] == "js" and described["partition_count"] == 2
    assert described["topic_id"] == entry["topic_id"]
    assert [p["partition"] for p in described["partitions"]] == [0, 1]
    assert all(p["leader"] == 1 and p["replicas"] == [1] and p["isr"] == [1]
               for p in described["partitions"])

    summary = json.loads(cli(broker, "produce", "--topic", "js", "--partition", "1",
                             "--key-separator", "=", "--json", stdin="a=1\nb=2\nc=3\n").stdout)
    assert summary == {"topic": "js", "records": 3, "partitions": [
        {"partition": 1, "records": 3, "first_offset": 0, "last_offset": 2}]}

    out = consume_lines(broker, "js", "--from-beginning", "--max-messages", "3", "--json")
    records = [json.loads(line) for line in out]
    assert [(r["partition"], r["offset"], r["key"], r["value"]) for r in records] == [
        (1, 0, "a", "1"), (1, 1, "b", "2"), (1, 2, "c", "3")]
    assert all(r["topic"] == "js" and r["timestamp_type"] == "CreateTime" and r["headers"] == []
               and r["timestamp"] > 0 for r in records)

    deleted = json.loads(cli(broker, "topic", "delete", "--topic", "js", "--json").stdout)
    assert deleted == {"topic": "js", "deleted": True}


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_exit_codes(broker):
    cli(broker, "topic", "create", "--topic", "exists")
    again = cli(broker, "topic", "create", "--topic", "exists", expect=1)
    assert "TOPIC_ALREADY_EXISTS" in again.stderr
    assert "already exists" in cli(broker, "topic", "create", "--topic", "exists",
                                   "--if-not-exists").stdout
    assert "UNKNOWN_TOPIC_OR_PARTITION" in cli(broker, "topic", "delete", "--topic", "missing",
                                               expect=1).stderr
    cli(broker, "topic", "delete", "--topic", "missing", "--if-exists")
    assert "UNKNOWN_TOPIC_OR_PARTITION" in cli(
        broker, "consume", "--topic", "missing", "--from-beginning", expect=1).stderr
    assert "INVALID" in cli(broker, "topic", "create", "--topic", "bad/name", expect=1).stderr

    # Usage errors: exit 2 before anything is sent.
    cli(broker, "topic", "create", expect=2)  # no --topic
    cli(broker, "topic", "create", "--topic", "x", "--config", "novalue", expect=2)
    cli(broker, "topic", "create", "--topic", "x", "--partitions", "0", expect=2)
    cli(broker, "consume", "--topic", "exists", "--offset", "3", expect=2)  # needs --partition
    cli(broker, "consume", "--topic", "exists", "--from-beginning", "--partition", "0",
        "--offset", "1", expect=2)
    cli(broker, "topic", "alter-config", "--topic", "exists", expect=2)  # nothing to change
    cli(broker, "produce", "--topic", "exists", "--acks", "2", expect=2)
    assert "x" not in cli(broker, "topic", "list").stdout.split()

    # Cannot connect: exit 3.
    result = subprocess.run(
        [RUNNEL, "topic", "list", "--bootstrap-server", f"127.0.0.1:{closed_port()}"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result
    assert "cannot connect" in result.stderr


def test_start_offsets_and_waiting_for_new_records(broker):
    cli(broker, "produce", "--topic", "offsets", stdin="".join(f"r{i}\n" for i in range(5)))
    assert consume_lines(broker, "offsets", "--partition", "0", "--offset", "3",
                         "--timeout-ms", "500", "--print-offset") == ["Offset:3\tr3",
                                                                        "Offset:4\tr4"]
    assert consume_lines(broker, "offsets", "--partition", "0", "--offset", "latest",
                         "--timeout-ms", "300") == []
    beyond = cli(broker, "consume", "--topic", "offsets", "--partition", "0", "--offset", "99",
                 expect=1)
    assert "OFFSET_OUT_OF_RANGE" in beyond.stderr
    assert "UNKNOWN_TOPIC_OR_PARTITION" in cli(
        broker, "consume", "--topic", "offsets", "--partition", "5", "--from-beginning",
        expect=1).stderr

    # Without --from-beginning the consumer starts at the log end and waits (long poll) for
    # new records. Records produced before it has looked up the end would be skipped, so keep
    # producing one record at a time until it has printed two.
    consumer = subprocess.Popen(
        [RUNNEL, "consume", "--topic", "offsets", "--max-messages", "2", "--print-offset",
         "--bootstrap-server", broker.bootstrap],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for attempt in range(100):
            if consumer.poll() is not None:
                break
            cli(broker, "produce", "--topic", "offsets", stdin=f"new-{attempt}\n")
            time.sleep(0.1)
        out, err = consumer.communicate(timeout=30)
    finally:
        consumer.kill()
    assert consumer.returncode == 0, err
    printed = [line.split("\t") for line in out.splitlines()]
    assert len(printed) == 2
    offsets = [int(offset.removeprefix("Offset:")) for offset, _ in printed]
    assert offsets[0] >= 5 and offsets[1] == offsets[0] + 1  # nothing from before it started
    assert [value for _, value in printed] == [f"new-{offsets[0] - 5}", f"new-{offsets[1] - 5}"]


def describe_configs(broker, topic):
    result = cli(broker, "topic", "describe", "--topic", topic, "--json")
    if "does not support DescribeConfigs" in result.stderr:
        pytest.skip("the broker does not serve DescribeConfigs yet")
    [described] = json.loads(result.stdout)
    return described["configs"]


def test_topic_configs(broker):
    cli(broker, "topic", "create", "--topic", "configured", "--config", "retention.ms=60000",
        "--config", "cleanup.policy=delete")
    assert describe_configs(broker, "configured") == {"retention.ms": "60000",
                                                      "cleanup.policy": "delete"}
    text = cli(broker, "topic", "describe", "--topic", "configured").stdout
    assert "cleanup.policy=delete,retention.ms=60000" in text

    altered = cli(broker, "topic", "alter-config", "--topic", "configured",
                  "--config", "retention.ms=1000", "--config", "segment.bytes=1048576",
                  "--delete-config", "cleanup.policy")
    assert altered.stdout == "Updated configs of topic configured.\n"
    assert describe_configs(broker, "configured") == {"retention.ms": "1000",
                                                      "segment.bytes": "1048576"}
    [described] = json.loads(cli(broker, "topic", "describe", "--topic", "configured",
                                 "--all-configs", "--json").stdout)
    assert described["configs"]["cleanup.policy"] == "delete"  # back to the default
    assert "max.message.bytes" in described["configs"]

    bad = cli(broker, "topic", "alter-config", "--topic", "configured",
              "--config", "retention.ms=soon", expect=1)
    assert "INVALID_CONFIG" in bad.stderr


def test_cli_produces_what_kcat_consumes(broker):
    cli(broker, "produce", "--topic", "to-kcat", "--key-separator", ":",
        stdin="k1:hello\nk2:world\n:empty key\n")
    out = kcat(broker, "-C", "-t", "to-kcat", "-o", "beginning", "-e", "-f", "%o %k=%s\n")
    assert out.splitlines() == ["0 k1=hello", "1 k2=world", "2 =empty key"]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "zstd"])
def test_cli_consumes_what_kcat_produces(broker, codec):
    topic = f"from-kcat-{codec}"
    lines = [f"k{i}:{COMPRESSIBLE}{i}" for i in range(50)]
    kcat(broker, "-P", "-t", topic, "-K", ":", "-z", codec, stdin="\n".join(lines) + "\n")
    if codec != "none":
        codecs = {batch.compression_type for batch in stored_batches(broker, topic, 0)}
        assert codecs == {CODEC_IDS[codec]}, "kcat should have sent compressed batches"
    out = consume_lines(broker, topic, "--from-beginning", "--max-messages", "50",
                        "--print-key", "--key-separator", ":")
    assert out == lines


def test_cli_consumes_lz4_and_xerial_snappy_from_other_clients(broker):
    # kafka-python: Debian's kcat (and librdkafka, until the broker advertises FindCoordinator)
    # sends lz4 uncompressed, and kafka-python frames snappy like the Java client (xerial), not
    # raw like librdkafka.
    for topic, codec in [("from-python-lz4", "lz4"), ("from-python-snappy", "snappy")]:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec,
                                 linger_ms=5)
        for i in range(20):
            producer.send(topic, key=f"k{i}".encode(), value=f"{COMPRESSIBLE}{i}".encode(),
                          headers=[("h", b"v"), ("e", b"")])
        producer.flush()
        producer.close()

    for topic, codec in [("from-python-lz4", "lz4"), ("from-python-snappy", "snappy")]:
        assert {b.compression_type for b in stored_batches(broker, topic, 0)} == \
            {CODEC_IDS[codec]}
        out = consume_lines(broker, topic, "--from-beginning", "--max-messages", "20", "--json")
        records = [json.loads(line) for line in out]
        assert [(r["offset"], r["key"], r["value"]) for r in records] == [
            (i, f"k{i}", f"{COMPRESSIBLE}{i}") for i in range(20)], topic
    headers = json.loads(consume_lines(broker, "from-python-lz4", "--partition", "0",
                                       "--offset", "0", "--max-messages", "1", "--json")[0])
    assert headers["headers"] == [{"key": "h", "value": "v"}, {"key": "e", "value": ""}]
    text = consume_lines(broker, "from-python-lz4", "--partition", "0", "--offset", "0",
                         "--max-messages", "1", "--print-headers")
    assert text[0] == f"h:v,e:\t{COMPRESSIBLE}0"
