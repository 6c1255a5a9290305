//! DescribeConfigs (32): topic configs (overrides and the broker defaults under them) and the
//! broker's own settings, with `config_source` and synonyms as Kafka reports them.
//!
//! Kafka's rules, followed here: a topic config's synonyms are the topic override (source
//! TOPIC_CONFIG) if any, then its broker config (`log.retention.bytes` for `retention.bytes`) as
//! set on the broker (STATIC_BROKER_CONFIG), then that broker config's built-in default
//! (DEFAULT_CONFIG); the entry's source is the first synonym's, or DEFAULT_CONFIG when there is
//! none. Where Kafka's default lives on a differently named synonym (`log.retention.hours` for
//! `retention.ms`) Kafka lists no default synonym, and neither do we. A broker default of ours
//! that differs from Kafka's (the flush policy) is shown as set on the broker.

use super::str_bytes;
use crate::configs;
use crate::metadata::validate_topic_name;
use crate::shard::Shard;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use std::collections::HashSet;
use std::rc::Rc;

/// `ConfigResource.Type` ids.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC: i16 = 17;
const INVALID_REQUEST: i16 = 42;

/// `DescribeConfigsResponse.ConfigSource` ids.
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// `DescribeConfigsResponse.ConfigType` ids.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// What Kafka says about one topic config.
struct TopicConfigInfo {
    name: &'static str,
    config_type: i8,
    /// The broker config that sets the topic default (Kafka's first synonym).
    broker_name: &'static str,
    /// The value a Kafka broker with no settings gives the topic config.
    kafka_value: &'static str,
    /// `broker_name`'s own built-in default, listed as the DEFAULT_CONFIG synonym.
    broker_default: Option<&'static str>,
    doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config this broker understands ([`configs::TOPIC_CONFIGS`]), in that order.
const TOPIC_CONFIG_INFO: &[TopicConfigInfo] = &[
    TopicConfigInfo {
        name: "cleanup.policy",
        config_type: TYPE_LIST,
        broker_name: "log.cleanup.policy",
        kafka_value: "delete",
        broker_default: Some("delete"),
        doc: "delete: remove old segments by time or size; compact: keep the latest record of each key.",
    },
    TopicConfigInfo {
        name: "retention.ms",
        config_type: TYPE_LONG,
        broker_name: "log.retention.ms",
        kafka_value: "604800000",
        broker_default: None,
        doc: "How long a segment is kept after its newest record; -1: forever.",
    },
    TopicConfigInfo {
        name: "retention.bytes",
        config_type: TYPE_LONG,
        broker_name: "log.retention.bytes",
        kafka_value: "-1",
        broker_default: Some("-1"),
        doc: "Largest size a partition may grow to before old segments are deleted; -1: no limit.",
    },
    TopicConfigInfo {
        name: "segment.bytes",
        config_type: TYPE_INT,
        broker_name: "log.segment.bytes",
        kafka_value: "1073741824",
        broker_default: Some("1073741824"),
        doc: "Size of a segment file.",
    },
    TopicConfigInfo {
        name: "segment.ms",
        config_type: TYPE_LONG,
        broker_name: "log.roll.ms",
        kafka_value: "604800000",
        broker_default: None,
        doc: "Age after which a segment is rolled even if not full.",
    },
    TopicConfigInfo {
        name: "max.message.bytes",
        config_type: TYPE_INT,
        broker_name: "message.max.bytes",
        kafka_value: "1048588",
        broker_default: Some("1048588"),
        doc: "Largest record batch accepted.",
    },
    TopicConfigInfo {
        name: "message.timestamp.type",
        config_type: TYPE_STRING,
        broker_name: "log.message.timestamp.type",
        kafka_value: "CreateTime",
        broker_default: Some("CreateTime"),
        doc: "CreateTime (the producer's) or LogAppendTime (the broker's).",
    },
    TopicConfigInfo {
        name: "min.insync.replicas",
        config_type: TYPE_INT,
        broker_name: "min.insync.replicas",
        kafka_value: "1",
        broker_default: Some("1"),
        doc: "Replicas that must acknowledge an acks=all write.",
    },
    TopicConfigInfo {
        name: "flush.messages",
        config_type: TYPE_LONG,
        broker_name: "log.flush.interval.messages",
        kafka_value: LONG_MAX,
        broker_default: Some(LONG_MAX),
        doc: "1: fsync before acknowledging; 9223372036854775807: leave it to flush.ms or segment rolls.",
    },
    TopicConfigInfo {
        name: "flush.ms",
        config_type: TYPE_LONG,
        broker_name: "log.flush.interval.ms",
        kafka_value: LONG_MAX,
        broker_default: None,
        doc: "0: fsync every group commit; N: fsync at most every N ms.",
    },
    TopicConfigInfo {
        name: "index.interval.bytes",
        config_type: TYPE_INT,
        broker_name: "log.index.interval.bytes",
        kafka_value: "4096",
        broker_default: Some("4096"),
        doc: "Bytes between offset index entries.",
    },
    TopicConfigInfo {
        name: "delete.retention.ms",
        config_type: TYPE_LONG,
        broker_name: "log.cleaner.delete.retention.ms",
        kafka_value: "86400000",
        broker_default: Some("86400000"),
        doc: "How long a tombstone stays in a compacted topic after the cleaner first passed over it.",
    },
    TopicConfigInfo {
        name: "min.cleanable.dirty.ratio",
        config_type: TYPE_DOUBLE,
        broker_name: "log.cleaner.min.cleanable.ratio",
        kafka_value: "0.5",
        broker_default: Some("0.5"),
        doc: "The share of a compacted log not yet cleaned at which the cleaner takes it up.",
    },
    TopicConfigInfo {
        name: "min.compaction.lag.ms",
        config_type: TYPE_LONG,
        broker_name: "log.cleaner.min.compaction.lag.ms",
        kafka_value: "0",
        broker_default: Some("0"),
        doc: "How old a record must be before the cleaner may remove it.",
    },
];

/// The config type of a topic config (for IncrementalAlterConfigs' list operations).
pub(crate) fn topic_config_type(name: &str) -> Option<i8> {
    TOPIC_CONFIG_INFO
        .iter()
        .find(|info| info.name == name)
        .map(|info| info.config_type)
}

/// Whether a topic config holds a list (APPEND / SUBTRACT apply).
pub(crate) fn is_list_config(name: &str) -> bool {
    topic_config_type(name) == Some(TYPE_LIST)
}

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let options = Options {
        synonyms: request.include_synonyms,
        documentation: request.include_documentation,
    };
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let result = match resource.resource_type {
                RESOURCE_TOPIC => describe_topic(shard, resource, options),
                RESOURCE_BROKER => describe_broker(shard, resource, options),
                other => Err((
                    INVALID_REQUEST,
                    format!("Unsupported resource type: {other}"),
                )),
            };
            let response = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match result {
                Ok(configs) => response.with_error_message(None).with_configs(configs),
                Err((code, message)) => response
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

#[derive(Clone, Copy)]
struct Options {
    synonyms: bool,
    documentation: bool,
}

type Described = Result<Vec<DescribeConfigsResourceResult>, (i16, String)>;

fn describe_topic(
    shard: &Shard,
    resource: &DescribeConfigsResource,
    options: Options,
) -> Described {
    let name = resource.resource_name.as_str();
    validate_topic_name(name).map_err(|message| (INVALID_TOPIC, message))?;
    let snapshot = shard.metadata();
    let Some(topic) = snapshot.topic(name) else {
        return Err((
            UNKNOWN_TOPIC_OR_PARTITION,
            format!("Topic '{name}' does not exist."),
        ));
    };
    let defaults = &shard.config.log_defaults;
    let wanted = Wanted::new(resource);
    Ok(TOPIC_CONFIG_INFO
        .iter()
        .filter(|info| wanted.contains(info.name))
        .map(|info| {
            let broker_value = configs::default_value(defaults, info.name);
            let mut synonyms = Vec::with_capacity(3);
            let override_value = topic.configs.get(info.name);
            if let Some(value) = override_value {
                synonyms.push(synonym(info.name, Some(value), SOURCE_TOPIC_CONFIG));
            }
            synonyms.extend(broker_synonyms(
                info.broker_name,
                broker_value.as_deref(),
                info.kafka_value,
                info.broker_default,
            ));
            let value = override_value.cloned().or(broker_value);
            entry(
                info.name,
                value.as_deref(),
                info.config_type,
                false,
                synonyms,
            )
            .with_documentation(options.documentation.then(|| str_bytes(info.doc)))
            .with_synonyms_if(options.synonyms)
        })
        .collect())
}

fn describe_broker(
    shard: &Shard,
    resource: &DescribeConfigsResource,
    options: Options,
) -> Described {
    let name = resource.resource_name.as_str();
    let node_id = shard.config.node_id;
    if name.is_empty() {
        // Cluster-wide dynamic defaults: this broker has none.
        return Ok(Vec::new());
    }
    match name.parse::<i32>() {
        Err(_) => {
            return Err((
                INVALID_REQUEST,
                format!("Broker id must be an integer, but it is: {name}"),
            ))
        }
        Ok(id) if id != node_id => {
            return Err((
                INVALID_REQUEST,
                format!(
                    "Unexpected broker id, expected {node_id} or empty string, but received {name}"
                ),
            ))
        }
        Ok(_) => {}
    }
    let config = &shard.config;
    let defaults = &config.log_defaults;
    let wanted = Wanted::new(resource);
    let mut entries = Vec::new();
    let mut add = |setting: BrokerSetting| {
        if wanted.contains(setting.name) {
            entries.push(setting.entry(options));
        }
    };
    let node = node_id.to_string();
    add(BrokerSetting::set("node.id", TYPE_INT, node.clone()));
    add(BrokerSetting::kafka("broker.id", TYPE_INT, node, "-1"));
    let listener = format!("PLAINTEXT://{}", config.listen);
    add(BrokerSetting::set("listeners", TYPE_STRING, listener));
    let advertised = format!(
        "PLAINTEXT://{}:{}",
        config.advertised_host, config.advertised_port
    );
    add(BrokerSetting::set(
        "advertised.listeners",
        TYPE_STRING,
        advertised,
    ));
    let data_dir = config.data_dir.display().to_string();
    add(BrokerSetting::set("log.dirs", TYPE_STRING, data_dir));
    let partitions = config.default_partitions.to_string();
    add(BrokerSetting::kafka(
        "num.partitions",
        TYPE_INT,
        partitions,
        "1",
    ));
    let replication = "1".to_string();
    add(BrokerSetting::kafka(
        "default.replication.factor",
        TYPE_INT,
        replication,
        "1",
    ));
    let auto_create = config.auto_create_topics.to_string();
    add(BrokerSetting::kafka(
        "auto.create.topics.enable",
        TYPE_BOOLEAN,
        auto_create,
        "true",
    ));
    let frame_max = config.frame_bytes_max.to_string();
    add(BrokerSetting::kafka(
        "socket.request.max.bytes",
        TYPE_INT,
        frame_max,
        "104857600",
    ));
    for info in TOPIC_CONFIG_INFO {
        add(BrokerSetting {
            name: info.broker_name,
            config_type: info.config_type,
            value: configs::default_value(defaults, info.name),
            kafka: Some((info.kafka_value, info.broker_default)),
        });
    }
    Ok(entries)
}

/// One broker config as DescribeConfigs shows it.
struct BrokerSetting {
    name: &'static str,
    config_type: i8,
    value: Option<String>,
    /// Kafka's value with no settings and its built-in default; `None`: no default (always
    /// set on the broker).
    kafka: Option<(&'static str, Option<&'static str>)>,
}

impl BrokerSetting {
    /// A setting Kafka has no default for.
    fn set(name: &'static str, config_type: i8, value: String) -> Self {
        BrokerSetting {
            name,
            config_type,
            value: Some(value),
            kafka: None,
        }
    }

    /// A setting with a Kafka default.
    fn kafka(name: &'static str, config_type: i8, value: String, default: &'static str) -> Self {
        BrokerSetting {
            name,
            config_type,
            value: Some(value),
            kafka: Some((default, Some(default))),
        }
    }

    fn entry(self, options: Options) -> DescribeConfigsResourceResult {
        let synonyms = match self.kafka {
            Some((kafka_value, default)) => {
                broker_synonyms(self.name, self.value.as_deref(), kafka_value, default)
            }
            None => vec![synonym(
                self.name,
                self.value.as_ref(),
                SOURCE_STATIC_BROKER_CONFIG,
            )],
        };
        // Read-only: this broker changes no broker config at run time.
        entry(
            self.name,
            self.value.as_deref(),
            self.config_type,
            true,
            synonyms,
        )
        .with_documentation(None)
        .with_synonyms_if(options.synonyms)
    }
}

/// The config names a resource asks for: all of them when its key list is null. A set, so a
/// request with a huge key list costs one pass over it.
struct Wanted<'a>(Option<HashSet<&'a str>>);

impl<'a> Wanted<'a> {
    fn new(resource: &'a DescribeConfigsResource) -> Self {
        Wanted(
            resource
                .configuration_keys
                .as_ref()
                .map(|keys| keys.iter().map(|key| key.as_str()).collect()),
        )
    }

    fn contains(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|keys| keys.contains(name))
    }
}

/// The broker-level synonyms of a config: as set on this broker when it differs from what
/// Kafka would use, then Kafka's built-in default of that broker config.
fn broker_synonyms(
    broker_name: &str,
    broker_value: Option<&str>,
    kafka_value: &str,
    broker_default: Option<&str>,
) -> Vec<DescribeConfigsSynonym> {
    let mut synonyms = Vec::with_capacity(2);
    if let Some(value) = broker_value.filter(|value| *value != kafka_value) {
        synonyms.push(synonym(
            broker_name,
            Some(&value),
            SOURCE_STATIC_BROKER_CONFIG,
        ));
    }
    if let Some(default) = broker_default {
        synonyms.push(synonym(broker_name, Some(&default), SOURCE_DEFAULT_CONFIG));
    }
    synonyms
}

fn synonym(name: &str, value: Option<&impl AsRef<str>>, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(value.map(|value| str_bytes(value.as_ref())))
        .with_source(source)
}

/// One config entry; its source is its first synonym's (DEFAULT_CONFIG when it has none).
fn entry(
    name: &str,
    value: Option<&str>,
    config_type: i8,
    read_only: bool,
    synonyms: Vec<DescribeConfigsSynonym>,
) -> DescribeConfigsResourceResult {
    let source = synonyms
        .first()
        .map_or(SOURCE_DEFAULT_CONFIG, |first| first.source);
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(value.map(str_bytes))
        .with_read_only(read_only)
        .with_config_source(source)
        .with_is_sensitive(false)
        .with_config_type(config_type)
        .with_synonyms(synonyms)
}

trait SynonymsIf {
    fn with_synonyms_if(self, include: bool) -> Self;
}

impl SynonymsIf for DescribeConfigsResourceResult {
    /// Synonyms go out only when the client asked for them (the source is computed either way).
    fn with_synonyms_if(self, include: bool) -> Self {
        if include {
            self
        } else {
            self.with_synonyms(Vec::new())
        }
    }
}

/// Keeps the table in step with the configs the broker validates.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_topic_config_is_described() {
        let described: Vec<&str> = TOPIC_CONFIG_INFO.iter().map(|info| info.name).collect();
        assert_eq!(described, configs::TOPIC_CONFIGS);
        for info in TOPIC_CONFIG_INFO {
            assert!(
                configs::validate(info.name, info.kafka_value).is_ok(),
                "{}",
                info.name
            );
        }
    }

    #[test]
    fn kafka_defaults_give_no_static_synonym() {
        let synonyms = broker_synonyms(
            "log.segment.bytes",
            Some("1073741824"),
            "1073741824",
            Some("1073741824"),
        );
        assert_eq!(synonyms.len(), 1);
        assert_eq!(synonyms[0].source, SOURCE_DEFAULT_CONFIG);
        let synonyms = broker_synonyms(
            "log.flush.interval.messages",
            Some("1"),
            LONG_MAX,
            Some(LONG_MAX),
        );
        assert_eq!(synonyms[0].source, SOURCE_STATIC_BROKER_CONFIG);
        assert_eq!(synonyms[0].value.as_deref(), Some("1"));
        assert_eq!(synonyms[1].source, SOURCE_DEFAULT_CONFIG);
        assert!(
            broker_synonyms("log.retention.ms", Some("604800000"), "604800000", None).is_empty()
        );
    }
}
