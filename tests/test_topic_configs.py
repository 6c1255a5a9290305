"""Topic configs through the admin APIs of confluent-kafka (librdkafka) and kafka-python:
DescribeConfigs (sources and synonyms as Kafka reports them, broker resource too),
IncrementalAlterConfigs (SET / DELETE / APPEND / SUBTRACT), AlterConfigs (replace), validation
errors, validate_only; changes reach live logs on every shard and survive a restart."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic,
)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType

from client_helpers import consume_all, produce, produce_ok, rdkafka_producer

DEFAULT = ConfigSource.DEFAULT_CONFIG.value
STATIC_BROKER = ConfigSource.STATIC_BROKER_CONFIG.value
TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(client, name, partitions=1, config=None):
    futures = client.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    futures[name].result(30)


def describe(client, name):
    resource = ConfigResource("topic", name)
    return client.describe_configs([resource])[resource].result(30)


def incremental(client, name, *entries, validate_only=False):
    resource = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=operation)
        for key, value, operation in entries])
    return client.incremental_alter_configs(
        [resource], validate_only=validate_only)[resource].result(30)


def kafka_error(call):
    with pytest.raises(KafkaException) as raised:
        call()
    return raised.value.args[0]


def synonyms(entry):
    return [(synonym.name, synonym.value, synonym.source) for synonym in entry.synonyms.values()]


def test_describe_shows_defaults_and_overrides_like_kafka(broker):
    client = admin(broker)
    create_topic(client, "described", config={"retention.ms": "3600000"})
    configs = describe(client, "described")
    # An override: source TOPIC, the override first among the synonyms.
    retention = configs["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", TOPIC)
    assert synonyms(retention) == [("retention.ms", "3600000", TOPIC)]
    # A Kafka default: source DEFAULT, the broker config's built-in default as synonym.
    segment = configs["segment.bytes"]
    assert (segment.value, segment.source) == ("1073741824", DEFAULT)
    assert synonyms(segment) == [("log.segment.bytes", "1073741824", DEFAULT)]
    assert not segment.is_read_only and not segment.is_sensitive
    assert synonyms(configs["cleanup.policy"]) == [("log.cleanup.policy", "delete", DEFAULT)]
    assert configs["max.message.bytes"].value == "1048588"
    assert configs["flush.messages"].source == STATIC_BROKER
    missing = ConfigResource("topic", "no-such-topic")
    error = kafka_error(lambda: client.describe_configs([missing])[missing].result(30))
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_full_synonym_lists_through_kafka_python(broker):
    """librdkafka keys synonyms by name, so same-named ones collapse; kafka-python keeps the
    list as sent."""
    create_topic(admin(broker), "synonyms", config={"retention.ms": "3600000"})
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = kp.describe_configs(
            [KpConfigResource(ConfigResourceType.TOPIC, "synonyms")],
            include_synonyms=True, config_filter="all")
    finally:
        kp.close()
    configs = described["topic"]["synonyms"]

    def listed(name):
        entry = configs[name]
        return entry["value"], entry["config_source"], entry["config_type"], [
            (synonym["name"], synonym["value"], synonym["source"])
            for synonym in entry["synonyms"]]

    # Our flush default differs from Kafka's: shown as set on the broker, Kafka's under it.
    assert listed("flush.messages") == ("1", "STATIC_BROKER_CONFIG", "LONG", [
        ("log.flush.interval.messages", "1", "STATIC_BROKER_CONFIG"),
        ("log.flush.interval.messages", "9223372036854775807", "DEFAULT_CONFIG"),
    ])
    assert listed("retention.ms") == ("3600000", "DYNAMIC_TOPIC_CONFIG", "LONG", [
        ("retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG")])
    # Kafka's retention default sits on log.retention.hours, which it does not list.
    assert listed("segment.ms") == ("604800000", "DEFAULT_CONFIG", "LONG", [])
    assert listed("cleanup.policy")[2] == "LIST"


def test_describe_only_the_keys_asked_for(broker):
    create_topic(admin(broker), "filtered")
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = kp.describe_configs(
            [KpConfigResource(ConfigResourceType.TOPIC, "filtered",
                              configs={"retention.ms": None, "no.such.key": None})],
            config_filter="all")
    finally:
        kp.close()
    assert list(described["topic"]["filtered"]) == ["retention.ms"]


def test_describe_broker_resource(broker):
    client = admin(broker)
    resource = ConfigResource("broker", "1")
    configs = client.describe_configs([resource])[resource].result(30)
    assert configs["log.segment.bytes"].value == "1073741824"
    assert configs["log.retention.ms"].value == "604800000"
    assert configs["num.partitions"].value == "1"
    assert configs["log.flush.interval.messages"].source == STATIC_BROKER
    assert all(entry.is_read_only for entry in configs.values())


def test_incremental_alter_set_delete_append_subtract(broker):
    client = admin(broker)
    create_topic(client, "incremental")
    incremental(client, "incremental",
                ("retention.ms", "60000", AlterConfigOpType.SET),
                ("cleanup.policy", "compact", AlterConfigOpType.APPEND))
    configs = describe(client, "incremental")
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == ("60000", TOPIC)
    assert configs["cleanup.policy"].value == "delete,compact"
    incremental(client, "incremental", ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT))
    incremental(client, "incremental", ("retention.ms", None, AlterConfigOpType.DELETE))
    configs = describe(client, "incremental")
    assert configs["cleanup.policy"].value == "compact"
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == (
        "604800000", DEFAULT)
    # APPEND on a config that is not a list.
    error = kafka_error(lambda: incremental(
        client, "incremental", ("retention.ms", "5", AlterConfigOpType.APPEND)))
    assert error.code() == KafkaError.INVALID_CONFIG


@pytest.mark.parametrize("key, value", [
    ("retention.ms", "soon"),
    ("segment.bytes", "12"),
    ("cleanup.policy", "shred"),
    ("message.timestamp.type", "Yesterday"),
    ("no.such.config", "1"),
])
def test_invalid_configs_are_refused_with_a_message(broker, key, value):
    client = admin(broker)
    create_topic(client, "validated")
    error = kafka_error(lambda: incremental(
        client, "validated", (key, value, AlterConfigOpType.SET)))
    assert error.code() == KafkaError.INVALID_CONFIG
    assert key in error.str()
    assert key not in {name for name, entry in describe(client, "validated").items()
                       if entry.source == TOPIC}


def test_unknown_topic_validate_only_and_broker_alter(broker):
    client = admin(broker)
    create_topic(client, "checked")
    error = kafka_error(lambda: incremental(
        client, "never-created", ("retention.ms", "1000", AlterConfigOpType.SET)))
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    incremental(client, "checked", ("retention.ms", "1000", AlterConfigOpType.SET),
                validate_only=True)
    assert describe(client, "checked")["retention.ms"].source == DEFAULT
    resource = ConfigResource("broker", "1", incremental_configs=[ConfigEntry(
        "log.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    error = kafka_error(
        lambda: client.incremental_alter_configs([resource])[resource].result(30))
    assert error.code() == KafkaError.INVALID_REQUEST


def test_legacy_alter_configs_replaces_the_whole_set(broker):
    """AlterConfigs (33), as confluent-kafka's alter_configs sends it: configs left out return
    to the broker default."""
    client = admin(broker)
    create_topic(client, "replaced", config={"retention.ms": "1000", "segment.bytes": "1048576"})
    resource = ConfigResource("topic", "replaced", set_config={"max.message.bytes": "2000000"})
    client.alter_configs([resource])[resource].result(30)
    configs = describe(client, "replaced")
    overridden = {name: entry.value for name, entry in configs.items() if entry.source == TOPIC}
    assert overridden == {"max.message.bytes": "2000000"}
    bad = ConfigResource("topic", "replaced", set_config={"segment.bytes": "-5"})
    error = kafka_error(lambda: client.alter_configs([bad])[bad].result(30))
    assert error.code() == KafkaError.INVALID_CONFIG
    assert describe(client, "replaced")["max.message.bytes"].value == "2000000"


def test_changes_apply_to_live_logs_on_every_shard_and_persist(broker):
    client = admin(broker)
    create_topic(client, "live", partitions=4)
    producer = rdkafka_producer(broker)
    big = {"value": b"x" * 3000}
    produce_ok(producer, "live", [dict(big, partition=p) for p in range(4)])
    incremental(client, "live", ("max.message.bytes", "1000", AlterConfigOpType.SET),
                ("message.timestamp.type", "LogAppendTime", AlterConfigOpType.SET))

    def refused_everywhere():
        reports = produce(producer, "live", [dict(big, partition=p) for p in range(4)])
        return [report[0].code() if report[0] else None for report in reports]

    assert refused_everywhere() == [KafkaError.MSG_SIZE_TOO_LARGE] * 4
    old = 1_000_000_000_000  # 2001: a CreateTime the broker must replace
    produce_ok(producer, "live", [{"value": b"small", "partition": p, "timestamp": old}
                                  for p in range(4)])
    broker.restart(clean=True)
    configs = describe(admin(broker), "live")
    assert configs["max.message.bytes"].value == "1000"
    producer = rdkafka_producer(broker)
    assert refused_everywhere() == [KafkaError.MSG_SIZE_TOO_LARGE] * 4
    for messages in consume_all(broker, "live", range(4)).values():
        last = messages[-1]
        assert last.value() == b"small"
        assert last.timestamp()[1] > old  # broker time (LogAppendTime)
    incremental(admin(broker), "live", ("max.message.bytes", None, AlterConfigOpType.DELETE))
    produce_ok(producer, "live", [dict(big, partition=p) for p in range(4)])
