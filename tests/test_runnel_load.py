"""runnel-load produce / consume / e2e against the real broker: counts match between produce and
consume, every codec's batches are readable by librdkafka, e2e --verify passes, a record lost
(DeleteRecords) or written out of band is caught by consume --verify with exit code 3, --json
has the summary's fields, e2e --verify holds across a kill -9 of the broker, and group members
share a topic and commit. Runs are a few seconds each."""

import json
import os
import subprocess
import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from client_helpers import consume_all, produce_ok, rdkafka_producer
from conftest import RUNNEL

RUNNEL_LOAD = os.environ.get(
    "RUNNEL_LOAD_BIN", os.path.join(os.path.dirname(RUNNEL), "runnel-load"))
EXIT_VERIFY_FAILED = 3


def load(broker, mode, *args, timeout=120):
    result = subprocess.run(
        [RUNNEL_LOAD, mode, "--bootstrap", broker.bootstrap, "--threads", "2", *args],
        capture_output=True, text=True, timeout=timeout)
    return result


def load_ok(broker, mode, *args):
    result = load(broker, mode, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def test_produce_then_consume_counts_match(broker, tmp_path):
    produced = tmp_path / "produce.json"
    load_ok(broker, "produce", "--topic", "counts", "--create", "--partitions", "3",
            "--records", "3000", "--record-size", "200", "--producers", "2", "--keys", "100",
            "--verify", "--json", str(produced))
    summary = read_json(produced)
    assert summary["produce"]["records"] == 3000
    assert summary["produce"]["bytes"] >= 3000 * 200
    assert summary["errors"]["total"] == 0
    assert summary["verify"]["ok"] and summary["verify"]["acknowledged"] == 3000

    consumed = tmp_path / "consume.json"
    result = load_ok(broker, "consume", "--topic", "counts", "--consumers", "2", "--verify",
                     "--json", str(consumed))
    summary = read_json(consumed)
    assert summary["consume"]["records"] == 3000
    assert summary["consume"]["bytes"] == read_json(produced)["produce"]["bytes"]
    assert summary["verify"] == {**summary["verify"], "ok": True, "violations": 0, "read": 3000}
    assert "verify: OK" in result.stdout
    # Someone else's client reads the same records, each keyed as its value says.
    read = consume_all(broker, "counts", range(3))
    assert sum(len(messages) for messages in read.values()) == 3000


def test_every_codec_is_readable_by_librdkafka(broker, tmp_path):
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        topic = f"codec-{codec}"
        load_ok(broker, "produce", "--topic", topic, "--create", "--partitions", "1",
                "--records", "400", "--record-size", "300", "--compression", codec,
                "--batch-size", "8k", "--idempotence", "--verify")
        messages = consume_all(broker, topic, [0])[0]
        assert len(messages) == 400, codec
        assert all(len(message.value()) == 300 for message in messages), codec
        assert messages[0].value()[:4] == b"RNL1"
        load_ok(broker, "consume", "--topic", topic, "--verify")


def test_e2e_verify_passes_and_json_has_the_fields(broker, tmp_path):
    path = tmp_path / "e2e.json"
    result = load_ok(broker, "e2e", "--topic", "tail", "--create", "--partitions", "4",
                     "--duration", "3s", "--rate", "3000", "--producers", "2",
                     "--consumers", "2", "--keys", "50", "--idempotence", "--verify",
                     "--linger-ms", "2", "--json", str(path))
    assert "end-to-end latency" in result.stdout
    # A progress line a second.
    assert result.stdout.count("rec/s") >= 2
    summary = read_json(path)
    assert summary["mode"] == "e2e" and summary["partitions"] == 4
    produce, consume = summary["produce"], summary["consume"]
    # About 3 s at 3000 records/s; loose bounds, this machine is shared.
    assert 3000 <= produce["records"] <= 10_000
    assert consume["records"] == produce["records"]
    for side in (produce, consume):
        for field in ("records", "bytes", "seconds", "records_per_s", "mb_per_s"):
            assert side[field] > 0, field
    for latency in (produce["latency_us"], consume["e2e_latency_us"]):
        for field in ("p50", "p90", "p99", "p99.9", "p99.99", "max", "count"):
            assert latency[field] > 0, field
        assert latency["p50"] <= latency["p99"] <= latency["max"]
    assert summary["errors"] == {"total": 0, "by_kind": {}}
    verify = summary["verify"]
    assert verify["ok"] and verify["violations"] == 0
    assert verify["acknowledged"] == verify["read"] == produce["records"]
    assert summary["config"]["idempotence"] is True and summary["config"]["keys"] == "50"


def test_e2e_verify_passes_across_a_broker_crash(broker, tmp_path):
    """kill -9 mid-run: producers and consumers reconnect, the broker keeps everything it
    acknowledged, and writes that failed may show up only above what was known."""
    path = tmp_path / "crash.json"
    run = subprocess.Popen(
        [RUNNEL_LOAD, "e2e", "--bootstrap", broker.bootstrap, "--threads", "2",
         "--topic", "crashy", "--create", "--partitions", "4", "--duration", "6s",
         "--rate", "2000", "--producers", "2", "--consumers", "2", "--idempotence", "--verify",
         "--request-timeout-ms", "3000", "--quiet", "--json", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    broker.restart(clean=False)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stdout + stderr
    summary = read_json(path)
    assert summary["errors"]["total"] > 0, "the crash went unnoticed"
    verify = summary["verify"]
    assert verify["ok"], verify
    assert verify["acknowledged"] == summary["produce"]["records"] > 2000


def test_a_deleted_record_is_caught_by_verify(broker, tmp_path):
    load_ok(broker, "produce", "--topic", "trimmed", "--create", "--partitions", "1",
            "--records", "300", "--record-size", "100", "--verify")
    load_ok(broker, "consume", "--topic", "trimmed", "--verify")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    trimmed = TopicPartition("trimmed", 0, 10)
    assert admin.delete_records([trimmed])[trimmed].result(30).low_watermark == 10
    path = tmp_path / "verify.json"
    result = load(broker, "consume", "--topic", "trimmed", "--verify", "--json", str(path))
    assert result.returncode == EXIT_VERIFY_FAILED, result.stdout + result.stderr
    assert "verify: FAILED" in result.stdout and "lost" in result.stdout
    verify = read_json(path)["verify"]
    assert verify["ok"] is False
    assert verify["by_kind"] == {"lost": 10}
    assert "sequences 0..9" in verify["examples"][0]
    # Reading from the new start on purpose is not a loss.
    load_ok(broker, "consume", "--topic", "trimmed", "--verify", "--from", "10")


def test_a_record_written_out_of_band_is_caught_by_verify(broker):
    load_ok(broker, "produce", "--topic", "mixed", "--create", "--partitions", "1",
            "--records", "100", "--record-size", "64", "--verify")
    produce_ok(rdkafka_producer(broker), "mixed", [{"value": b"not from runnel-load"}])
    load_ok(broker, "produce", "--topic", "mixed", "--records", "100", "--record-size", "64",
            "--verify")
    result = load(broker, "consume", "--topic", "mixed", "--verify")
    assert result.returncode == EXIT_VERIFY_FAILED, result.stdout + result.stderr
    assert "foreign 1" in result.stdout
    assert "partition 0 offset 100" in result.stdout


def test_group_members_share_the_partitions_and_commit(broker, tmp_path):
    load_ok(broker, "produce", "--topic", "grouped", "--create", "--partitions", "4",
            "--records", "2000", "--record-size", "100")
    path = tmp_path / "group.json"
    load_ok(broker, "consume", "--topic", "grouped", "--group", "loaders", "--consumers", "3",
            "--json", str(path))
    assert read_json(path)["consume"]["records"] == 2000
    # Everything was committed: the group's next run starts at the end.
    load_ok(broker, "consume", "--topic", "grouped", "--group", "loaders", "--json", str(path))
    assert read_json(path)["consume"]["records"] == 0


def test_bad_arguments_are_refused(broker):
    result = load(broker, "consume", "--topic", "t", "--group", "g", "--verify")
    assert result.returncode == 1 and "leave out --group" in result.stderr
    result = load(broker, "produce", "--topic", "t", "--acks", "1", "--idempotence")
    assert result.returncode == 1 and "--acks all" in result.stderr
    result = load(broker, "produce", "--topic", "no-such-topic", "--records", "1")
    assert result.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in result.stderr
