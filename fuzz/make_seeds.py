"""Builds the checked-in seed corpora in fuzz/seeds/ from real client traffic plus hand-made
hostile frames.

Starts the runnel binary on a free port behind a recording proxy (the broker advertises the
proxy's port, so every connection goes through it), drives kcat and the Python clients through
metadata, admin, produce (every codec) and fetch, and saves:
  seeds/decode_request/seed-<api>-v<version>-<hash>   each request frame body (no length prefix)
  seeds/frame_reader/seed-stream-<hash>               a connection's first bytes as sent, with
                                                      one leading 0 byte (no read-size schedule)
plus hand-made frames: negative and huge length prefixes, truncated and malformed requests.

Usage (from the repository root, after `cargo build -p runnel-bin --bin runnel`):
  .venv/bin/python fuzz/make_seeds.py [path/to/runnel]
"""

import hashlib
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEEDS = os.path.join(HERE, "seeds")
STREAM_BYTES_MAX = 64 * 1024
FRAME_BYTES_MAX = 64 * 1024


def save(target, name, data):
    folder = os.path.join(SEEDS, target)
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(folder, f"seed-{name}-{digest}"), "wb") as out:
        out.write(data)


class Recorder:
    """A TCP proxy that records what clients send."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frames = {}
        self.streams = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            connection = {"sent": bytearray(), "position": 0}
            with self.lock:
                self.streams.append(connection)
            threading.Thread(target=self.pump, args=(client, upstream, connection),
                             daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, None), daemon=True).start()

    def pump(self, source, sink, connection):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if connection is not None:
                    self.take_frames(connection, data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take_frames(self, connection, data):
        """Appends `data` to the connection's record and saves each request frame it completes."""
        sent = connection["sent"]
        sent += data
        while len(sent) - connection["position"] >= 4:
            start = connection["position"]
            (length,) = struct.unpack_from(">i", sent, start)
            if length < 0 or len(sent) - start - 4 < length:
                break
            body = bytes(sent[start + 4:start + 4 + length])
            connection["position"] = start + 4 + length
            if len(body) >= 4 and length <= FRAME_BYTES_MAX:
                api_key, version = struct.unpack_from(">hh", body)
                with self.lock:
                    self.frames[hashlib.sha1(body).digest()] = (api_key, version, body)


def run(*command, stdin=None):
    subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)


def drive_clients(bootstrap):
    kcat = ["kcat", "-b", bootstrap]
    run(*kcat, "-L")
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        run(*kcat, "-P", "-t", f"seed-{codec}", "-K", ":", "-z", codec, stdin="k1:v1\nk2:v2\n")
        run(*kcat, "-C", "-t", f"seed-{codec}", "-o", "beginning", "-e")
    run(*kcat, "-C", "-t", "seed-none", "-o", "s@0", "-e")

    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic("seed-admin", 3, 1)]).values():
        try:
            future.result(timeout=20)
        except Exception:  # noqa: BLE001 - seeds only; failures still produced frames
            pass
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                             "enable.idempotence": True, "linger.ms": 5})
        for index in range(20):
            producer.produce("seed-admin", key=f"k{index}", value=f"v{index}" * index,
                             headers=[("h", b"x")])
        producer.flush(20)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "seed",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("seed-admin", part, 0) for part in range(3)])
    consumer.consume(num_messages=100, timeout=3)
    consumer.offsets_for_times([TopicPartition("seed-admin", 0, 0)], timeout=5)
    consumer.close()
    for future in admin.delete_topics(["seed-admin"]).values():
        try:
            future.result(timeout=20)
        except Exception:  # noqa: BLE001
            pass

    import kafka
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
    for index in range(5):
        producer.send("seed-kafka-python", key=b"k", value=b"v" * index)
    producer.flush(20)
    producer.close()
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=2000)
    consumer.assign([kafka.TopicPartition("seed-kafka-python", 0)])
    consumer.seek_to_beginning()
    list(consumer)
    consumer.close()


def handmade():
    """Hostile frame bodies (for decode_request) and streams (for frame_reader)."""
    def header(api_key, version, flexible=False):
        out = struct.pack(">hhih", api_key, version, 9, 4) + b"seed"
        return out + (b"\x00" if flexible else b"")

    bodies = {
        "too-short": b"\x00\x03\x00",
        "unknown-key": header(999, 0),
        "api-versions-v99": header(18, 99),
        "metadata-count-huge": header(3, 1) + struct.pack(">i", 2**31 - 1),
        "metadata-count-negative": header(3, 1) + struct.pack(">i", -2),
        "metadata-name-past-end": header(3, 1) + struct.pack(">ih", 1, 3000) + b"ab",
        "client-id-past-end": struct.pack(">hhih", 3, 1, 1, 500),
        "produce-varint-overflow": header(0, 9, flexible=True) + b"\xff" * 12,
        "produce-compact-count-huge": header(0, 9, flexible=True)
        + b"\x00" + struct.pack(">hi", -1, 1000) + b"\xff\xff\xff\xff\x07",
    }
    for name, body in bodies.items():
        save("decode_request", name, body)
    streams = {
        "negative-length": struct.pack(">i", -1),
        "min-length": struct.pack(">i", -2**31),
        "huge-length": struct.pack(">i", 2**31 - 1),
        "limit-plus-one": struct.pack(">i", 100 * 1024 * 1024 + 1),
        "at-limit-then-stall": struct.pack(">i", 100 * 1024 * 1024) + b"\x00" * 10,
        "zero-length": struct.pack(">i", 0),
        "half-prefix": b"\x00\x00",
        "two-frames": struct.pack(">i", 3) + b"abc" + struct.pack(">i", 1) + b"z",
    }
    for name, stream in streams.items():
        save("frame_reader", name, b"\x00" + stream)
        save("frame_reader", name + "-chopped", b"\x03\x00\x02\x06" + stream)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/runnel")
    handmade()
    with tempfile.TemporaryDirectory() as data_dir:
        probe = socket.create_server(("127.0.0.1", 0))
        broker_port = probe.getsockname()[1]
        probe.close()
        recorder = Recorder(broker_port)
        broker = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{broker_port}", "--data-dir", data_dir,
             "--shards", "1", "--advertised-listener", f"127.0.0.1:{recorder.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = broker.stdout.readline()
            assert re.search(r"runnel ready", line), line
            drive_clients(f"127.0.0.1:{recorder.port}")
            time.sleep(0.5)
        finally:
            broker.terminate()
            broker.wait(timeout=60)
    with recorder.lock:
        frames = list(recorder.frames.values())
        streams = [bytes(conn["sent"][:STREAM_BYTES_MAX]) for conn in recorder.streams]
    for api_key, version, body in frames:
        save("decode_request", f"api{api_key}-v{version}", body)
    for stream in streams:
        if stream:
            save("frame_reader", "stream", b"\x00" + stream)
    print(f"{len(frames)} request frames, {len(streams)} connection streams recorded")


if __name__ == "__main__":
    main()
