"""Recovery checkpoints through the real broker: with `--log-flush-offset-checkpoint-interval-ms`
the shards record each partition's synced prefix, a kill -9 restart trusts it and checks only the
data written after it (the log says `mode=Checkpoint`), and every acknowledged record is back at
its offset."""

import re
import subprocess
import time

from confluent_kafka.admin import AdminClient, NewTopic

from client_helpers import consume_all, produce_ok, rdkafka_producer
from conftest import RUNNEL

TOPIC = "checkpointed"
PARTITIONS = 2


def produce_values(broker, prefix, count, **conf):
    producer = rdkafka_producer(broker, acks="all", linger_ms=2, **conf)
    records = [{"partition": index % PARTITIONS, "value": f"{prefix}-{index}".encode()}
               for index in range(count)]
    placed = produce_ok(producer, TOPIC, records)
    return {placement: record["value"] for placement, record in zip(placed, records)}


def stored(broker):
    messages = consume_all(broker, TOPIC, range(PARTITIONS))
    return {(partition, message.offset()): message.value()
            for partition, found in messages.items() for message in found}


def test_kill9_restart_recovers_from_the_checkpoint(broker_factory):
    broker = broker_factory(extra_args=["--log-flush-offset-checkpoint-interval-ms", "100"])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
        future.result(10)
    acked = produce_values(broker, "before", 2000, enable_idempotence=True)
    time.sleep(0.5)  # a few checkpoint passes
    acked.update(produce_values(broker, "after", 200))

    broker.restart(clean=False)
    recovered = [line for line in broker.log().splitlines()
                 if "recovered after an unclean shutdown" in line and f"{TOPIC}-" in line]
    assert len(recovered) == PARTITIONS, recovered
    assert all("mode=Checkpoint" in line for line in recovered), recovered
    trusted = [int(re.search(r"trusted_bytes=(\d+)", line).group(1)) for line in recovered]
    assert all(value > 0 for value in trusted), recovered
    assert stored(broker) == acked

    # Appends continue after the recovered end; a clean restart after that changes nothing.
    acked.update(produce_values(broker, "later", 100, enable_idempotence=True))
    broker.restart(clean=True)
    assert stored(broker) == acked


def test_a_zero_checkpoint_interval_is_refused(tmp_path):
    result = subprocess.run(
        [RUNNEL, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--log-flush-offset-checkpoint-interval-ms", "0"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--log-flush-offset-checkpoint-interval-ms" in result.stderr
