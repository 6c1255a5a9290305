//! CreateTopics (19): validates names, partition counts, replication factor (1 or -1 on a single
//! node) and configs, then creates through the controller shard. `validate_only` checks without
//! creating.

use super::str_bytes;
use crate::configs;
use crate::metadata::{validate_topic_name, PARTITIONS_MAX};
use crate::shard::{Shard, TopicSpec};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

const INVALID_TOPIC: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;

/// `CreateTopicsResponse` config sources (the `DescribeConfigsResponse.ConfigSource` ids).
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Handles the request.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .map(|topic| topic.name.0.to_string())
        .filter(|name| !seen.insert(name.clone()))
        .collect();
    let snapshot = shard.metadata();
    let mut results: Vec<Result<TopicSpec, (i16, String)>> = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            if duplicates.contains(&name) {
                return Err((
                    INVALID_REQUEST,
                    format!("Create topics request contains topic '{name}' more than once"),
                ));
            }
            let spec = validate(shard, topic)?;
            if snapshot.topic(&spec.name).is_some() {
                return Err((
                    TOPIC_ALREADY_EXISTS,
                    format!("Topic '{name}' already exists."),
                ));
            }
            Ok(spec)
        })
        .collect();
    if !request.validate_only {
        let to_create: Vec<TopicSpec> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let mut outcomes = shard.create_topics(to_create).await.into_iter();
        for result in results.iter_mut().filter(|result| result.is_ok()) {
            if let Some(Err(error)) = outcomes.next() {
                *result = Err(error);
            }
        }
    }
    let snapshot = shard.metadata();
    let topics = request
        .topics
        .iter()
        .zip(results)
        .map(|(topic, result)| {
            let response = CreatableTopicResult::default().with_name(topic.name.clone());
            match result {
                Ok(spec) => {
                    let response = response
                        .with_num_partitions(spec.partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(topic_configs(shard, &spec.configs)));
                    match snapshot.topic(&spec.name) {
                        Some(meta) if version >= 7 => response.with_topic_id(meta.uuid()),
                        _ => response,
                    }
                }
                Err((code, message)) => response
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The topic's configs as Kafka answers them from v5: every topic config with its value and
/// where it comes from (clients such as kafka-python reject an unknown `config_source`).
fn topic_configs(
    shard: &Shard,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    configs::TOPIC_CONFIGS
        .iter()
        .map(|name| {
            let (value, source) = match overrides.get(*name) {
                Some(value) => (Some(value.clone()), SOURCE_TOPIC_CONFIG),
                None => (
                    configs::default_value(&shard.config.log_defaults, name),
                    SOURCE_DEFAULT_CONFIG,
                ),
            };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(name))
                .with_value(value.as_deref().map(str_bytes))
                .with_config_source(source)
        })
        .collect()
}

fn validate(shard: &Shard, topic: &CreatableTopic) -> Result<TopicSpec, (i16, String)> {
    let name = topic.name.0.to_string();
    validate_topic_name(&name).map_err(|message| (INVALID_TOPIC, message))?;
    if !topic.assignments.is_empty() {
        return Err((
            INVALID_REPLICA_ASSIGNMENT,
            "Manual replica assignment is not supported on a single-node broker".into(),
        ));
    }
    let partitions = match topic.num_partitions {
        -1 => shard.config.default_partitions,
        count => count,
    };
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err((
            INVALID_PARTITIONS,
            format!(
                "Number of partitions must be between 1 and {PARTITIONS_MAX}, got {partitions}"
            ),
        ));
    }
    if topic.replication_factor != -1 && topic.replication_factor != 1 {
        return Err((
            INVALID_REPLICATION_FACTOR,
            format!(
                "Replication factor {} is larger than the 1 available broker",
                topic.replication_factor
            ),
        ));
    }
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let config_name = config.name.to_string();
        let Some(value) = config.value.as_ref().map(|value| value.to_string()) else {
            return Err((
                INVALID_CONFIG,
                format!("Null value for configuration {config_name}"),
            ));
        };
        configs::validate(&config_name, &value).map_err(|message| (INVALID_CONFIG, message))?;
        configs.insert(config_name, value);
    }
    Ok(TopicSpec {
        name,
        partitions,
        configs,
    })
}
