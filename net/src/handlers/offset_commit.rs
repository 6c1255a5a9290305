//! OffsetCommit (8): commits go to the group's coordinator shard, which fences them by
//! generation and member. Partitions of topics that do not exist get UNKNOWN_TOPIC_OR_PARTITION.
//! Accepted commits are written to `__consumer_offsets` and become visible (and are answered)
//! only once durable; a failed write leaves the old offsets and answers a retriable error.

use super::str_bytes;
use crate::group::{CommitPartition, CommitRequest, GroupError};
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};
use std::rc::Rc;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
/// Partitions one request may commit.
const PARTITIONS_MAX: usize = 100_000;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let metadata = shard.metadata();
    let total: usize = request
        .topics
        .iter()
        .map(|topic| topic.partitions.len())
        .sum();
    // Per partition in request order: Some(code) when refused here, None when sent on.
    let mut local: Vec<Option<i16>> = Vec::with_capacity(total.min(PARTITIONS_MAX));
    let mut commits = Vec::new();
    if total <= PARTITIONS_MAX {
        for topic in &request.topics {
            let known = metadata.topic(&topic.name.0);
            for partition in &topic.partitions {
                let exists = known.is_some_and(|meta| {
                    partition.partition_index >= 0 && partition.partition_index < meta.partitions
                });
                if !exists {
                    local.push(Some(UNKNOWN_TOPIC_OR_PARTITION));
                    continue;
                }
                local.push(None);
                commits.push(CommitPartition {
                    topic: topic.name.0.to_string(),
                    partition: partition.partition_index,
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: partition.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
        }
    }
    let results: Result<Vec<Option<GroupError>>, i16> = if total > PARTITIONS_MAX {
        Err(INVALID_REQUEST)
    } else {
        let commit = CommitRequest {
            group_id: request.group_id.0.to_string(),
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
            // Only v2-v4 carry a retention time; the decoder gives -1 (the default) otherwise.
            retention_time_ms: request.retention_time_ms,
            partitions: commits,
        };
        let key = commit.group_id.clone();
        on_coordinator(shard, &key, move |shard| async move {
            shard.groups.commit(commit).await
        })
        .await
        .unwrap_or(Err(GroupError::CoordinatorNotAvailable))
        .map_err(GroupError::code)
    };
    let mut remote = match &results {
        Ok(results) => results.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let mut local = local.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let code = match (&results, local.next().flatten()) {
                        (Err(code), _) => *code,
                        (Ok(_), Some(code)) => code,
                        (Ok(_), None) => remote.next().flatten().map_or(0, GroupError::code),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(TopicName(str_bytes(&topic.name.0)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
