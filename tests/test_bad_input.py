"""Bad input from raw sockets (struct-packed frames) against the real binary: each case gets a
Kafka error code, or a closed connection plus one log line, and afterwards kcat (librdkafka)
still produces and consumes on the same broker. Memory stays bounded under a flood of half-sent
requests, and a stalled half request is dropped after the request timeout without blocking
anyone else."""

import os
import resource
import socket
import struct
import subprocess
import time
import uuid

import pytest

API_PRODUCE, API_METADATA, API_API_VERSIONS = 0, 3, 18
UNSUPPORTED_VERSION, CORRUPT_MESSAGE = 35, 2


# ---- wire helpers -------------------------------------------------------------------------

def uvarint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(value):
    return uvarint((value << 1) ^ (value >> 63))


def header(api_key, version, correlation_id, flexible=False, client_id=b"bad-input"):
    out = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return out + (b"\x00" if flexible else b"")


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def compact_string(value):
    return uvarint(len(value) + 1) + value


def connect(broker, timeout=10):
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def recv_frame(sock):
    (length,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, length)


def closed_by_broker(sock, within=10.0):
    """True once the broker closes `sock` (EOF or reset), False if it stays open `within` s."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def log_lines_about(broker, sock_port, wait=5.0):
    """The broker log lines naming the client port `sock_port` (the `peer` field)."""
    needle = f"127.0.0.1:{sock_port}"
    deadline = time.time() + wait
    while True:
        lines = [line for line in broker.log().splitlines() if needle in line]
        if lines or time.time() > deadline:
            return lines
        time.sleep(0.05)


def crc32c(data, table=[]):
    if not table:
        for index in range(256):
            crc = index
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            table.append(crc)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def record_batch(values):
    """An uncompressed record batch v2 holding `values`, with a correct CRC."""
    now = int(time.time() * 1000)
    records = b""
    for delta, value in enumerate(values):
        body = (b"\x00" + varint(0) + varint(delta) + varint(-1)
                + varint(len(value)) + value + varint(0))
        records += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, now, now, -1, -1, -1,
                            len(values)) + records
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v9(topic, batch, correlation_id=7):
    body = (uvarint(0)                       # transactional_id: null
            + struct.pack(">hi", -1, 30000)  # acks, timeout_ms
            + uvarint(2) + compact_string(topic)
            + uvarint(2) + struct.pack(">i", 0) + uvarint(len(batch) + 1) + batch
            + b"\x00"                        # partition tags
            + b"\x00"                        # topic tags
            + b"\x00")                       # request tags
    return frame(header(API_PRODUCE, 9, correlation_id, flexible=True) + body)


def first_partition_result(response):
    """(correlation id, error code, base offset) of a Produce v9 response's first partition."""
    (correlation_id,) = struct.unpack_from(">i", response, 0)
    position = 5                              # correlation id + header tags (empty)
    position += 1                             # responses: one topic
    name_length = response[position] - 1      # compact string (short names: one-byte varint)
    position += 1 + name_length
    position += 1                             # partitions: one
    _index, error_code, base_offset = struct.unpack_from(">ihq", response, position)
    return correlation_id, error_code, base_offset


# ---- clients nobody here wrote ------------------------------------------------------------

def kcat(broker, *args, stdin=None):
    result = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=stdin,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def consume_all(broker, topic):
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%o:%s\n")
    return out.splitlines()


def assert_healthy(broker):
    """kcat produces and consumes a fresh topic: the broker is up and serving."""
    assert broker.proc.poll() is None, "the broker exited"
    topic = f"healthy-{uuid.uuid4().hex[:8]}"
    kcat(broker, "-P", "-t", topic, stdin="ping\npong\n")
    assert consume_all(broker, topic) == ["0:ping", "1:pong"]


def rss_and_size_kib(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmSize"].split()[0])


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- cases that close the connection --------------------------------------------------------

METADATA_V1_HEADER = header(API_METADATA, 1, 3)

CLOSING_CASES = {
    # length prefixes
    "negative-length": (struct.pack(">i", -1), "frame length -1"),
    "min-negative-length": (struct.pack(">i", -2**31), "frame length -2147483648"),
    "huge-length": (struct.pack(">i", 2**31 - 1), "frame length 2147483647"),
    # frames too short for a request header
    "empty-frame": (frame(b""), "too short"),
    "three-byte-frame": (frame(b"\x00\x03\x00"), "too short"),
    # API keys and versions
    "unknown-api-key": (frame(header(999, 0, 1)), "unsupported API key 999"),
    "negative-api-key": (frame(header(-1, 0, 1)), "unsupported API key -1"),
    "unserved-api-key": (frame(header(57, 0, 1)), "unsupported API key 57"),
    "unsupported-metadata-version": (frame(header(API_METADATA, 99, 1)),
                                     "unsupported version 99 of Metadata"),
    "produce-v2-record-format": (frame(header(API_PRODUCE, 2, 1)), "malformed Produce v2"),
    # truncated / malformed bodies inside a well-formed frame
    "client-id-past-frame-end": (frame(struct.pack(">hhih", API_METADATA, 1, 1, 500)),
                                 "malformed Metadata"),
    "topic-count-past-frame-end": (frame(METADATA_V1_HEADER + struct.pack(">i", 1_000_000)),
                                   "malformed Metadata"),
    "max-array-count": (frame(METADATA_V1_HEADER + struct.pack(">i", 2**31 - 1)),
                        "malformed Metadata"),
    "topic-name-past-frame-end": (frame(METADATA_V1_HEADER + struct.pack(">ih", 1, 3000) + b"ab"),
                                  "malformed Metadata"),
    "produce-cut-mid-body": (frame(produce_v9(b"t", record_batch([b"x"]))[4:40]),
                             "malformed Produce"),
    "flexible-varint-overflow": (frame(header(API_PRODUCE, 9, 1, flexible=True)
                                       + b"\xff" * 12), "malformed Produce"),
}


@pytest.mark.parametrize("case", sorted(CLOSING_CASES))
def test_bad_frame_closes_connection_with_one_log_line(broker, case):
    payload, logged = CLOSING_CASES[case]
    sock = connect(broker)
    port = sock.getsockname()[1]
    sock.sendall(payload)
    assert closed_by_broker(sock), f"{case}: connection left open"
    sock.close()
    lines = log_lines_about(broker, port)
    assert len(lines) == 1, lines
    assert logged in lines[0], lines[0]
    assert_healthy(broker)


def test_truncated_request_then_disconnect(broker):
    sock = connect(broker)
    port = sock.getsockname()[1]
    request = frame(METADATA_V1_HEADER + struct.pack(">i", -1))
    sock.sendall(request[:len(request) // 2])
    time.sleep(0.2)
    sock.close()
    lines = log_lines_about(broker, port)
    assert len(lines) == 1 and "closing connection" in lines[0], lines
    assert_healthy(broker)


def test_frame_over_the_limit_is_closed_without_reading_it(broker_factory):
    limit = 64 * 1024
    broker = broker_factory(shards=1, extra_args=["--socket-request-max-bytes", str(limit)])
    # At the limit: served (a Metadata v1 request padded with trailing bytes the decoder ignores).
    sock = connect(broker)
    at_limit = METADATA_V1_HEADER + struct.pack(">i", -1)
    sock.sendall(frame(at_limit + b"\x00" * (limit - len(at_limit))))
    (correlation_id,) = struct.unpack_from(">i", recv_frame(sock))
    assert correlation_id == 3
    sock.close()
    # One byte over: closed as soon as the length prefix arrives, before any body is sent.
    sock = connect(broker)
    port = sock.getsockname()[1]
    sock.sendall(struct.pack(">i", limit + 1))
    assert closed_by_broker(sock)
    sock.close()
    lines = log_lines_about(broker, port)
    assert len(lines) == 1 and f"frame length {limit + 1} outside 0..={limit}" in lines[0], lines
    assert_healthy(broker)


# ---- ApiVersions: answered, never closed ---------------------------------------------------

def parse_api_versions_v0(response):
    correlation_id, error_code, count = struct.unpack_from(">ihi", response, 0)
    table = {}
    for index in range(count):
        key, low, high = struct.unpack_from(">hhh", response, 10 + 6 * index)
        table[key] = (low, high)
    assert len(response) == 10 + 6 * count, "v0 body has nothing after the table"
    return correlation_id, error_code, table


def test_api_versions_of_unknown_version_gets_v0_error_35_and_the_table(broker):
    sock = connect(broker)
    for version in (99, 5, 32767, -1):
        sock.sendall(frame(header(API_API_VERSIONS, version, 4242 + version)))
        correlation_id, error_code, table = parse_api_versions_v0(recv_frame(sock))
        assert correlation_id == 4242 + version
        assert error_code == UNSUPPORTED_VERSION
        assert table[API_API_VERSIONS] == (0, 4)
        assert table[API_PRODUCE] == (0, 12)
        assert table[API_METADATA] == (0, 12)
    # The same connection then negotiates normally.
    sock.sendall(frame(header(API_API_VERSIONS, 0, 1)))
    correlation_id, error_code, table = parse_api_versions_v0(recv_frame(sock))
    assert (correlation_id, error_code) == (1, 0) and table[API_API_VERSIONS] == (0, 4)
    sock.close()
    assert_healthy(broker)


# ---- corrupt batches: CORRUPT_MESSAGE, nothing stored --------------------------------------

def test_corrupt_batch_gets_corrupt_message_and_nothing_is_stored(broker):
    topic = "corrupt-target"
    kcat(broker, "-P", "-t", topic, stdin="before\n")
    sock = connect(broker)
    good = record_batch([b"good"])
    sock.sendall(produce_v9(topic.encode(), good, correlation_id=11))
    assert first_partition_result(recv_frame(sock)) == (11, 0, 1)

    for flip in (17, 21, len(good) - 1):     # the CRC itself, the attributes, the last value byte
        corrupt = bytearray(record_batch([b"evil"]))
        corrupt[flip] ^= 0x01
        sock.sendall(produce_v9(topic.encode(), bytes(corrupt), correlation_id=12 + flip))
        correlation_id, error_code, base_offset = first_partition_result(recv_frame(sock))
        assert (correlation_id, error_code, base_offset) == (12 + flip, CORRUPT_MESSAGE, -1)

    # The connection stays usable and the log holds only the good records.
    sock.sendall(produce_v9(topic.encode(), record_batch([b"after"]), correlation_id=99))
    assert first_partition_result(recv_frame(sock)) == (99, 0, 2)
    sock.close()
    assert consume_all(broker, topic) == ["0:before", "1:good", "2:after"]
    assert_healthy(broker)


# ---- stalls, timeouts, floods --------------------------------------------------------------

def test_stalled_half_request_is_dropped_and_blocks_nobody(broker_factory):
    broker = broker_factory(shards=1, extra_args=["--request-timeout-ms", "1500"])
    stalled = connect(broker)
    port = stalled.getsockname()[1]
    request = frame(METADATA_V1_HEADER + struct.pack(">i", -1))
    stalled.sendall(request[:7])
    started = time.time()
    # The only shard keeps serving others while this request hangs half-sent.
    assert_healthy(broker)
    assert closed_by_broker(stalled, within=10)
    waited = time.time() - started
    assert 1.0 <= waited < 8, waited
    stalled.close()
    lines = log_lines_about(broker, port)
    assert len(lines) == 1
    assert f"request incomplete after 1500 ms: 7 of {len(request)} bytes" in lines[0]


def test_slow_drip_request_is_dropped_at_the_request_timeout(broker_factory):
    """Progress does not extend the deadline: one byte every 200 ms still times out."""
    broker = broker_factory(shards=1, extra_args=["--request-timeout-ms", "1000"])
    sock = connect(broker)
    request = frame(METADATA_V1_HEADER + struct.pack(">i", -1))
    started = time.time()
    closed = False
    for byte in request[:-1]:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.2)
    assert closed or closed_by_broker(sock, within=5)
    assert time.time() - started < 3.5
    sock.close()
    assert_healthy(broker)


def test_idle_connection_is_closed_after_connections_max_idle_ms(broker_factory):
    broker = broker_factory(shards=1, extra_args=["--connections-max-idle-ms", "1000"])
    sock = connect(broker)
    port = sock.getsockname()[1]
    # A served request first: the idle clock restarts after each request.
    sock.sendall(frame(header(API_API_VERSIONS, 0, 1)))
    assert parse_api_versions_v0(recv_frame(sock))[1] == 0
    started = time.time()
    assert closed_by_broker(sock, within=10)
    assert 0.8 <= time.time() - started < 8
    lines = log_lines_about(broker, port)
    assert len(lines) == 1 and "idle for 1000 ms" in lines[0], lines
    assert_healthy(broker)


def test_flood_of_half_sent_requests_keeps_memory_bounded(broker_factory):
    connections = 1000
    if raise_fd_limit(connections + 1000) < connections + 200:
        pytest.skip("cannot open enough file descriptors")
    broker = broker_factory(shards=2)
    assert_healthy(broker)
    rss_before, size_before = rss_and_size_kib(broker.proc.pid)
    # Each declares a frame at the 100 MiB limit and sends only its first ten bytes.
    half = struct.pack(">i", 100 * 1024 * 1024) + header(API_PRODUCE, 9, 1)[:10]
    flood = []
    try:
        for _ in range(connections):
            sock = connect(broker)
            sock.sendall(half)
            flood.append(sock)
        time.sleep(1.0)  # let the shards read what was sent
        assert_healthy(broker)
        rss_after, size_after = rss_and_size_kib(broker.proc.pid)
        rss_growth_mb = (rss_after - rss_before) / 1024
        size_growth_mb = (size_after - size_before) / 1024
        assert rss_growth_mb < 200, f"RSS grew {rss_growth_mb:.0f} MB"
        # Address space too: reserving each declared 100 MiB would add about 100 GB.
        assert size_growth_mb < 2000, f"address space grew {size_growth_mb:.0f} MB"
        # None of them was closed: they are within the limit and the request timeout.
        still_open = sum(not closed_by_broker(sock, within=0.001) for sock in flood[:50])
        assert still_open == 50
    finally:
        for sock in flood:
            sock.close()
    assert_healthy(broker)
    assert broker.proc.poll() is None
    print(f"flood of {connections}: RSS {rss_before} -> {rss_after} KiB, "
          f"VmSize {size_before} -> {size_after} KiB")


def test_client_that_never_reads_responses_is_dropped(broker_factory):
    """Pipelined requests whose responses are never read: once the socket buffers fill, the
    broker's write stalls, and after the request timeout it closes the connection."""
    broker = broker_factory(shards=1, extra_args=["--request-timeout-ms", "1000"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", broker.port))
    port = sock.getsockname()[1]
    sock.settimeout(20)
    requests = frame(header(API_API_VERSIONS, 0, 1)) * 1000
    started = time.time()
    dropped = False
    while time.time() - started < 30:
        try:
            sock.sendall(requests)
        except (BrokenPipeError, ConnectionResetError):
            dropped = True
            break
    assert dropped, "the broker kept a connection whose responses nobody reads"
    sock.close()
    lines = log_lines_about(broker, port)
    assert len(lines) == 1 and "write failed" in lines[0], lines
    assert_healthy(broker)
