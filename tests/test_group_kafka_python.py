"""kafka-python consumers in a group (`KafkaConsumer` with `group_id`): two members share four
partitions two each, commit what they read, and a later member of the same group resumes
exactly after those commits. kafka-python runs the group protocol inside `poll()` (with a
heartbeat thread beside it), so each member polls in its own thread here."""

import threading
import time
import uuid

from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient

from client_helpers import produce_ok, rdkafka_producer
from test_groups import create_topic

PARTITIONS = 4


def kafka_python_consumer(broker, group, topic):
    return KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000,
                         fetch_max_wait_ms=200)


class MemberThread:
    """One KafkaConsumer polling in its own thread; it commits (synchronously) after every
    poll that returned records, and leaves the group when stopped."""

    def __init__(self, broker, group, topic):
        self.consumer = kafka_python_consumer(broker, group, topic)
        self.owned = []
        self.consumed = []
        self.failure = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stopping.is_set():
                batches = self.consumer.poll(timeout_ms=100)
                for records in batches.values():
                    self.consumed += [(record.partition, record.offset) for record in records]
                if batches:
                    self.consumer.commit()
                self.owned = sorted(tp.partition for tp in self.consumer.assignment())
        except Exception as error:  # surfaced by stop()
            self.failure = error
        finally:
            self.consumer.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        assert self.failure is None, self.failure


def wait_for(condition, what, timeout=30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def produce_to_every_partition(broker, topic, start, count):
    return produce_ok(rdkafka_producer(broker), topic, [
        {"value": f"kp-{index}".encode(), "partition": index % PARTITIONS}
        for index in range(start, start + count)])


def test_two_kafka_python_members_share_commit_and_resume(broker):
    topic = f"kp-group-{uuid.uuid4().hex[:6]}"
    group = f"g-{topic}"
    create_topic(broker, topic, PARTITIONS)
    members = [MemberThread(broker, group, topic) for _ in range(2)]
    try:
        wait_for(lambda: [len(m.owned) for m in members] == [2, 2] and
                 sorted(members[0].owned + members[1].owned) == list(range(PARTITIONS)),
                 "two partitions each")
        produced = produce_to_every_partition(broker, topic, 0, 40)
        wait_for(lambda: sum(len(m.consumed) for m in members) >= len(produced), "all records")
        time.sleep(1.0)  # anything delivered twice would arrive now
        owned = [list(member.owned) for member in members]
    finally:
        for member in members:
            member.stop()
    assert sorted(where for m in members for where in m.consumed) == sorted(produced)
    for member, partitions in zip(members, owned):
        assert {partition for partition, _ in member.consumed} <= set(partitions)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {
        partition: 10 for partition in range(PARTITIONS)}

    # A later member of the group starts at the commits: it reads only the new records.
    later = produce_to_every_partition(broker, topic, 40, 8)
    resumed = kafka_python_consumer(broker, group, topic)
    try:
        seen = []
        deadline = time.time() + 30
        while len(seen) < len(later) and time.time() < deadline:
            for records in resumed.poll(timeout_ms=200).values():
                seen += [(record.partition, record.offset) for record in records]
        for _ in range(5):
            for records in resumed.poll(timeout_ms=200).values():
                seen += [(record.partition, record.offset) for record in records]
        assert sorted(seen) == sorted(later)
        assert resumed.committed(KafkaTopicPartition(topic, 0)) == 10
    finally:
        resumed.close()
