"""`runnel serve --config FILE`: Kafka-style log defaults from a file; bad files refuse to start."""

import subprocess

from conftest import RUNNEL
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType


def test_file_defaults_apply_to_new_topics(tmp_path, broker_factory):
    config = tmp_path / "server.properties"
    config.write_text("# small limits\nmessage.max.bytes=2000\nlog.retention.hours=5\n")
    broker = broker_factory(extra_args=["--config", str(config)])
    small = subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", "limits"],
                           input="x" * 100 + "\n", capture_output=True, text=True, timeout=60)
    assert small.returncode == 0, small.stderr
    big = subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", "limits"],
                         input="y" * 5000 + "\n", capture_output=True, text=True, timeout=60)
    assert "too large" in big.stderr.lower(), big.stderr
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "limits")], config_filter="all")
        entries = described["topic"]["limits"]
        assert entries["retention.ms"]["value"] == str(5 * 3_600_000)
        assert entries["max.message.bytes"]["value"] == "2000"
    finally:
        admin.close()


def test_bad_config_file_refuses_to_start(tmp_path):
    config = tmp_path / "bad.properties"
    config.write_text("log.segment.bytes=1048576\nnum.partitions=3\n")
    result = subprocess.run(
        [RUNNEL, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
         "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "line 2" in result.stderr
