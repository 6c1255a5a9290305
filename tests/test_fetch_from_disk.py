"""Fetches served from segment files with sendfile (no tail cache), across both shards and
segment rolls: every record comes back intact and in order."""

import subprocess

from client_helpers import consume_all, produce_ok, rdkafka_producer


def test_sendfile_path_serves_every_record(broker_factory):
    broker = broker_factory(extra_args=["--cache-mib-per-shard", "0"])
    producer = rdkafka_producer(broker, acks="all", compression_type="none", linger_ms=20)
    records = [
        {"key": f"k{index % 97}".encode(), "value": (f"{index}:".encode() * 50)[: 200 + index % 700],
         "partition": index % 4}
        for index in range(20000)
    ]
    # Small segments so reads cross segment boundaries.
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(
        "disk", num_partitions=4, replication_factor=1, config={"segment.bytes": str(256 * 1024)})])
    futures["disk"].result(timeout=30)
    produce_ok(producer, "disk", records)
    got = consume_all(broker, "disk", range(4), timeout=60)
    for partition in range(4):
        expected = [record["value"] for record in records if record["partition"] == partition]
        assert [message.value() for message in got[partition]] == expected
    # kcat (librdkafka 2.0.2) reads the same bytes from the files.
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-C", "-t", "disk", "-p", "2", "-o", "beginning", "-e",
         "-f", "%s\n"], capture_output=True, timeout=60, text=True)
    assert out.returncode == 0, out.stderr
    expected = [record["value"].decode() for record in records if record["partition"] == 2]
    assert out.stdout.splitlines() == expected
