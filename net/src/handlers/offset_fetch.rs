//! OffsetFetch (9): committed offsets from the group's coordinator shard; selected partitions
//! (never-committed ones get offset -1) or, with null topics (v2+), every committed partition.
//! v8+ asks for several groups at once. A group-level error (COORDINATOR_LOAD_IN_PROGRESS while
//! the coordinator loads) goes in the group's or the top-level error code; v0-v1 have neither,
//! so each requested partition carries it, as Kafka's error response does.

use super::str_bytes;
use crate::group::{FetchedOffset, GroupError};
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use std::rc::Rc;

/// Partitions one group's fetch may name.
const PARTITIONS_MAX: usize = 100_000;
/// Groups one request may name.
const GROUPS_MAX: usize = 1_000;
const INVALID_REQUEST: i16 = 42;

/// Committed offsets of one group, grouped by topic in first-seen order.
type Topics = Vec<(String, Vec<FetchedOffset>)>;

async fn fetch_group(
    shard: &Rc<Shard>,
    group_id: String,
    wanted: Option<Vec<(String, i32)>>,
) -> Result<Topics, i16> {
    if wanted
        .as_ref()
        .is_some_and(|wanted| wanted.len() > PARTITIONS_MAX)
    {
        return Err(INVALID_REQUEST);
    }
    let key = group_id.clone();
    let fetched = on_coordinator(shard, &key, move |shard| async move {
        shard.groups.fetch(&group_id, wanted.as_deref())
    })
    .await
    .unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    .map_err(GroupError::code)?;
    let mut topics: Topics = Vec::new();
    for offset in fetched {
        match topics.iter_mut().find(|(name, _)| *name == offset.topic) {
            Some((_, partitions)) => partitions.push(offset),
            None => topics.push((offset.topic.clone(), vec![offset])),
        }
    }
    Ok(topics)
}

/// Handles the request.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        if request.groups.len() > GROUPS_MAX {
            return OffsetFetchResponse::default().with_error_code(INVALID_REQUEST);
        }
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let wanted = group.topics.map(|topics| {
                topics
                    .iter()
                    .flat_map(|topic| {
                        let name = topic.name.0.to_string();
                        topic
                            .partition_indexes
                            .iter()
                            .map(move |partition| (name.clone(), *partition))
                    })
                    .collect()
            });
            let result = fetch_group(shard, group.group_id.0.to_string(), wanted).await;
            let response = OffsetFetchResponseGroup::default().with_group_id(group.group_id);
            groups.push(match result {
                Err(code) => response.with_error_code(code),
                Ok(topics) => response.with_topics(
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(&name)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|offset| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(offset.partition)
                                                .with_committed_offset(offset.offset)
                                                .with_committed_leader_epoch(offset.leader_epoch)
                                                .with_metadata(Some(str_bytes(&offset.metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let GroupId(group_id) = request.group_id;
    let wanted: Option<Vec<(String, i32)>> = request.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|topic| {
                let name = topic.name.0.to_string();
                topic
                    .partition_indexes
                    .iter()
                    .map(move |partition| (name.clone(), *partition))
            })
            .collect()
    });
    let requested = if version < 2 { wanted.clone() } else { None };
    match fetch_group(shard, group_id.to_string(), wanted).await {
        Err(code) if version < 2 => partition_errors(requested.unwrap_or_default(), code),
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(&name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|offset| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(offset.partition)
                                        .with_committed_offset(offset.offset)
                                        .with_committed_leader_epoch(offset.leader_epoch)
                                        .with_metadata(Some(str_bytes(&offset.metadata)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}

/// A v0-v1 answer to a request that failed as a whole: the error on every requested partition.
fn partition_errors(requested: Vec<(String, i32)>, code: i16) -> OffsetFetchResponse {
    let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
    for (name, partition) in requested {
        let answer = OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_committed_offset(-1)
            .with_committed_leader_epoch(-1)
            .with_metadata(Some(str_bytes("")))
            .with_error_code(code);
        match topics.iter_mut().find(|topic| *topic.name.0 == *name) {
            Some(topic) => topic.partitions.push(answer),
            None => topics.push(
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partitions(vec![answer]),
            ),
        }
    }
    OffsetFetchResponse::default().with_topics(topics)
}
