//! OffsetDelete (47): drops committed offsets of partitions the group no longer consumes.

use super::str_bytes;
use crate::group::{error_code, GroupError};
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
use std::rc::Rc;

/// Partitions one request may name.
const PARTITIONS_MAX: usize = 100_000;
const INVALID_REQUEST: i16 = 42;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic
                .partitions
                .iter()
                .map(move |partition| (name.clone(), partition.partition_index))
        })
        .take(PARTITIONS_MAX + 1)
        .collect();
    if partitions.len() > PARTITIONS_MAX {
        return OffsetDeleteResponse::default().with_error_code(INVALID_REQUEST);
    }
    let group_id = request.group_id.0.to_string();
    let key = group_id.clone();
    // Tombstones for the deleted offsets, durable before they go and the answer.
    let outcome = on_coordinator(shard, &key, move |shard| async move {
        shard.groups.delete_offsets(&group_id, &partitions).await
    })
    .await
    .unwrap_or(Err(GroupError::CoordinatorNotAvailable));
    let results = match outcome {
        Err(error) => return OffsetDeleteResponse::default().with_error_code(error.code()),
        Ok(results) => results,
    };
    let mut results = results.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            OffsetDeleteResponseTopic::default()
                .with_name(TopicName(str_bytes(&topic.name.0)))
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|partition| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(error_code(results.next().flatten()))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
