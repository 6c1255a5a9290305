"""Idempotent producer (confluent-kafka / librdkafka, enable.idempotence=True): batches the client
retries because it never saw the answer are stored once. Read back, every message is there
exactly once and in order, and each delivery report names the offset the record really has.

Two ways to lose answers: a proxy that forwards requests but swallows responses for a moment and
then cuts every connection (the broker appended what the client retries), and kill -9 of the
broker mid-stream followed by a restart on the same data (the retries meet the producer state
rebuilt from disk)."""

import socket
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

MESSAGES = 4000


class SwallowingProxy:
    """TCP proxy to the broker. `swallow_then_cut(seconds)` keeps forwarding requests but drops
    every response for `seconds`, then closes all connections, so the client retries requests
    the broker has already handled."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.upstream_port = None
        self.swallowing = threading.Event()
        self.lock = threading.Lock()
        self.connections = []
        self.swallowed_bytes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source, target, responses):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if responses and self.swallowing.is_set():
                    with self.lock:
                        self.swallowed_bytes += len(data)
                    continue
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def swallow_then_cut(self, seconds):
        self.swallowing.set()
        time.sleep(seconds)
        with self.lock:
            connections, self.connections = self.connections, []
        for pair in connections:
            for end in pair:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
        self.swallowing.clear()

    def close(self):
        self.listener.close()
        self.swallow_then_cut(0)


def idempotent_producer(bootstrap):
    return Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "batch.num.messages": 20,  # many small batches: several in flight at any moment
        "message.timeout.ms": 120000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    })


def produce_paced(producer, topic, reports, seconds):
    """Produces MESSAGES values "0".."MESSAGES-1" to partition 0 over about `seconds`,
    recording (error, offset) per message from the delivery reports."""

    def report_into(index):
        def on_delivery(error, message):
            reports[index] = (error, message.offset())
        return on_delivery

    pause = seconds / (MESSAGES / 20)
    for index in range(MESSAGES):
        while True:
            try:
                producer.produce(topic, value=str(index).encode(), partition=0,
                                 on_delivery=report_into(index))
                break
            except BufferError:
                producer.poll(0.05)
        if index % 20 == 19:
            producer.poll(0)
            time.sleep(pause)


def read_back(bootstrap, topic, timeout=60):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "idempotence-read-back",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
    })
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records = []
    deadline = time.time() + timeout
    try:
        while len(records) < MESSAGES + 50 and time.time() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if len(records) >= MESSAGES:
                    break  # nothing more arrives: any duplicates would have by now
                continue
            assert message.error() is None, message.error()
            records.append((message.offset(), message.value().decode()))
    finally:
        consumer.close()
    return records


def check_exactly_once_in_order(reports, records):
    errors = [report for report in reports if report is None or report[0] is not None]
    assert not errors, f"{len(errors)} messages not delivered, e.g. {errors[:3]}"
    values = [value for _, value in records]
    assert values == [str(index) for index in range(MESSAGES)], (
        f"read back {len(values)} records; first differences: "
        f"{[(i, v) for i, v in enumerate(values) if v != str(i)][:5]}")
    assert [offset for _, offset in reports] == [offset for offset, _ in records], \
        "delivery reports name the offsets the records have"


def test_retries_of_answered_batches_are_stored_once(broker_factory):
    proxy = SwallowingProxy()
    broker = broker_factory(extra_args=["--advertised-listener", f"127.0.0.1:{proxy.port}"])
    proxy.upstream_port = broker.port
    bootstrap = f"127.0.0.1:{proxy.port}"
    topic = "idempotence-proxy"
    producer = idempotent_producer(bootstrap)
    reports = [None] * MESSAGES
    worker = threading.Thread(target=produce_paced, args=(producer, topic, reports, 4.0))
    worker.start()
    try:
        for _ in range(3):
            time.sleep(0.8)
            proxy.swallow_then_cut(0.4)
        worker.join()
        assert producer.flush(90) == 0, "every message delivered"
    finally:
        worker.join()
    assert proxy.swallowed_bytes > 0, "some answers were lost"
    check_exactly_once_in_order(reports, read_back(bootstrap, topic))
    proxy.close()


def test_kill_9_mid_stream_then_restart(broker_factory):
    """The broker is killed while answers are being lost, so the retries of batches it made
    durable meet the producer state it rebuilt from disk after the restart."""
    proxy = SwallowingProxy()
    broker = broker_factory(extra_args=["--advertised-listener", f"127.0.0.1:{proxy.port}"])
    proxy.upstream_port = broker.port
    bootstrap = f"127.0.0.1:{proxy.port}"
    topic = "idempotence-kill"
    producer = idempotent_producer(bootstrap)
    reports = [None] * MESSAGES
    worker = threading.Thread(target=produce_paced, args=(producer, topic, reports, 4.0))
    worker.start()
    try:
        time.sleep(1.5)
        delivered_before = sum(report is not None for report in reports)
        proxy.swallowing.set()
        time.sleep(0.3)
        broker.restart(clean=False)  # kill -9, then start on the same port and data
        proxy.swallow_then_cut(0)
        worker.join()
        assert producer.flush(90) == 0, "every message delivered"
    finally:
        worker.join()
    assert 0 < delivered_before < MESSAGES, "the kill came mid-stream"
    assert proxy.swallowed_bytes > 0, "some answers were lost"
    check_exactly_once_in_order(reports, read_back(bootstrap, topic))
    # And once more after a clean restart: the state came back from the snapshot.
    broker.restart(clean=True)
    check_exactly_once_in_order(reports, read_back(bootstrap, topic))
    proxy.close()
