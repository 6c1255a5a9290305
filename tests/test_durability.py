"""Durability: everything acknowledged with acks=all survives a clean restart, a kill -9, a
kill -9 in the middle of a stream of produces, and a restart with a different shard count, at
the same offsets with the same content; topics keep their ids and partition counts; and new
records continue right after the old ones."""

import time

from confluent_kafka import KafkaError, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from client_helpers import (consume_all, message_tuple, produce, produce_ok, rdkafka_producer,
                            stored_batches)

PARTITIONS = 4


def create_topics(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = [
        # Small segments: recovery must walk several sealed segments and the active one.
        NewTopic("rolling", PARTITIONS, 1, config={"segment.bytes": "8192"}),
        NewTopic("compressed", 2, 1),
        NewTopic("appendtime", 1, 1, config={"message.timestamp.type": "LogAppendTime"}),
    ]
    for future in admin.create_topics(topics).values():
        future.result(10)


def describe(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = ["rolling", "compressed", "appendtime"]
    described = admin.describe_topics(TopicCollection(names))
    return {name: (str(described[name].result(10).topic_id),
                   len(described[name].result(10).partitions)) for name in names}


def produce_round(broker, round_number, count=600):
    """Produces to every topic with acks=all; returns {topic: {(partition, offset): record}}."""
    acked = {}
    plain = rdkafka_producer(broker, acks="all", linger_ms=2, batch_num_messages=40)
    records = [{"key": f"key-{index % 17}".encode(),
                "value": (f"r{round_number}-{index}-" * (1 + index % 9)).encode(),
                "headers": [("round", str(round_number).encode())]} for index in range(count)]
    placed = produce_ok(plain, "rolling", records)
    acked["rolling"] = dict(zip(placed, records))
    squeezed = rdkafka_producer(broker, acks="all", compression_type="zstd", linger_ms=10)
    records = [{"key": f"c{index % 5}".encode(), "value": f"z{round_number}-{index}".encode() * 20}
               for index in range(count // 3)]
    acked["compressed"] = dict(zip(produce_ok(squeezed, "compressed", records), records))
    records = [{"value": f"a{round_number}-{index}".encode()} for index in range(20)]
    acked["appendtime"] = dict(zip(produce_ok(plain, "appendtime", records), records))
    return acked


def merge(into, acked):
    for topic, records in acked.items():
        overlap = set(into.setdefault(topic, {})) & set(records)
        assert not overlap, f"{topic}: offsets handed out twice: {sorted(overlap)[:5]}"
        into[topic].update(records)


def snapshot(broker):
    """Every stored record of every topic: {topic: {(partition, offset): message tuple}}."""
    partitions = {"rolling": PARTITIONS, "compressed": 2, "appendtime": 1}
    return {topic: {(message.partition(), message.offset()): message_tuple(message)
                    for messages in consume_all(broker, topic, range(count)).values()
                    for message in messages}
            for topic, count in partitions.items()}


def assert_all_there(stored, acked):
    for topic, records in acked.items():
        assert set(stored[topic]) == set(records), topic  # nothing lost, nothing extra
        for (partition, offset), record in records.items():
            _, _, key, value, headers, _ = stored[topic][(partition, offset)]
            assert (key, value) == (record.get("key"), record["value"]), (topic, offset)
            assert headers == record.get("headers"), (topic, offset)


def test_acked_records_survive_restarts_at_the_same_offsets(broker):
    create_topics(broker)
    topics_before = describe(broker)
    acked = {}
    merge(acked, produce_round(broker, 0))
    before = snapshot(broker)
    assert_all_there(before, acked)
    assert len(stored_batches(broker, "rolling", 0)) > 4  # several segments' worth

    broker.restart(clean=True)
    assert describe(broker) == topics_before
    after_clean = snapshot(broker)
    assert after_clean == before  # byte-identical records, timestamps included

    merge(acked, produce_round(broker, 1))
    broker.restart(clean=False)  # kill -9
    assert describe(broker) == topics_before
    after_kill = snapshot(broker)
    assert_all_there(after_kill, acked)
    assert {key: after_kill[topic][key] for topic in before for key in before[topic]} == {
        key: value for topic in before for key, value in before[topic].items()}

    # A different shard count moves partitions between shards; the data moves with them.
    broker.shards = 3
    broker.restart(clean=True)
    assert snapshot(broker) == after_kill
    merge(acked, produce_round(broker, 2))
    broker.shards = 1
    broker.restart(clean=False)
    assert_all_there(snapshot(broker), acked)


def test_kill_during_a_stream_of_acks_all_produces(broker):
    create_topics(broker)
    producer = rdkafka_producer(broker, acks="all", linger_ms=1, batch_num_messages=20,
                                message_timeout_ms=3000, retries=0)
    acked, failed, sent = {}, 0, 0

    def on_delivery(error, message):
        nonlocal failed
        if error is None:
            acked[(message.partition(), message.offset())] = message.value()
        else:
            failed += 1

    deadline = time.time() + 30
    while len(acked) < 2000 and time.time() < deadline:
        if sent - len(acked) - failed >= 400:  # keep a bounded window in flight
            producer.poll(0.005)
            continue
        producer.produce("rolling", key=f"k{sent % 13}".encode(),
                         value=f"stream-{sent}".encode(), on_delivery=on_delivery)
        sent += 1
        producer.poll(0)
    # Records are still in flight (queued, being written, being synced) when the broker dies.
    for extra in range(500):
        producer.produce("rolling", key=b"late", value=f"stream-{sent + extra}".encode(),
                         on_delivery=on_delivery)
    producer.poll(0)
    broker.kill()
    producer.flush(15)
    assert len(acked) >= 2000 and failed + len(acked) == sent + 500
    broker.start()

    stored = snapshot(broker)["rolling"]
    for key, value in acked.items():
        assert stored[key][3] == value, key
    # Offsets stay dense: whatever survived beyond the acknowledged records follows on.
    ends = {}
    for partition, offset in stored:
        ends[partition] = max(ends.get(partition, -1), offset)
    for partition, last in ends.items():
        assert {offset for where, offset in stored if where == partition} == set(range(last + 1))

    # New records continue right after the recovered end of each partition.
    reports = produce(rdkafka_producer(broker, acks="all"), "rolling",
                      [{"value": b"after", "partition": partition}
                       for partition in range(PARTITIONS)])
    assert [(error, partition, offset) for error, partition, offset, _ in reports] == [
        (None, partition, ends.get(partition, -1) + 1) for partition in range(PARTITIONS)]


def test_failed_produces_after_kill_are_not_acknowledged(broker):
    """The other side of the promise: with the broker gone, acks=all never reports success."""
    producer = rdkafka_producer(broker, acks="all", message_timeout_ms=1500, retries=0)
    produce_ok(producer, "gone", [{"value": b"before"}])
    broker.kill()
    [(error, _, _, _)] = produce(producer, "gone", [{"value": b"after"}], timeout=15)
    assert error is not None and error.code() in (KafkaError._MSG_TIMED_OUT,
                                                  KafkaError._TRANSPORT)
    broker.start()
    stored = consume_all(broker, "gone", [0])[0]
    assert [message.value() for message in stored] == [b"before"]
