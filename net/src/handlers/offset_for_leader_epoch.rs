//! OffsetForLeaderEpoch (23), with the leader epoch -1 this broker reports everywhere
//! (Metadata, ListOffsets, Fetch): the whole log is epoch -1.
//!
//! - `current_leader_epoch` >= 0 is newer than our -1: UNKNOWN_LEADER_EPOCH, Kafka's answer when
//!   the client's current epoch is ahead of the leader's.
//! - `leader_epoch` -1 asks for the end of our only epoch: the high watermark, epoch -1 (Kafka
//!   answers the latest epoch with the log end offset).
//! - any other `leader_epoch` is one we never had: epoch -1, end offset -1 and no error, as
//!   Kafka answers an epoch above every epoch it knows.
//!
//! Clients only ask once Metadata gives them a leader epoch >= 0, so with -1 there they skip
//! offset validation altogether.

use crate::shard::{Shard, TopicPartition};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::rc::Rc;
use std::sync::Arc;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
/// The only leader epoch this broker has.
const LEADER_EPOCH: i32 = -1;

/// Handles the request.
pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let snapshot = shard.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let count = snapshot.topic(&name).map(|meta| meta.partitions);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition;
            let answer = EpochEndOffset::default()
                .with_partition(index)
                .with_leader_epoch(LEADER_EPOCH)
                .with_end_offset(-1);
            let answer = if count.is_none_or(|count| index < 0 || index >= count) {
                answer.with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
            } else if partition.current_leader_epoch > LEADER_EPOCH {
                answer.with_error_code(UNKNOWN_LEADER_EPOCH)
            } else if partition.leader_epoch != LEADER_EPOCH {
                answer
            } else {
                let key = TopicPartition {
                    topic: Arc::from(name.as_str()),
                    partition: index,
                };
                match shard.offsets(key, None).await {
                    Ok((offsets, _)) => answer.with_end_offset(offsets.high_watermark),
                    Err(error) => answer.with_error_code(error.kafka_error_code()),
                }
            };
            partitions.push(answer);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
