//! Metadata (3): brokers (just us), topics and partitions; auto-creates requested topics when
//! `auto.create.topics.enable` is on and the client allows it.

use super::str_bytes;
use crate::metadata::{validate_topic_name, TopicMeta};
use crate::shard::{Shard, TopicSpec};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, version: i16, request: MetadataRequest) -> MetadataResponse {
    let node_id = BrokerId(shard.config.node_id);
    let requested: Option<Vec<String>> = match request.topics {
        // v0: an empty list means all topics.
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(
            topics
                .into_iter()
                .filter_map(|topic| topic.name.map(|name| name.0.to_string()))
                .collect(),
        ),
        _ => None,
    };
    let allow_auto_create =
        shard.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    if let (Some(names), true) = (&requested, allow_auto_create) {
        auto_create(shard, names).await;
    }
    let snapshot = shard.metadata();
    let topics = match requested {
        None => snapshot
            .topics
            .values()
            .map(|topic| topic_response(topic, node_id))
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| match snapshot.topic(name) {
                Some(topic) => topic_response(topic, node_id),
                None => {
                    let error_code = if validate_topic_name(name).is_err() {
                        17
                    } else {
                        3
                    };
                    MetadataResponseTopic::default()
                        .with_error_code(error_code)
                        .with_name(Some(TopicName(str_bytes(name))))
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node_id)
            .with_host(str_bytes(&shard.config.advertised_host))
            .with_port(shard.config.advertised_port)])
        .with_cluster_id(Some(str_bytes(&snapshot.cluster_id)))
        .with_controller_id(node_id)
        .with_topics(topics)
}

async fn auto_create(shard: &Rc<Shard>, names: &[String]) {
    let snapshot = shard.metadata();
    let missing: Vec<TopicSpec> = names
        .iter()
        .filter(|name| snapshot.topic(name).is_none() && validate_topic_name(name).is_ok())
        .map(|name| TopicSpec {
            name: name.clone(),
            partitions: shard.config.default_partitions,
            configs: BTreeMap::new(),
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    for (spec, result) in missing
        .iter()
        .zip(shard.create_topics(missing.clone()).await)
    {
        match result {
            Ok(()) => tracing::info!(topic = %spec.name, "auto-created topic"),
            Err((36, _)) => {} // created concurrently
            Err((code, message)) => {
                tracing::warn!(topic = %spec.name, code, %message, "auto-creating a topic failed")
            }
        }
    }
}

fn topic_response(topic: &TopicMeta, leader: BrokerId) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(leader)
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![leader])
                .with_isr_nodes(vec![leader])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&topic.name))))
        .with_topic_id(topic.uuid())
        .with_is_internal(topic.internal)
        .with_partitions(partitions)
}
