"""Bad input to the consumer-group coordinator: unknown groups, oversized metadata, stale
generations, unknown members, inconsistent protocols, floods of joins, invalid session
timeouts. Each gets Kafka's error code; afterwards another group on the same broker still
joins, commits and fetches (no corruption) and the broker is alive.

Requests are built with kafka-python's protocol classes and sent raw (one request at a time
on a RawConnection), so each case controls every field."""

import time
import uuid

import pytest
from kafka.protocol.admin.groups import (
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    ListGroupsRequest, ListGroupsResponse)
from kafka.protocol.consumer.group import (
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse)

from client_helpers import RawConnection
from test_groups import create_topic

JOIN_VERSION = 5  # member id required (KIP-394), static members
SYNC_VERSION = 5  # protocol type and name checked
HEARTBEAT_VERSION = 3
LEAVE_VERSION = 3  # batched members
COMMIT_VERSION = 8
FETCH_VERSION = 7  # one group per request

NONE = 0
INVALID_REQUEST = 42
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81

# The broker's GroupLimits (net/src/group/mod.rs) and Kafka's session timeout bounds.
MEMBERS_PER_GROUP_MAX = 1000
MEMBER_METADATA_BYTES_MAX = 1 << 20
PROTOCOLS_PER_MEMBER_MAX = 64
SESSION_TIMEOUT_MIN_MS = 6000
SESSION_TIMEOUT_MAX_MS = 1_800_000

Protocol = JoinGroupRequest.JoinGroupRequestProtocol


def new_group(prefix="g"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def join(connection, group, member_id="", protocols=(("range", b"subscription"),),
         protocol_type="consumer", session_timeout_ms=SESSION_TIMEOUT_MIN_MS,
         rebalance_timeout_ms=100, instance_id=None):
    """One JoinGroup; a short rebalance timeout keeps the initial rebalance delay short."""
    request = JoinGroupRequest(
        group_id=group, session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=rebalance_timeout_ms, member_id=member_id,
        group_instance_id=instance_id, protocol_type=protocol_type,
        protocols=[Protocol(name=name, metadata=metadata) for name, metadata in protocols])
    return connection.call(request, JoinGroupResponse, JOIN_VERSION)


def join_as_member(connection, group, **kwargs):
    """The KIP-394 round trip: MEMBER_ID_REQUIRED, then the join with that id."""
    first = join(connection, group, **kwargs)
    assert first.error_code == MEMBER_ID_REQUIRED, first
    response = join(connection, group, member_id=first.member_id, **kwargs)
    assert response.error_code == NONE, response
    return response


def sync(connection, group, generation, member_id, assignments=(), protocol_type="consumer",
         protocol_name="range"):
    request = SyncGroupRequest(
        group_id=group, generation_id=generation, member_id=member_id, group_instance_id=None,
        protocol_type=protocol_type, protocol_name=protocol_name,
        assignments=[SyncGroupRequest.SyncGroupRequestAssignment(member_id=member, assignment=data)
                     for member, data in assignments])
    return connection.call(request, SyncGroupResponse, SYNC_VERSION)


def stable_member(connection, group):
    """A one-member group, stable: (member id, generation)."""
    joined = join_as_member(connection, group)
    assert joined.leader == joined.member_id
    synced = sync(connection, group, joined.generation_id, joined.member_id,
                  [(joined.member_id, b"assignment")])
    assert synced.error_code == NONE and synced.assignment == b"assignment", synced
    return joined.member_id, joined.generation_id


def heartbeat(connection, group, generation, member_id):
    request = HeartbeatRequest(group_id=group, generation_id=generation, member_id=member_id,
                               group_instance_id=None)
    return connection.call(request, HeartbeatResponse, HEARTBEAT_VERSION).error_code


def commit(connection, group, generation, member_id, offsets, instance_id=None):
    """OffsetCommit of {(topic, partition): offset}: {(topic, partition): error code}."""
    topic_class = OffsetCommitRequest.OffsetCommitRequestTopic
    topics = {}
    for (topic, partition), offset in offsets.items():
        topics.setdefault(topic, []).append(topic_class.OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_leader_epoch=-1,
            committed_metadata=f"meta-{offset}"))
    request = OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
        group_instance_id=instance_id, retention_time_ms=-1,
        topics=[topic_class(name=name, partitions=partitions) for name, partitions in topics.items()])
    response = connection.call(request, OffsetCommitResponse, COMMIT_VERSION)
    return {(topic.name, partition.partition_index): partition.error_code
            for topic in response.topics for partition in topic.partitions}


def fetch(connection, group, partitions=None):
    """OffsetFetch of the given (topic, partition)s, or of everything committed (None):
    (group error code, {(topic, partition): offset})."""
    topics = None
    if partitions is not None:
        by_topic = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        topics = [OffsetFetchRequest.OffsetFetchRequestTopic(name=name, partition_indexes=indexes)
                  for name, indexes in by_topic.items()]
    request = OffsetFetchRequest(group_id=group, topics=topics, require_stable=False)
    response = connection.call(request, OffsetFetchResponse, FETCH_VERSION)
    return response.error_code, {(topic.name, partition.partition_index): partition.committed_offset
                                 for topic in response.topics for partition in topic.partitions}


def describe(connection, group):
    request = DescribeGroupsRequest(groups=[group], include_authorized_operations=False)
    [described] = connection.call(request, DescribeGroupsResponse, 5).groups
    return described


def listed_groups(connection):
    response = connection.call(ListGroupsRequest(states_filter=[]), ListGroupsResponse, 4)
    assert response.error_code == NONE, response
    return {group.group_id for group in response.groups}


def rss_bytes(broker):
    with open(f"/proc/{broker.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_healthy(broker, topic):
    """The broker is alive and a fresh, well-behaved group joins, syncs, heartbeats, commits
    and reads its commit back."""
    assert broker.proc.poll() is None, "the broker died"
    connection = RawConnection(broker)
    try:
        group = new_group("healthy")
        member_id, generation = stable_member(connection, group)
        assert heartbeat(connection, group, generation, member_id) == NONE
        assert commit(connection, group, generation, member_id, {(topic, 0): 42}) == {(topic, 0): NONE}
        assert fetch(connection, group, [(topic, 0)]) == (NONE, {(topic, 0): 42})
        assert describe(connection, group).group_state == "Stable"
    finally:
        connection.close()


@pytest.fixture
def topic(broker):
    name = f"bad-groups-{uuid.uuid4().hex[:6]}"
    create_topic(broker, name, 2)
    return name


def test_unknown_group(broker, topic):
    connection = RawConnection(broker)
    group = new_group("unknown")
    described = describe(connection, group)
    assert (described.error_code, described.group_state, described.members) == (NONE, "Dead", [])
    assert fetch(connection, group) == (NONE, {})
    assert fetch(connection, group, [(topic, 0), (topic, 1)]) == (NONE, {(topic, 0): -1, (topic, 1): -1})
    assert heartbeat(connection, group, 1, "nobody") == UNKNOWN_MEMBER_ID
    assert sync(connection, group, 1, "nobody").error_code == UNKNOWN_MEMBER_ID
    leave = LeaveGroupRequest(group_id=group, members=[
        LeaveGroupRequest.MemberIdentity(member_id="nobody", group_instance_id=None)])
    left = connection.call(leave, LeaveGroupResponse, LEAVE_VERSION)
    assert left.error_code == NONE and [m.error_code for m in left.members] == [UNKNOWN_MEMBER_ID]
    # A commit from a "member" of a group that does not exist is from an old generation.
    assert commit(connection, group, 1, "nobody", {(topic, 0): 5}) == {(topic, 0): ILLEGAL_GENERATION}
    deleted = connection.call(DeleteGroupsRequest(groups_names=[group]), DeleteGroupsResponse, 2)
    assert [result.error_code for result in deleted.results] == [GROUP_ID_NOT_FOUND]
    offset_topic = OffsetDeleteRequest.OffsetDeleteRequestTopic
    delete = OffsetDeleteRequest(group_id=group, topics=[offset_topic(
        name=topic, partitions=[offset_topic.OffsetDeleteRequestPartition(partition_index=0)])])
    assert connection.call(delete, OffsetDeleteResponse, 0).error_code == GROUP_ID_NOT_FOUND
    # None of that created the group.
    assert describe(connection, group).group_state == "Dead"
    assert group not in listed_groups(connection)
    connection.close()
    assert_healthy(broker, topic)


def test_oversized_metadata_and_protocol_lists(broker, topic):
    connection = RawConnection(broker)
    group = new_group("oversized")
    before = rss_bytes(broker)
    too_big = b"x" * (MEMBER_METADATA_BYTES_MAX + 1)
    for _ in range(20):
        assert join(connection, group, protocols=[("range", too_big)]).error_code == INVALID_REQUEST
    many = [(f"assignor-{index}", b"") for index in range(PROTOCOLS_PER_MEMBER_MAX + 1)]
    assert join(connection, group, protocols=many).error_code == INVALID_REQUEST
    assert join(connection, "g" * 1025).error_code == INVALID_GROUP_ID
    assert join(connection, group, member_id="m" * 1025).error_code == INVALID_REQUEST
    # Nothing was kept: no group, and 20 MiB of refused metadata did not stay in memory.
    assert describe(connection, group).group_state == "Dead"
    assert rss_bytes(broker) - before < 16 << 20

    # A leader's oversized assignment is refused too, and the group is unharmed.
    joined = join_as_member(connection, group)
    synced = sync(connection, group, joined.generation_id, joined.member_id,
                  [(joined.member_id, b"a" * (MEMBER_METADATA_BYTES_MAX + 1))])
    assert synced.error_code == INVALID_REQUEST
    synced = sync(connection, group, joined.generation_id, joined.member_id,
                  [(joined.member_id, b"small")])
    assert (synced.error_code, synced.assignment) == (NONE, b"small")
    connection.close()
    assert_healthy(broker, topic)


def test_commits_from_stale_generations_and_unknown_members(broker, topic):
    connection = RawConnection(broker)
    group = new_group("fenced")
    member_id, generation = stable_member(connection, group)
    assert commit(connection, group, generation, member_id, {(topic, 0): 7}) == {(topic, 0): NONE}
    for stale in (generation + 1, generation - 1):
        assert commit(connection, group, stale, member_id, {(topic, 0): 100}) == {
            (topic, 0): ILLEGAL_GENERATION}
        assert heartbeat(connection, group, stale, member_id) == ILLEGAL_GENERATION
    assert commit(connection, group, generation, "ghost", {(topic, 0): 100}) == {
        (topic, 0): UNKNOWN_MEMBER_ID}
    assert commit(connection, group, generation, member_id, {(topic, 0): 100},
                  instance_id="not-a-static-member") == {(topic, 0): UNKNOWN_MEMBER_ID}
    # A simple (generation -1) commit is for empty groups only.
    assert commit(connection, group, -1, "", {(topic, 0): 100}) == {(topic, 0): UNKNOWN_MEMBER_ID}
    assert heartbeat(connection, group, generation, "ghost") == UNKNOWN_MEMBER_ID

    # A second member makes a new generation: the old one's commits are refused.
    other = RawConnection(broker)
    first = join(other, group)
    assert first.error_code == MEMBER_ID_REQUIRED
    other.send(JoinGroupRequest(
        group_id=group, session_timeout_ms=SESSION_TIMEOUT_MIN_MS, rebalance_timeout_ms=5000,
        member_id=first.member_id, group_instance_id=None, protocol_type="consumer",
        protocols=[Protocol(name="range", metadata=b"subscription")]), JOIN_VERSION)
    deadline = time.time() + 10
    while heartbeat(connection, group, generation, member_id) != REBALANCE_IN_PROGRESS:
        assert time.time() < deadline, "the second member's join never started a rebalance"
        time.sleep(0.05)
    rejoined = join(connection, group, member_id=member_id)
    assert rejoined.error_code == NONE and rejoined.generation_id == generation + 1
    assert commit(connection, group, generation, member_id, {(topic, 0): 100}) == {
        (topic, 0): ILLEGAL_GENERATION}
    assert fetch(connection, group, [(topic, 0)]) == (NONE, {(topic, 0): 7}), \
        "no refused commit was applied"
    other.close()
    connection.close()
    assert_healthy(broker, topic)


def test_joins_with_inconsistent_protocols(broker, topic):
    connection = RawConnection(broker)
    group = new_group("protocols")
    member_id, generation = stable_member(connection, group)
    cases = [
        dict(protocols=[("roundrobin", b"")]),  # no protocol in common
        dict(protocol_type="connect"),  # another protocol type
        dict(protocols=[]),  # no protocol at all
        dict(protocol_type=""),
    ]
    for case in cases:
        assert join(connection, group, **case).error_code == INCONSISTENT_GROUP_PROTOCOL, case
    # SyncGroup v5 checks the protocol type and name against the group's.
    assert sync(connection, group, generation, member_id, protocol_type="connect").error_code == \
        INCONSISTENT_GROUP_PROTOCOL
    assert sync(connection, group, generation, member_id, protocol_name="sticky").error_code == \
        INCONSISTENT_GROUP_PROTOCOL
    # The group did not rebalance and still has its one member.
    described = describe(connection, group)
    assert described.group_state == "Stable"
    assert [member.member_id for member in described.members] == [member_id]
    assert heartbeat(connection, group, generation, member_id) == NONE
    connection.close()
    assert_healthy(broker, topic)


def test_invalid_session_timeouts(broker, topic):
    connection = RawConnection(broker)
    group = new_group("timeouts")
    for session_timeout_ms in (SESSION_TIMEOUT_MIN_MS - 1, SESSION_TIMEOUT_MAX_MS + 1, 0, -1):
        response = join(connection, group, session_timeout_ms=session_timeout_ms)
        assert response.error_code == INVALID_SESSION_TIMEOUT, session_timeout_ms
    assert describe(connection, group).group_state == "Dead"
    # The bounds themselves are accepted.
    for session_timeout_ms in (SESSION_TIMEOUT_MIN_MS, SESSION_TIMEOUT_MAX_MS):
        response = join(connection, group, session_timeout_ms=session_timeout_ms)
        assert response.error_code == MEMBER_ID_REQUIRED, session_timeout_ms
    connection.close()
    assert_healthy(broker, topic)


def test_flood_of_joins_is_bounded(broker, topic):
    """group.max.size caps one group (GROUP_MAX_SIZE_REACHED); thousands of groups that never
    finish joining cost little memory and are gone once their member ids expire."""
    connection = RawConnection(broker)
    existing = listed_groups(connection)
    before = rss_bytes(broker)
    crowded = new_group("crowded")
    for index in range(MEMBERS_PER_GROUP_MAX):
        assert join(connection, crowded).error_code == MEMBER_ID_REQUIRED, index
    assert join(connection, crowded).error_code == GROUP_MAX_SIZE_REACHED

    flood = [new_group("flood") for _ in range(3000)]
    for group in flood:
        assert join(connection, group).error_code == MEMBER_ID_REQUIRED
    assert set(flood) <= listed_groups(connection)
    grown = rss_bytes(broker) - before
    assert grown < 64 << 20, f"RSS grew {grown >> 20} MiB for 3000 groups"
    assert_healthy(broker, topic)

    # The member ids handed out expire after the session timeout; the groups go with them.
    deadline = time.time() + SESSION_TIMEOUT_MIN_MS / 1000 + 10
    while time.time() < deadline:
        remaining = listed_groups(connection) - existing
        if not any(group in remaining for group in flood + [crowded]):
            break
        time.sleep(0.5)
    remaining = listed_groups(connection) - existing
    assert crowded not in remaining and not set(flood) & remaining
    # A fresh member fits in the once-full group.
    assert join(connection, crowded).error_code == MEMBER_ID_REQUIRED
    connection.close()
    assert_healthy(broker, topic)
