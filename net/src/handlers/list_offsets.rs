//! ListOffsets (2): -1 latest (high watermark; also for read_committed until transactions
//! exist), -2 earliest, -3 max timestamp (v7+), otherwise the first offset with a timestamp at
//! or after the one asked for.

use crate::shard::{Shard, TopicPartition};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use std::rc::Rc;
use std::sync::Arc;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

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
            let by_time = (partition.timestamp >= 0 || partition.timestamp == MAX_TIMESTAMP)
                .then_some(partition.timestamp);
            let response = match shard.offsets(key, by_time.map(|ts| ts.max(0))).await {
                Err(error) => response.with_error_code(error.kafka_error_code()),
                Ok((offsets, found)) => match partition.timestamp {
                    LATEST => response.with_offset(offsets.high_watermark),
                    EARLIEST => response.with_offset(offsets.log_start),
                    MAX_TIMESTAMP => {
                        // TODO(broker issue): the offset of the record with the largest
                        // timestamp; until then the last batch holding the newest timestamp.
                        match found {
                            Some(found) => response
                                .with_offset(found.offset)
                                .with_timestamp(found.batch_max_timestamp),
                            None => response,
                        }
                    }
                    _ => match found {
                        Some(found) => response
                            .with_offset(found.offset)
                            .with_timestamp(found.batch_max_timestamp),
                        None => response,
                    },
                },
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
