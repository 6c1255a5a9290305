//! ListOffsets (2): -1 latest (high watermark; also for read_committed until transactions
//! exist), -2 earliest, -3 max timestamp (v7+), -4 earliest local (v8+: the log start, as nothing
//! is tiered), otherwise the first offset with a timestamp at or after the one asked for.
//! Anything else (-5 latest tiered, unknown negatives) finds nothing: offset and timestamp -1.

use crate::shard::{PartitionError, Shard, TopicPartition};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use runnel_engine::TimestampMatch;
use std::rc::Rc;
use std::sync::Arc;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let snapshot = shard.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let count = snapshot.topic(&name).map(|meta| meta.partitions);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition_index;
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(index)
                .with_leader_epoch(-1)
                .with_timestamp(-1)
                .with_offset(-1);
            if count.is_none_or(|count| index < 0 || index >= count) {
                partitions.push(response.with_error_code(3));
                continue;
            }
            let key = TopicPartition {
                topic: Arc::from(name.as_str()),
                partition: index,
            };
            let found = match partition.timestamp {
                MAX_TIMESTAMP => max_timestamp(shard, key).await,
                LATEST | EARLIEST | EARLIEST_LOCAL => {
                    shard.offsets(key, None).await.map(|(offsets, _)| {
                        let offset = match partition.timestamp {
                            LATEST => offsets.high_watermark,
                            _ => offsets.log_start,
                        };
                        Some((offset, -1))
                    })
                }
                target if target >= 0 => shard
                    .offsets(key, Some(target))
                    .await
                    .map(|(_, found)| found.map(|found| (found.offset, found.timestamp))),
                _ => Ok(None),
            };
            let response = match found {
                Err(error) => response.with_error_code(error.kafka_error_code()),
                Ok(Some((offset, timestamp))) => {
                    response.with_offset(offset).with_timestamp(timestamp)
                }
                Ok(None) => response,
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// The first offset holding the log's largest timestamp, and that timestamp; `None` for a log
/// without records (or with only negative timestamps).
///
/// The engine answers "first offset with a timestamp >= t" and the max timestamp of the batch it
/// found, so the largest timestamp is searched for: each hit raises the lower bound to that
/// batch's max timestamp, each miss lowers the upper bound. The range is the non-negative i64s,
/// so this ends after at most 64 lookups.
async fn max_timestamp(
    shard: &Rc<Shard>,
    partition: TopicPartition,
) -> Result<Option<(i64, i64)>, PartitionError> {
    let lookup = |target: i64| {
        let partition = partition.clone();
        async move {
            Ok::<Option<TimestampMatch>, PartitionError>(
                shard.offsets(partition, Some(target)).await?.1,
            )
        }
    };
    let Some(first) = lookup(0).await? else {
        return Ok(None);
    };
    // Invariant: some record has a timestamp >= low; none has one > high.
    let (mut low, mut high) = (first.batch_max_timestamp.max(0), i64::MAX);
    while low < high {
        let middle = low + (high - low) / 2 + 1;
        match lookup(middle).await? {
            Some(found) => low = found.batch_max_timestamp.max(middle),
            None => high = middle - 1,
        }
    }
    Ok(lookup(low).await?.map(|found| (found.offset, low)))
}
