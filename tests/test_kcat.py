"""kcat (Debian's, linking librdkafka 2.0.2): metadata listing, produce, consume, keys."""

import subprocess


def kcat(broker, *args, stdin=None):
    result = subprocess.run(
        ["kcat", "-b", broker.bootstrap, *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_produce_consume_and_list(broker):
    kcat(broker, "-P", "-t", "kcat-plain", stdin="one\ntwo\nthree\n")
    out = kcat(broker, "-C", "-t", "kcat-plain", "-o", "beginning", "-e", "-f", "%o:%s\n")
    assert out.splitlines() == ["0:one", "1:two", "2:three"]
    listing = kcat(broker, "-L")
    assert 'topic "kcat-plain" with 1 partitions' in listing
    assert f"broker 1 at 127.0.0.1:{broker.port}" in listing


def test_keyed_and_compressed(broker):
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        topic = f"kcat-{codec}"
        kcat(broker, "-P", "-t", topic, "-K", ":", "-z", codec, stdin="k1:v1\nk2:v2\n")
        out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%o %k=%s\n")
        assert out.splitlines() == ["0 k1=v1", "1 k2=v2"], codec


def test_data_survives_clean_restart_and_kill(broker):
    kcat(broker, "-P", "-t", "durable", "-X", "acks=all", stdin="a\nb\n")
    broker.restart(clean=True)
    kcat(broker, "-P", "-t", "durable", "-X", "acks=all", stdin="c\n")
    broker.restart(clean=False)
    out = kcat(broker, "-C", "-t", "durable", "-o", "beginning", "-e", "-f", "%o:%s\n")
    assert out.splitlines() == ["0:a", "1:b", "2:c"]
