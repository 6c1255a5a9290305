"""Committed offsets over time: offset retention (`offsets.retention.minutes`, KIP-211 rules,
made testable with the `--offsets-retention-ms` knob) and the coordinator loading its groups
from `__consumer_offsets` after a restart (COORDINATOR_LOAD_IN_PROGRESS meanwhile, never wrong
or missing offsets)."""

import time
import uuid

from confluent_kafka import TopicPartition
from kafka.protocol.admin.groups import DescribeGroupsRequest, DescribeGroupsResponse
from kafka.protocol.consumer.group import (
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse)
from kafka.protocol.metadata import FindCoordinatorRequest, FindCoordinatorResponse

from client_helpers import RawConnection
from test_group_bad_input import commit, fetch, listed_groups
from test_groups import create_topic, group_consumer, partitions_of, poll_until

RETENTION_MS = 2000
CHECK_INTERVAL_MS = 200
RETENTION_ARGS = ["--offsets-retention-ms", str(RETENTION_MS),
                  "--offsets-retention-check-interval-ms", str(CHECK_INTERVAL_MS),
                  "--group-initial-rebalance-delay-ms", "0"]
COORDINATOR_LOAD_IN_PROGRESS = 14
REBALANCE_IN_PROGRESS = 27


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_simple_commits_expire_by_commit_time_and_stay_expired(broker_factory):
    broker = broker_factory(extra_args=RETENTION_ARGS)
    topic = f"retention-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    group = f"simple-{uuid.uuid4().hex[:6]}"
    connection = RawConnection(broker)
    committed_at = time.time()
    assert commit(connection, group, -1, "", {(topic, 0): 5, (topic, 1): 6}) == {
        (topic, 0): 0, (topic, 1): 0}
    assert fetch(connection, group) == (0, {(topic, 0): 5, (topic, 1): 6})
    assert group in listed_groups(connection)

    expired_at = wait_for(lambda: fetch(connection, group) == (0, {}), 10, "the offsets to expire")
    assert expired_at - committed_at >= (RETENTION_MS - 100) / 1000, "expired before its retention"
    # No offsets left: the group itself is removed.
    wait_for(lambda: group not in listed_groups(connection), 5, "the group to be removed")
    connection.close()

    # The expiry was written as tombstones: a restart does not bring anything back.
    broker.restart(clean=False)
    connection = RawConnection(broker)
    assert fetch(connection, group, [(topic, 0)]) == (0, {(topic, 0): -1})
    assert group not in listed_groups(connection)
    connection.close()


def test_a_stable_group_keeps_what_it_subscribes_to_until_it_empties(broker_factory):
    """KIP-211: while a consumer group is Stable only offsets of topics it no longer subscribes
    to expire (by commit time); once it is empty, the rest expire a retention period later."""
    broker = broker_factory(extra_args=RETENTION_ARGS)
    topic, other = (f"retention-{name}-{uuid.uuid4().hex[:6]}" for name in ("sub", "old"))
    create_topic(broker, topic, 2)
    create_topic(broker, other, 1)
    group = f"active-{uuid.uuid4().hex[:6]}"
    consumer = group_consumer(broker, group)
    consumer.subscribe([topic])
    poll_until([consumer], lambda: partitions_of(consumer) == [0, 1])
    consumer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(other, 0, 4)],
                    asynchronous=False)
    connection = RawConnection(broker)
    wanted = [(topic, 0), (other, 0)]
    assert fetch(connection, group, wanted) == (0, {(topic, 0): 3, (other, 0): 4})

    wait_for(lambda: fetch(connection, group, wanted)[1][(other, 0)] == -1, 10,
             "the unsubscribed topic's offset to expire")
    # Well past the retention: the subscribed topic's offset stays while the group is active.
    deadline = time.time() + RETENTION_MS / 1000 + 1
    while time.time() < deadline:
        consumer.poll(0.1)
        assert fetch(connection, group, wanted)[1][(topic, 0)] == 3

    consumer.close()  # a clean LeaveGroup: the group is empty from now
    emptied_at = time.time()
    expired_at = wait_for(lambda: fetch(connection, group, wanted)[1][(topic, 0)] == -1, 10,
                          "the offsets of the emptied group to expire")
    assert expired_at - emptied_at >= (RETENTION_MS - 300) / 1000, "expired before its retention"
    wait_for(lambda: group not in listed_groups(connection), 5, "the group to be removed")
    connection.close()


def big_commit(connection, group, topic, partitions, entries, base, metadata):
    """One OffsetCommit of `entries` partition entries cycling over `partitions` (the last entry
    per partition wins): a lot of `__consumer_offsets` to replay for few partitions."""
    topic_class = OffsetCommitRequest.OffsetCommitRequestTopic
    request = OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
        retention_time_ms=-1, topics=[topic_class(name=topic, partitions=[
            topic_class.OffsetCommitRequestPartition(
                partition_index=index % partitions, committed_offset=base + index,
                committed_leader_epoch=-1, committed_metadata=metadata)
            for index in range(entries)])])
    response = connection.call(request, OffsetCommitResponse, 8)
    assert {partition.error_code for partition in response.topics[0].partitions} == {0}


def test_offsets_are_loading_or_right_after_a_restart(broker):
    """After a restart each shard serves while it replays a large `__consumer_offsets` partition:
    requests for its groups get COORDINATOR_LOAD_IN_PROGRESS (Heartbeat: no error, SyncGroup:
    REBALANCE_IN_PROGRESS, as Kafka), FindCoordinator answers, and once loaded the offsets are
    exactly the last ones committed, never empty or older ones."""
    topic = f"loading-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 5)  # partition 4 is for commits while loading
    group = f"loading-{uuid.uuid4().hex[:6]}"
    connection = RawConnection(broker)
    entries = 20_000
    for round_ in range(3):
        big_commit(connection, group, topic, 4, entries, round_ * entries, "m" * 1000)
    wanted = [(topic, partition) for partition in range(4)]
    expected = {(topic, partition): 2 * entries + entries - 4 + partition for partition in range(4)}
    assert fetch(connection, group, wanted) == (0, expected)
    connection.close()

    broker.restart(clean=True)
    connection = RawConnection(broker)
    answers = {"loading": 0, "loaded": 0}
    deadline = time.time() + 60
    while answers["loaded"] < 3:
        assert time.time() < deadline, f"not loaded in time: {answers}"
        error, offsets = fetch(connection, group, wanted)
        if error == COORDINATOR_LOAD_IN_PROGRESS:
            answers["loading"] += 1
            assert_answers_while_loading(connection, group, topic)
            continue
        assert (error, offsets) == (0, expected), "served offsets that are not the committed ones"
        answers["loaded"] += 1
    assert answers["loading"] > 0, "never saw the coordinator loading: the test proves nothing"
    # Loaded: the group answers normally again.
    [described] = connection.call(DescribeGroupsRequest(groups=[group]), DescribeGroupsResponse,
                                  5).groups
    assert (described.error_code, described.group_state) == (0, "Empty")
    assert commit(connection, group, -1, "", {(topic, 0): 1}) == {(topic, 0): 0}
    connection.close()


def assert_answers_while_loading(connection, group, topic):
    """Each group request for a group still loading gets COORDINATOR_LOAD_IN_PROGRESS, or (if
    the load just finished) its normal answer; FindCoordinator always answers."""
    found = connection.call(FindCoordinatorRequest(key_type=0, coordinator_keys=[group]),
                            FindCoordinatorResponse, 4)
    assert [coordinator.error_code for coordinator in found.coordinators] == [0]
    [described] = connection.call(DescribeGroupsRequest(groups=[group]), DescribeGroupsResponse,
                                  5).groups
    assert described.error_code in (COORDINATOR_LOAD_IN_PROGRESS, 0)
    join = JoinGroupRequest(
        group_id=group, session_timeout_ms=6000, rebalance_timeout_ms=100, member_id="",
        group_instance_id=None, protocol_type="consumer",
        protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")])
    assert connection.call(join, JoinGroupResponse, 5).error_code in (
        COORDINATOR_LOAD_IN_PROGRESS, 79)
    heartbeat = HeartbeatRequest(group_id=group, generation_id=1, member_id="m",
                                 group_instance_id=None)
    assert connection.call(heartbeat, HeartbeatResponse, 3).error_code in (0, 25)
    sync = SyncGroupRequest(group_id=group, generation_id=1, member_id="m",
                            group_instance_id=None, assignments=[])
    assert connection.call(sync, SyncGroupResponse, 3).error_code in (REBALANCE_IN_PROGRESS, 25)
    # A commit to a partition the offset checks do not read.
    assert commit(connection, group, -1, "", {(topic, 4): 0}) in (
        {(topic, 4): COORDINATOR_LOAD_IN_PROGRESS}, {(topic, 4): 0})
