"""Consumer groups with each assignor librdkafka ships (range, roundrobin, cooperative-sticky):
partitions shared among members, an idle member when there are more members than partitions,
an immediate rebalance when a member leaves cleanly, and reassignment within the session timeout
when a member dies without a word (a consumer process killed with SIGKILL). Cooperative-sticky
rebalances move only the partitions that change owner: survivors keep theirs."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from kafka.admin import KafkaAdminClient

from client_helpers import (GroupMember, new_names, poll_for, poll_members, produce_ok,
                            rdkafka_producer)
from test_groups import create_topic

STRATEGIES = ["range", "roundrobin", "cooperative-sticky"]
PARTITIONS = 4
SESSION_TIMEOUT_MS = 6000  # the broker's group.min.session.timeout.ms


def produce_to_every_partition(broker, topic, count):
    """`count` keyed records spread over all partitions; their (partition, offset)s."""
    producer = rdkafka_producer(broker)
    return produce_ok(producer, topic, [
        {"key": f"key-{index}".encode(), "value": f"value-{index}".encode(),
         "partition": index % PARTITIONS} for index in range(count)])


def assert_exactly_once(members, produced):
    consumed = [where for member in members for where in member.consumed()]
    assert sorted(consumed) == sorted(produced), "records consumed twice or skipped"


def assert_each_member_read_only_its_partitions(members):
    for member in members:
        assert {partition for partition, _ in member.consumed()} <= set(member.owned())


def describe_group(broker, group):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        return admin.describe_groups([group])[group]
    finally:
        admin.close()


def assignments_held(described):
    """{client id: partitions} from DescribeGroups: the assignments the coordinator holds."""
    return {member["client_id"]: sorted(
        partition for topic in (member["member_assignment"] or {}).get("assigned_partitions", [])
        for partition in topic["partitions"]) for member in described["members"]}


def increments(events):
    """The partitions a member's assign (or revoke) callbacks were given, in order, leaving out
    the empty calls librdkafka makes for rebalances that did not concern it."""
    return [partitions for partitions in events if partitions]


def settle(members, sizes, timeout=30):
    """Polls until the members own `sizes` partitions (in member order) covering the topic."""
    def done():
        owned = [member.owned() for member in members]
        covered = sorted(partition for partitions in owned for partition in partitions)
        return [len(partitions) for partitions in owned] == sizes and \
            covered == list(range(PARTITIONS))
    poll_members(members, done, timeout=timeout)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_members_get_two_partitions_each(broker, strategy):
    topic, group = new_names("split")
    create_topic(broker, topic, PARTITIONS)
    members = [GroupMember(broker, group, topic, strategy) for _ in range(2)]
    try:
        settle(members, [2, 2])
        described = describe_group(broker, group)
        assert (described["group_state"], described["protocol_data"]) == ("Stable", strategy)
        produced = produce_to_every_partition(broker, topic, 40)
        poll_members(members, lambda: sum(len(m.messages) for m in members) >= len(produced))
        poll_for(members, 1.0)
        assert_exactly_once(members, produced)
        assert_each_member_read_only_its_partitions(members)
        assert all(member.messages for member in members)
    finally:
        for member in members:
            member.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_five_members_on_four_partitions_leave_one_idle(broker, strategy):
    topic, group = new_names("idle")
    create_topic(broker, topic, PARTITIONS)
    members = [GroupMember(broker, group, topic, strategy, **{"client.id": f"member-{index}"})
               for index in range(5)]
    try:
        poll_members(members, lambda: sorted(len(m.owned()) for m in members) == [0, 1, 1, 1, 1]
                     and sorted(p for m in members for p in m.owned()) == list(range(PARTITIONS)))
        # The idle member is in the group (it was given an empty assignment), not still joining.
        described = describe_group(broker, group)
        assert (described["group_state"], described["protocol_data"]) == ("Stable", strategy)
        # The coordinator holds what each member was given: four one-partition assignments and
        # one empty one (the idle member is in the group, not still joining).
        assert assignments_held(described) == {
            f"member-{index}": members[index].owned() for index in range(5)}
        idle = [member for member in members if not member.owned()]
        assert len(idle) == 1 and idle[0].assigned  # its assign callback ran, with nothing

        produced = produce_to_every_partition(broker, topic, 20)
        poll_members(members, lambda: sum(len(m.messages) for m in members) >= len(produced))
        poll_for(members, 1.0)
        assert_exactly_once(members, produced)
        assert idle[0].messages == []
        assert_each_member_read_only_its_partitions(members)
    finally:
        for member in members:
            member.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_clean_leave_rebalances_at_once(broker, strategy):
    """A LeaveGroup moves the leaver's partitions right away; with a 30 s session timeout a
    survivor that took over within 10 s cannot have waited for the leaver's session to end."""
    session_timeout_ms = 30000
    topic, group = new_names("leave")
    create_topic(broker, topic, PARTITIONS)
    survivor, leaver = [GroupMember(broker, group, topic, strategy,
                                    **{"session.timeout.ms": session_timeout_ms})
                        for _ in range(2)]
    try:
        settle([survivor, leaver], [2, 2])
        kept, moved = survivor.owned(), leaver.owned()
        assigned_before, revoked_before = len(survivor.assigned), len(survivor.revoked)

        leaver.close()
        started = time.time()
        poll_members([survivor], lambda: survivor.owned() == list(range(PARTITIONS)), timeout=25)
        assert time.time() - started < 10, "the rebalance waited for the session timeout"

        if strategy == "cooperative-sticky":
            # Incremental: the survivor is only given what it did not have, and gives up nothing.
            assert increments(survivor.assigned[assigned_before:]) == [moved]
            assert increments(survivor.revoked[revoked_before:]) == []
        else:
            # Eager: everything is revoked, then the whole new assignment is given.
            assert survivor.revoked[revoked_before:] == [kept]
            assert survivor.assigned[-1] == list(range(PARTITIONS))
    finally:
        survivor.close()


# A group member in its own process, so the test can kill it without a LeaveGroup. It prints its
# assignment as a JSON line whenever the assignment changes.
MEMBER_SCRIPT = r"""
import json, sys
from confluent_kafka import Consumer
bootstrap, group, topic, strategy, session_timeout_ms = sys.argv[1:6]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "partition.assignment.strategy": strategy,
                     "session.timeout.ms": int(session_timeout_ms),
                     "heartbeat.interval.ms": 500, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest"})
consumer.subscribe([topic])
owned = None
while True:
    consumer.poll(0.1)
    now = sorted(tp.partition for tp in consumer.assignment())
    if now != owned:
        owned = now
        print(json.dumps(owned), flush=True)
"""


class MemberProcess:
    def __init__(self, broker, group, topic, strategy):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MEMBER_SCRIPT, broker.bootstrap, group, topic, strategy,
             str(SESSION_TIMEOUT_MS)],
            stdout=subprocess.PIPE, text=True)
        self.owned = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.owned = json.loads(line)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.kill()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_killed_member_partitions_move_within_its_session_timeout(broker, strategy):
    topic, group = new_names("killed")
    create_topic(broker, topic, PARTITIONS)
    survivor = GroupMember(broker, group, topic, strategy)
    victim = MemberProcess(broker, group, topic, strategy)
    try:
        poll_members([survivor], lambda: len(survivor.owned()) == 2 and len(victim.owned) == 2
                     and sorted(survivor.owned() + victim.owned) == list(range(PARTITIONS)))
        kept = survivor.owned()
        assigned_before, revoked_before = len(survivor.assigned), len(survivor.revoked)
        # Stable: nothing moves while the victim is alive.
        poll_for([survivor], 1.0)
        assert survivor.owned() == kept

        victim.kill()
        killed_at = time.time()
        poll_members([survivor], lambda: survivor.owned() == list(range(PARTITIONS)),
                     timeout=SESSION_TIMEOUT_MS / 1000 + 15)
        waited = time.time() - killed_at
        # The dead member gave no notice: the broker noticed only when its session ran out
        # (its last heartbeat was at most heartbeat.interval.ms before the kill), and then the
        # survivor rejoined at its next heartbeat. Generous bounds; no tight timing.
        assert waited >= SESSION_TIMEOUT_MS / 1000 - 2, f"moved after {waited:.1f}s"
        assert waited <= SESSION_TIMEOUT_MS / 1000 + 10, f"moved after {waited:.1f}s"

        if strategy == "cooperative-sticky":
            assert increments(survivor.revoked[revoked_before:]) == []
            assert increments(survivor.assigned[assigned_before:]) == [
                sorted(set(range(PARTITIONS)) - set(kept))]

        # The survivor reads every partition now, including the dead member's.
        produced = produce_to_every_partition(broker, topic, 8)
        poll_members([survivor], lambda: len(survivor.messages) >= len(produced))
        assert sorted(survivor.consumed()) == sorted(produced)
    finally:
        victim.stop()
        survivor.close()


def test_cooperative_sticky_moves_only_what_changes_owner(broker):
    """A joins alone and gets everything; B joins: A gives up exactly two partitions (and is
    not handed back the two it keeps), B is given those two; a third member C then takes one
    partition from each without anyone else losing more."""
    topic, group = new_names("sticky")
    create_topic(broker, topic, PARTITIONS)
    first = GroupMember(broker, group, topic, "cooperative-sticky")
    members = [first]
    try:
        settle(members, [4])
        assert first.assigned == [list(range(PARTITIONS))]

        second = GroupMember(broker, group, topic, "cooperative-sticky")
        members.append(second)
        settle(members, [2, 2])
        kept = first.owned()
        assert increments(first.assigned) == [list(range(PARTITIONS))], "A was re-given some"
        assert increments(first.revoked) == [second.owned()] and len(kept) == 2
        # B is given exactly the two A gave up, once.
        assert increments(second.assigned) == [second.owned()]
        assert increments(second.revoked) == []
        revoked = second.owned()

        third = GroupMember(broker, group, topic, "cooperative-sticky")
        members.append(third)
        poll_members(members, lambda: sorted(len(m.owned()) for m in members) == [1, 1, 2]
                     and sorted(p for m in members for p in m.owned()) == list(range(PARTITIONS)))
        for member, before in ((first, kept), (second, sorted(revoked))):
            # Whoever lost a partition lost only that one; what it still owns it always had.
            assert set(member.owned()) <= set(before)
        assert increments(third.revoked) == []
        assert increments(third.assigned) == [third.owned()] and len(third.owned()) == 1
        # Nobody was handed a partition it already had.
        for member in members:
            given = [p for ps in member.assigned for p in ps]
            assert len(given) == len(set(given))

        # Everything produced now is read once, each record by its partition's owner.
        produced = produce_to_every_partition(broker, topic, 24)
        poll_members(members, lambda: sum(len(m.messages) for m in members) >= len(produced))
        poll_for(members, 1.0)
        assert_exactly_once(members, produced)
        assert_each_member_read_only_its_partitions(members)
    finally:
        for member in members:
            member.close()

