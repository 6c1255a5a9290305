"""Static membership (KIP-345, `group.instance.id`) with confluent-kafka (librdkafka) consumers:
a static member that restarts within its session timeout (librdkafka static members close
without a LeaveGroup) gets its partitions back without a rebalance of the other member, and
its previous incarnation's member id is fenced (FENCED_INSTANCE_ID)."""

import json
import time
import uuid

from kafka.protocol.admin.groups import DescribeGroupsRequest, DescribeGroupsResponse
from kafka.protocol.consumer.group import (
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse)

from client_helpers import RawConnection
from test_groups import create_topic, group_consumer, partitions_of, poll_until

FENCED_INSTANCE_ID = 82
SESSION_TIMEOUT_MS = 6000


class StaticMember:
    """A librdkafka consumer with a group.instance.id that records its rebalance callbacks and
    its statistics (rebalance count)."""

    def __init__(self, broker, group, instance_id, topic):
        self.events = []
        self.stats = {}
        self.consumer = group_consumer(broker, group, **{
            "group.instance.id": instance_id,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "partition.assignment.strategy": "range",
            "statistics.interval.ms": 200,
            "stats_cb": self._on_stats,
        })
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, _consumer, partitions):
        self.events.append(("assign", sorted(p.partition for p in partitions)))

    def _on_revoke(self, _consumer, partitions):
        self.events.append(("revoke", sorted(p.partition for p in partitions)))

    def _on_stats(self, text):
        self.stats = json.loads(text)

    def rebalances(self):
        return self.stats.get("cgrp", {}).get("rebalance_cnt")


def group_state(connection, group):
    request = DescribeGroupsRequest(groups=[group], include_authorized_operations=False)
    [described] = connection.call(request, DescribeGroupsResponse, 5).groups
    return described.group_state, sorted(member.member_id for member in described.members)


def test_static_member_restarts_without_a_rebalance_and_its_old_id_is_fenced(broker_factory):
    broker = broker_factory(extra_args=["--group-initial-rebalance-delay-ms", "0"])
    topic = f"static-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 4)
    group = f"static-{uuid.uuid4().hex[:6]}"
    connection = RawConnection(broker)

    a = StaticMember(broker, group, "instance-a", topic)
    poll_until([a.consumer], lambda: partitions_of(a.consumer) == [0, 1, 2, 3])
    b = StaticMember(broker, group, "instance-b", topic)
    poll_until([a.consumer, b.consumer],
               lambda: len(partitions_of(a.consumer)) == 2 and len(partitions_of(b.consumer)) == 2)
    a_partitions, b_partitions = partitions_of(a.consumer), partitions_of(b.consumer)
    assert sorted(a_partitions + b_partitions) == [0, 1, 2, 3]
    # Let a's stats catch up with the settled group, then remember where a stands.
    poll_until([a.consumer, b.consumer], lambda: a.rebalances() is not None)
    time.sleep(0.5)
    poll_until([a.consumer, b.consumer], lambda: True, timeout=1)
    a_events, a_rebalances = list(a.events), a.rebalances()
    state, members = group_state(connection, group)
    assert state == "Stable" and len(members) == 2
    old_b_id = b.consumer.memberid()
    assert old_b_id in members

    # b restarts: librdkafka's static member closes without LeaveGroup, and the new
    # incarnation joins with the same instance id well inside the session timeout.
    b.consumer.close()
    restarted_at = time.time()
    b2 = StaticMember(broker, group, "instance-b", topic)
    states = set()

    def b2_has_its_partitions():
        states.add(group_state(connection, group)[0])
        return partitions_of(b2.consumer) == b_partitions

    poll_until([a.consumer, b2.consumer], b2_has_its_partitions)
    assert time.time() - restarted_at < SESSION_TIMEOUT_MS / 1000
    # A little longer: a rebalance would show up in a's callbacks and counters by now.
    deadline = time.time() + 2
    while time.time() < deadline:
        a.consumer.poll(0.1)
        b2.consumer.poll(0.1)
        states.add(group_state(connection, group)[0])
    assert states == {"Stable"}, f"the group left Stable: {states}"
    assert a.events == a_events, "the other member was rebalanced"
    assert a.rebalances() == a_rebalances
    assert partitions_of(a.consumer) == a_partitions
    new_b_id = b2.consumer.memberid()
    assert new_b_id != old_b_id
    assert group_state(connection, group)[1] == sorted([a.consumer.memberid(), new_b_id])

    # The replaced incarnation's member id is fenced wherever it shows up.
    heartbeat = HeartbeatRequest(group_id=group, generation_id=1, member_id=old_b_id,
                                 group_instance_id="instance-b")
    assert connection.call(heartbeat, HeartbeatResponse, 3).error_code == FENCED_INSTANCE_ID
    join = JoinGroupRequest(
        group_id=group, session_timeout_ms=SESSION_TIMEOUT_MS, rebalance_timeout_ms=10_000,
        member_id=old_b_id, group_instance_id="instance-b", protocol_type="consumer",
        protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")])
    assert connection.call(join, JoinGroupResponse, 5).error_code == FENCED_INSTANCE_ID
    topic_class = OffsetCommitRequest.OffsetCommitRequestTopic
    commit = OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=1, member_id=old_b_id,
        group_instance_id="instance-b", retention_time_ms=-1,
        topics=[topic_class(name=topic, partitions=[topic_class.OffsetCommitRequestPartition(
            partition_index=b_partitions[0], committed_offset=1, committed_leader_epoch=-1,
            committed_metadata="")])])
    response = connection.call(commit, OffsetCommitResponse, 8)
    assert response.topics[0].partitions[0].error_code == FENCED_INSTANCE_ID
    # None of that disturbed the group.
    assert group_state(connection, group)[0] == "Stable"
    assert a.events == a_events

    a.consumer.close()
    b2.consumer.close()
    connection.close()
