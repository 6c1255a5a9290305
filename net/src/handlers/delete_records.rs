//! DeleteRecords (21): moves each partition's log start offset forward on its owner shard
//! (offset -1: to the high watermark) and deletes the segments wholly below it. Partitions are
//! handled concurrently. As in Kafka, a topic whose `cleanup.policy` lacks `delete` refuses.

use crate::shard::{Shard, TopicPartition};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use std::rc::Rc;
use std::sync::Arc;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const POLICY_VIOLATION: i16 = 44;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let snapshot = shard.metadata();
    // Start every partition's deletion, then collect in request order.
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let meta = snapshot.topic(&name);
        let deletable = meta.is_none_or(|meta| {
            meta.configs
                .get("cleanup.policy")
                .is_none_or(|policy| policy.split(',').any(|item| item.trim() == "delete"))
        });
        let mut pending = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition_index;
            let task = if meta.is_none_or(|meta| index < 0 || index >= meta.partitions) {
                Err(UNKNOWN_TOPIC_OR_PARTITION)
            } else if !deletable {
                Err(POLICY_VIOLATION)
            } else {
                let shard = shard.clone();
                let key = TopicPartition {
                    topic: Arc::from(name.as_str()),
                    partition: index,
                };
                let offset = partition.offset;
                Ok(glommio::spawn_local(async move {
                    shard.delete_records(key, offset).await
                }))
            };
            pending.push((index, task));
        }
        topics.push((topic.name, pending));
    }
    let mut results = Vec::with_capacity(topics.len());
    for (name, pending) in topics {
        let mut partitions = Vec::with_capacity(pending.len());
        for (index, task) in pending {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(index)
                .with_low_watermark(-1);
            partitions.push(match task {
                Err(code) => result.with_error_code(code),
                Ok(task) => match task.await {
                    Ok(low_watermark) => result.with_low_watermark(low_watermark),
                    Err(error) => result.with_error_code(error.kafka_error_code()),
                },
            });
        }
        results.push(
            DeleteRecordsTopicResult::default()
                .with_name(name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(results)
}
