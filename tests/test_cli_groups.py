"""runnel's consumer-group CLI against the real broker: `runnel consume --group` members sharing a
topic with a confluent-kafka (librdkafka) member, exactly once; committed offsets resumed;
`runnel group list|describe|delete|reset-offsets`, with `describe` checked against the Java
`kafka-consumer-groups --describe` and reset-offsets checked through confluent-kafka's
`committed()` (OffsetFetch)."""

import datetime
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from client_helpers import produce_ok, rdkafka_producer
from conftest import RUNNEL
from test_java_tools import JARS, kafka_tool

CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
# Short timings so rebalances and commits happen within a test's seconds.
TIMINGS = ["--heartbeat-interval-ms", "300", "--session-timeout-ms", "6000"]
MEMBER_ARGS = [*TIMINGS, "--auto-commit-interval-ms", "300"]


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def runnel(broker, *args, expect=0, timeout=60):
    """Runs `runnel ARGS --bootstrap-server ...` and checks its exit code."""
    result = subprocess.run([RUNNEL, *args, "--bootstrap-server", broker.bootstrap],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == expect, (args, result.returncode, result.stdout, result.stderr)
    return result


def create_topic(broker, topic, partitions):
    runnel(broker, "topic", "create", "--topic", topic, "--partitions", str(partitions))


def describe(broker, group):
    return json.loads(runnel(broker, "group", "describe", group, "--json").stdout)


def consumed_json(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RunnelMember:
    """`runnel consume --group` in the background; its JSON records and stderr are collected."""

    def __init__(self, broker, group, topic, *extra, auto_commit_ms=300):
        self.proc = subprocess.Popen(
            [RUNNEL, "consume", "--topic", topic, "--group", group, "--json",
             "--bootstrap-server", broker.bootstrap, *TIMINGS,
             "--auto-commit-interval-ms", str(auto_commit_ms), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.records, self.errors = [], []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.records), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def consumed(self):
        return [(record["partition"], record["offset"]) for record in map(json.loads, self.records)]

    def joined(self):
        return any("joined group" in line for line in self.errors)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the member and waits for it; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class ConfluentMember:
    """A confluent-kafka consumer in the group, polled on its own thread. It commits each record
    synchronously after polling it, so whoever owns the partition next starts right after it."""

    def __init__(self, broker, group, topic, strategy="range", client_id="confluent-member"):
        self.consumer = Consumer({
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "client.id": client_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": strategy,
        })
        self.topic = topic
        self.records, self.errors, self.owned = [], [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        self.consumer.subscribe([self.topic])
        try:
            while not self._stop.is_set():
                message = self.consumer.poll(0.1)
                self.owned = sorted(tp.partition for tp in self.consumer.assignment())
                if message is None:
                    continue
                if message.error() is not None:
                    self.errors.append(str(message.error()))
                    continue
                self.records.append((message.partition(), message.offset()))
                try:
                    self.consumer.commit(message=message, asynchronous=False)
                except Exception as error:  # noqa: BLE001 - recorded and asserted on
                    self.errors.append(f"commit: {error}")
        finally:
            self.consumer.close()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the confluent member did not close"


def java_describe(broker, group):
    """kafka-consumer-groups --describe: {(topic, partition): row} with `-` for unknowns."""
    if shutil.which("java") is None or not os.path.isdir(JARS):
        pytest.fail("the Kafka tool jars are missing: run scripts/kafka-jars.sh (needs maven)")
    result = kafka_tool(CONSUMER_GROUP_COMMAND, "--bootstrap-server", broker.bootstrap,
                        "--describe", "--group", group)
    assert result.returncode == 0, result.stdout + result.stderr
    # Columns are cut at the header's positions (a cell may be empty).
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("GROUP "))
    starts, cursor = [], 0
    for name in header.split():
        starts.append(header.index(name, cursor))
        cursor = starts[-1] + len(name)
    rows = {}
    for line in lines:
        if not line.startswith(group + " "):
            continue
        cells = [line[start:end].strip() for start, end in zip(starts, starts[1:] + [None])]
        _, topic, partition, current, log_end, lag, consumer, host, client = cells
        rows[(topic, partition, consumer)] = (current, log_end, lag, consumer, host, client)
    return rows, result.stdout + result.stderr


def runnel_rows(described):
    """The same shape as java_describe's rows, from `runnel group describe --json`."""
    text = lambda value: "-" if value is None else str(value)  # noqa: E731
    rows = {}
    for row in described["offsets"]:
        key = (text(row["topic"]), text(row["partition"]), text(row["consumer_id"]))
        rows[key] = (text(row["current_offset"]), text(row["log_end_offset"]), text(row["lag"]),
                     text(row["consumer_id"]), text(row["host"]), text(row["client_id"]))
    return rows


def assignment(described):
    """{member_id: [partition, ...]} from a describe."""
    return {member["member_id"]: sorted(p["partition"] for p in member["assignment"])
            for member in described["members"]}


def committed(broker, group, topic, partitions):
    """The group's committed offsets through confluent-kafka (OffsetFetch)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        answer = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in answer}
    finally:
        consumer.close()


def test_runnel_and_confluent_members_share_a_topic_exactly_once(broker):
    """Across a rebalance and the runnel members' exit, every record is consumed exactly once:
    the runnel members commit before rejoining and when they stop."""
    topic, group = unique("cli-share"), unique("cli-g")
    create_topic(broker, topic, 4)
    producer = rdkafka_producer(broker)
    every = lambda end: sorted((p, o) for p in range(4) for o in range(end))  # noqa: E731
    # The first member joins alone, so it leads the group and later computes the assignment for
    # the librdkafka member too. It auto-commits only every minute: what it consumed before the
    # rebalance is committed by its commit before rejoining, or else read twice.
    first = RunnelMember(broker, group, topic, "--reset", "earliest", auto_commit_ms=60_000)
    second, confluent = None, None
    try:
        produce_ok(producer, topic, [{"value": b"early", "partition": i % 4} for i in range(200)])
        wait_for(lambda: len(first.consumed()) >= 200, 20, "the first member to read 200")

        confluent = ConfluentMember(broker, group, topic)
        second = RunnelMember(broker, group, topic, "--reset", "earliest")

        def settled():
            described = describe(broker, group)
            owned = assignment(described)
            everything = sorted(p for parts in owned.values() for p in parts)
            return (described["state"] == "Stable" and len(owned) == 3
                    and everything == [0, 1, 2, 3] and len(confluent.owned) > 0
                    and described) or None
        described = wait_for(settled, 30, "three members sharing the four partitions")
        assert described["protocol_type"] == "consumer" and described["protocol"] == "range"
        owned = assignment(described)
        assert sorted(len(parts) for parts in owned.values()) == [1, 1, 2], owned
        clients = sorted(member["client_id"] for member in described["members"])
        assert clients == ["confluent-member", "runnel-cli", "runnel-cli"]
        # Range: members in id order take consecutive partitions.
        in_order = [owned[member_id] for member_id in sorted(owned)]
        assert [p for parts in in_order for p in parts] == [0, 1, 2, 3]

        produce_ok(producer, topic, [{"value": f"r{i}".encode(), "partition": i % 4}
                                     for i in range(400)])
        seen = lambda: [*first.consumed(), *second.consumed(), *confluent.records]  # noqa: E731
        wait_for(lambda: len(seen()) >= 600, 30, "all 600 records consumed")
        time.sleep(1)  # anything delivered twice would show up now
        assert sorted(seen()) == every(150), "not exactly once across the rebalance"
        late_first = {p for p, o in first.consumed() if o >= 50}
        late_second = {p for p, _ in second.consumed()}
        assert late_first and late_second, "a runnel member got no partition"
        assert {p for p, _ in confluent.records} == set(confluent.owned)
        assert not confluent.errors, confluent.errors

        # The others commit as they go; the first member's partitions stay at the offsets it
        # committed before rejoining (50): lag 100. The Java tool shows the same.
        lags = lambda: {row["partition"]: row["lag"]  # noqa: E731
                        for row in describe(broker, group)["offsets"]}
        expected_lags = {p: 100 if p in late_first else 0 for p in range(4)}
        wait_for(lambda: lags() == expected_lags, 15, f"lags {expected_lags}")
        java_rows, java_out = java_describe(broker, group)
        ours = runnel_rows(describe(broker, group))
        assert java_rows == ours, java_out
        # Every member is reported at its address, as Kafka does (`/<ip>`).
        hosts = {row[4] for (_, _, consumer), row in ours.items() if consumer != "-"}
        assert hosts == {"/127.0.0.1"}, ours
        assert len(ours) == 4

        # SIGTERM: each runnel member commits, leaves, and exits 0; the confluent member gets
        # every partition at once (a departure noticed only by session timeout would take 6 s).
        stopped = time.time()
        for member in (first, second):
            assert member.stop() == 0, member.errors
            assert any("Processed a total of" in line for line in member.errors)
        wait_for(lambda: confluent.owned == [0, 1, 2, 3], 20,
                 "the confluent member to own every partition")
        assert time.time() - stopped < 6, "the runnel members did not leave the group"

        # They committed where they stopped: the confluent member reads only the new records.
        before = len(confluent.records)
        produce_ok(producer, topic, [{"value": b"late", "partition": i % 4} for i in range(40)])
        wait_for(lambda: len(confluent.records) >= before + 40, 20, "the 40 new records")
        time.sleep(1)
        assert sorted(confluent.records[before:]) == sorted(
            (p, o) for p in range(4) for o in range(150, 160)), "records read twice"
        confluent.close()
        confluent = None

        # The empty group: committed offsets without members, still agreeing with Java.
        described = wait_for(lambda: (lambda d: d["state"] == "Empty" and d)(
            describe(broker, group)), 10, "the group to be empty")
        assert described["members"] == []
        assert {(row["partition"], row["current_offset"], row["lag"])
                for row in described["offsets"]} == {(p, 160, 0) for p in range(4)}
        java_rows, java_out = java_describe(broker, group)
        assert java_rows == runnel_rows(described), java_out
        assert "has no active members" in java_out
    finally:
        for member in (first, second):
            if member is not None:
                member.kill()
        if confluent is not None:
            confluent.close()


def test_committed_offsets_resume(broker):
    topic, group = unique("cli-resume"), unique("cli-g")
    create_topic(broker, topic, 2)
    producer = rdkafka_producer(broker)
    produce_ok(producer, topic, [{"value": f"v{i}".encode(), "partition": i % 2}
                                 for i in range(20)])
    consume = ["consume", "--topic", topic, "--group", group, "--json", *MEMBER_ARGS]

    first = consumed_json(runnel(broker, *consume, "--reset", "earliest",
                                 "--max-messages", "7").stdout)
    assert len(first) == 7
    described = describe(broker, group)
    assert described["state"] == "Empty", "the member did not leave the group"
    # Each partition's position is committed: after its last record, or where it started.
    expected = {p: max([r["offset"] + 1 for r in first if r["partition"] == p], default=0)
                for p in (0, 1)}
    assert {row["partition"]: row["current_offset"] for row in described["offsets"]} == expected

    rest = consumed_json(runnel(broker, *consume, "--max-messages", "13").stdout)
    together = [(r["partition"], r["offset"]) for r in first + rest]
    assert sorted(together) == sorted((p, o) for p in (0, 1) for o in range(10)), \
        "a record consumed twice or skipped across the restart"
    assert {row["lag"] for row in describe(broker, group)["offsets"]} == {0}

    # --reset latest: a new group starts at the end, commits that, and later reads only what
    # was written after it.
    late = unique("cli-late")
    assert consumed_json(runnel(broker, "consume", "--topic", topic, "--group", late, "--json",
                                "--reset", "latest", "--timeout-ms", "1500",
                                *MEMBER_ARGS).stdout) == []
    assert {(row["partition"], row["current_offset"]) for row in describe(broker, late)["offsets"]} \
        == {(0, 10), (1, 10)}
    produce_ok(producer, topic, [{"value": b"new", "partition": 1}])
    fresh = consumed_json(runnel(broker, "consume", "--topic", topic, "--group", late, "--json",
                                 "--max-messages", "1", *MEMBER_ARGS).stdout)
    assert [(r["partition"], r["offset"], r["value"]) for r in fresh] == [(1, 10, "new")]


def iso(ms):
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def test_reset_offsets_every_mode(broker):
    topic, group = unique("cli-reset"), unique("cli-g")
    create_topic(broker, topic, 2)
    base = int(time.time() * 1000) - 3_600_000
    producer = rdkafka_producer(broker)
    produce_ok(producer, topic, [{"value": b"x", "partition": p, "timestamp": base + i * 1000}
                                 for p in (0, 1) for i in range(10)])
    reset = ["group", "reset-offsets", "--group", group]
    offsets = lambda: committed(broker, group, topic, [0, 1])  # noqa: E731

    plan = runnel(broker, *reset, "--topic", topic, "--to-offset", "5").stdout.splitlines()
    assert plan[0].split() == ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
    assert [line.split() for line in plan[1:]] == [[group, topic, "0", "5"],
                                                   [group, topic, "1", "5"]]
    assert offsets() == {0: 5, 1: 5}

    dry = runnel(broker, *reset, "--topic", topic, "--to-earliest", "--dry-run", "--json")
    assert json.loads(dry.stdout) == {"dry_run": True, "offsets": [
        {"group": group, "topic": topic, "partition": p, "new_offset": 0} for p in (0, 1)]}
    assert offsets() == {0: 5, 1: 5}, "--dry-run changed the offsets"

    runnel(broker, *reset, "--topic", topic, "--to-earliest")
    assert offsets() == {0: 0, 1: 0}
    runnel(broker, *reset, "--topic", f"{topic}:1", "--to-latest")
    assert offsets() == {0: 0, 1: 10}
    clamped = runnel(broker, *reset, "--all-topics", "--to-offset", "100")
    assert "outside" in clamped.stderr
    assert offsets() == {0: 10, 1: 10}
    runnel(broker, *reset, "--all-topics", "--to-datetime", iso(base + 3000))
    assert offsets() == {0: 3, 1: 3}
    runnel(broker, *reset, "--topic", f"{topic}:0", "--to-datetime", iso(base + 2500))
    assert offsets() == {0: 3, 1: 3}, "between two records: the later one"
    runnel(broker, *reset, "--all-topics", "--to-datetime", iso(base + 60_000))
    assert offsets() == {0: 10, 1: 10}, "after every record: the log end"

    # An active group is refused, and nothing changes.
    member = RunnelMember(broker, group, topic)
    try:
        wait_for(lambda: describe(broker, group)["state"] == "Stable", 20, "a stable group")
        refused = runnel(broker, *reset, "--all-topics", "--to-earliest", expect=1)
        assert "inactive" in refused.stderr and "Stable" in refused.stderr
        assert offsets() == {0: 10, 1: 10}
    finally:
        assert member.stop() == 0, member.errors

    # Usage errors.
    runnel(broker, *reset, "--to-earliest", expect=2)  # no scope
    runnel(broker, *reset, "--all-topics", expect=2)  # no target
    runnel(broker, *reset, "--all-topics", "--to-datetime", "yesterday", expect=2)
    runnel(broker, *reset, "--topic", f"{topic}:7", "--to-earliest", expect=2)
    missing = runnel(broker, *reset, "--topic", "no-such-topic", "--to-earliest", expect=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in missing.stderr


def test_list_describe_and_delete(broker):
    topic = unique("cli-list")
    create_topic(broker, topic, 4)
    idle, active = unique("cli-idle"), unique("cli-active")
    runnel(broker, "group", "reset-offsets", "--group", idle, "--topic", topic, "--to-earliest")

    # librdkafka leads (it joins first) and offers only roundrobin: the runnel member, which
    # offers range and roundrobin, gets its share of a roundrobin assignment.
    confluent = ConfluentMember(broker, active, topic, strategy="roundrobin",
                                client_id="rr-member")
    member = None
    try:
        wait_for(lambda: confluent.owned == [0, 1, 2, 3], 20, "the confluent member to join")
        member = RunnelMember(broker, active, topic)
        described = wait_for(lambda: (lambda d: d["state"] == "Stable"
                                      and len(d["members"]) == 2 and d)(describe(broker, active)),
                             20, "two members")
        assert described["protocol"] == "roundrobin"
        assert sorted(assignment(described).values()) == [[0, 2], [1, 3]]
        wait_for(member.joined, 10, "the runnel member to report its assignment")

        listed = {g["group"]: g for g in json.loads(runnel(broker, "group", "list",
                                                            "--json").stdout)}
        assert listed[idle]["state"] == "Empty" and listed[idle]["protocol_type"] == ""
        assert listed[active]["state"] == "Stable"
        assert listed[active]["protocol_type"] == "consumer"
        table = runnel(broker, "group", "list").stdout.splitlines()
        assert table[0].split() == ["GROUP", "STATE", "PROTOCOL-TYPE"]
        assert [active, "Stable", "consumer"] in [line.split() for line in table[1:]]

        text = runnel(broker, "group", "describe", active).stdout
        summary, offsets_table = text.split("\n\n")
        assert summary.splitlines()[1].split() == [active, "Stable", "consumer", "roundrobin",
                                                   "2"]
        header = offsets_table.splitlines()[0].split()
        assert header == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET",
                          "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"]
        assert len(offsets_table.splitlines()) == 5
        members_text = runnel(broker, "group", "describe", active, "--members").stdout
        assert "rr-member" in members_text and "runnel-cli" in members_text

        deleted = runnel(broker, "group", "delete", idle, active, unique("never"), expect=1)
        assert deleted.stdout == f"Deleted consumer group '{idle}'.\n"
        assert "NON_EMPTY_GROUP" in deleted.stderr and "GROUP_ID_NOT_FOUND" in deleted.stderr
        groups = [g["group"] for g in json.loads(runnel(broker, "group", "list", "--json").stdout)]
        assert idle not in groups and active in groups
        gone = runnel(broker, "group", "describe", idle, expect=1)
        assert "does not exist" in gone.stderr
    finally:
        if member is not None:
            assert member.stop() == 0, member.errors
        confluent.close()
    assert not confluent.errors, confluent.errors
    # Once empty it can be deleted.
    wait_for(lambda: describe(broker, active)["state"] == "Empty", 10, "an empty group")
    assert json.loads(runnel(broker, "group", "delete", active, "--json").stdout) == [
        {"group": active, "deleted": True, "error": None}]

    # A group member of a topic that does not exist is a clear error, not a wait.
    missing = runnel(broker, "consume", "--topic", "no-such-topic", "--group", active, expect=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in missing.stderr
    runnel(broker, "consume", "--topic", topic, "--group", active, "--partition", "0", expect=2)
