"""A consumer group that commits what it consumed reads every record exactly once, across a
rebalance (commits inside the revoke callback, the Kafka recipe) and across a broker restart,
clean or `kill -9`, with the members connected throughout: the union of what all members consumed
is every produced (partition, offset), none twice, none missing; the group resumes exactly after
its last commit."""

import time

import pytest
from confluent_kafka import KafkaException, TopicPartition

from client_helpers import (GroupMember, new_names, poll_for, poll_members, produce_ok,
                            rdkafka_producer)
from test_groups import create_topic

PARTITIONS = 4
KEYS = 16


def produce_keyed(broker, topic, start, count):
    """Records keyed by `key-<index % KEYS>` (the client's partitioner places them)."""
    producer = rdkafka_producer(broker)
    return produce_ok(producer, topic, [
        {"key": f"key-{index % KEYS}".encode(), "value": f"value-{index}".encode()}
        for index in range(start, start + count)])


def all_consumed(members):
    return [where for member in members for where in member.consumed()]


def total(members):
    return sum(len(member.messages) for member in members)


def owns(members, sizes):
    owned = [member.owned() for member in members]
    return sorted(len(partitions) for partitions in owned) == sizes and \
        sorted(p for partitions in owned for p in partitions) == list(range(PARTITIONS))


def committed(member, topic):
    where = [TopicPartition(topic, partition) for partition in range(PARTITIONS)]
    return {tp.partition: tp.offset for tp in member.consumer.committed(where, 10)}


def high_watermarks(member, topic):
    return {partition: member.consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=10)[1] for partition in range(PARTITIONS)}


def read_some_of_every_partition(member, topic, count, timeout=30):
    """Polls until `member` has read `count` records of every partition, pausing each
    partition as it gets there (pausing drops what was fetched beyond the position)."""
    counts = {partition: 0 for partition in range(PARTITIONS)}
    deadline = time.time() + timeout
    while min(counts.values()) < count:
        assert time.time() < deadline, f"read only {counts}"
        message = member.poll()
        if message is not None:
            counts[message.partition()] += 1
            if counts[message.partition()] == count:
                member.consumer.pause([TopicPartition(topic, message.partition())])


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_rebalance_with_commits_loses_and_repeats_nothing(broker, strategy):
    """A reads part of every partition without committing; B joins; A commits its positions in
    the revoke callback; B starts exactly there; both read the rest; after both leave, the
    group's committed offsets are the ends and a new member reads only what comes next."""
    topic, group = new_names("rebalance")
    create_topic(broker, topic, PARTITIONS)
    produced = produce_keyed(broker, topic, 0, 60)
    per_partition = [sum(1 for p, _ in produced if p == partition)
                     for partition in range(PARTITIONS)]
    assert min(per_partition) > 5, per_partition

    first = GroupMember(broker, group, topic, strategy, commit_on_revoke=True)
    members = [first]
    try:
        read_some_of_every_partition(first, topic, 5)
        read_by_first = {}
        for partition, offset in first.consumed():
            read_by_first[partition] = max(read_by_first.get(partition, -1), offset)
        second = GroupMember(broker, group, topic, strategy, commit_on_revoke=True)
        members.append(second)
        poll_members(members, lambda: owns(members, [2, 2]))
        given_to_second = second.owned()
        for member in members:
            member.consumer.resume(member.consumer.assignment())
        produced += produce_keyed(broker, topic, 60, 40)
        poll_members(members, lambda: total(members) >= len(produced))
        poll_for(members, 1.5)
    finally:
        for member in members:
            member.close()  # revokes, so the revoke callback commits the final positions
    assert [m.commit_failures for m in members] == [[], []]
    assert sorted(all_consumed(members)) == sorted(produced), "a record was repeated or skipped"
    # B took over mid-partition, exactly after what A had read (and committed on revoke).
    taken_over = {}
    for partition, offset in second.consumed():
        taken_over.setdefault(partition, offset)
    assert taken_over == {partition: read_by_first[partition] + 1
                          for partition in given_to_second}
    assert all(not member.lost for member in members)

    checker = GroupMember(broker, group, topic, strategy)
    try:
        assert committed(checker, topic) == high_watermarks(checker, topic)
        later = produce_keyed(broker, topic, 100, 12)
        poll_members([checker], lambda: len(checker.messages) >= len(later))
        poll_for([checker], 1.0)
        assert sorted(checker.consumed()) == sorted(later)
    finally:
        checker.close()


def commit_record(member, message, attempts=50):
    """Commits the position after `message`, retrying errors the client calls retriable (such
    as COORDINATOR_LOAD_IN_PROGRESS right after a restart) a bounded number of times; any other
    error fails the test."""
    for attempt in range(attempts):
        try:
            member.consumer.commit(message=message, asynchronous=False)
            return
        except KafkaException as error:
            if not error.args[0].retriable() or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def poll_and_commit(members, done, timeout=60):
    """Each member commits every record synchronously right after polling it."""
    deadline = time.time() + timeout
    while not done():
        assert time.time() < deadline, f"timed out; owned: {[m.owned() for m in members]}"
        for member in members:
            message = member.poll()
            if message is not None:
                commit_record(member, message)


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "kill-9"])
def test_live_group_resumes_after_broker_restart(broker, clean):
    """Two members commit every record; the broker restarts under them; they carry on, a third
    member joins and starts at the committed offsets: nothing repeated, nothing skipped."""
    topic, group = new_names("restart")
    create_topic(broker, topic, PARTITIONS)
    members = [GroupMember(broker, group, topic, "range") for _ in range(2)]
    try:
        poll_members(members, lambda: owns(members, [2, 2]))
        produced = produce_keyed(broker, topic, 0, 40)
        poll_and_commit(members, lambda: total(members) >= 20)
        before = committed(members[0], topic)
        progress = {}
        for partition, offset in all_consumed(members):
            progress[partition] = max(progress.get(partition, 0), offset + 1)
        assert {p: o for p, o in before.items() if o >= 0} == progress

        broker.restart(clean=clean)

        assert committed(members[0], topic) == before
        poll_and_commit(members, lambda: total(members) >= 30)
        # A newcomer forces a rebalance: partitions change owner and resume at the commits.
        members.append(GroupMember(broker, group, topic, "range"))
        poll_and_commit(members, lambda: owns(members, [1, 1, 2]))
        produced += produce_keyed(broker, topic, 40, 20)
        poll_and_commit(members, lambda: total(members) >= len(produced))
        poll_for(members, 1.5)
        assert sorted(all_consumed(members)) == sorted(produced), "repeated or skipped"
        assert members[2].messages, "the newcomer read nothing"
        assert committed(members[2], topic) == high_watermarks(members[2], topic)
    finally:
        for member in members:
            member.close()
