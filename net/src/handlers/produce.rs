//! Produce (0): each partition's record batch is appended on its owner shard; all partitions of
//! a request are appended concurrently and answered together once durable (acks -1 and 1 are the
//! same on a single node; acks 0 gets no response).

use crate::shard::{Shard, TopicPartition};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use runnel_engine::batch::BatchHeader;
use std::rc::Rc;
use std::sync::Arc;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;
/// Largest records section decompressed to check a compacted topic's keys; a batch inflating past
/// it is refused (a decompression bomb).
const KEY_CHECK_DECOMPRESSED_BYTES_MAX: usize = 32 << 20;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, version: i16, request: ProduceRequest) -> ProduceResponse {
    let acks_valid = matches!(request.acks, -1..=1);
    let snapshot = shard.metadata();
    // Start every partition's append, then collect in request order.
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let known = snapshot.topic(&name).map(|meta| meta.partitions);
        let compacted = snapshot.topic(&name).is_some_and(|meta| {
            crate::configs::is_compacted(&shard.config.log_defaults, &meta.configs)
        });
        let mut pending = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let index = partition.index;
            let early_error = if !acks_valid {
                Some(INVALID_REQUIRED_ACKS)
            } else if known.is_none_or(|count| index < 0 || index >= count) {
                Some(UNKNOWN_TOPIC_OR_PARTITION)
            } else {
                check_records(version, partition.records.as_deref()).or_else(|| {
                    compacted
                        .then(|| check_keys(partition.records.as_deref()))
                        .flatten()
                })
            };
            let task = match (early_error, partition.records) {
                (None, Some(records)) => {
                    let shard = shard.clone();
                    let key = TopicPartition {
                        topic: Arc::from(name.as_str()),
                        partition: index,
                    };
                    Ok(glommio::spawn_local(async move {
                        shard.append(key, records).await
                    }))
                }
                (error, _) => Err(error.unwrap_or(INVALID_RECORD)),
            };
            pending.push((index, task));
        }
        topics.push((topic.name, pending));
    }
    let mut responses = Vec::with_capacity(topics.len());
    for (name, pending) in topics {
        let mut partitions = Vec::with_capacity(pending.len());
        for (index, task) in pending {
            let response = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_append_time_ms(-1);
            let response = match task {
                Err(code) => response.with_error_code(code).with_base_offset(-1),
                Ok(task) => match task.await {
                    Ok(appended) => response
                        .with_base_offset(appended.base_offset)
                        .with_log_append_time_ms(appended.log_append_time_ms)
                        .with_log_start_offset(appended.log_start_offset),
                    Err(error) => response
                        .with_error_code(error.kafka_error_code())
                        .with_base_offset(-1)
                        .with_error_message(Some(super::str_bytes(&error.to_string()))),
                },
            };
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partitions),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

/// A compacted topic takes only keyed records (Kafka: "Compacted topic cannot accept message
/// without key"). A batch that fails validation is left to the engine, which reports why.
fn check_keys(records: Option<&[u8]>) -> Option<i16> {
    let records = records?;
    let limits = runnel_engine::batch::ValidationLimits {
        max_batch_bytes: usize::MAX,
        allow_control: false,
    };
    runnel_engine::batch::validate_batch(records, &limits).ok()?;
    match runnel_engine::compact::has_keyless_record(records, KEY_CHECK_DECOMPRESSED_BYTES_MAX) {
        Ok(false) => None,
        Ok(true) | Err(_) => Some(INVALID_RECORD),
    }
}

/// Checks that need the request version: zstd needs Produce v7+.
fn check_records(version: i16, records: Option<&[u8]>) -> Option<i16> {
    let records = records?;
    let header = BatchHeader::parse(records)?;
    let codec = header.attributes.get() & 0x07;
    (codec == 4 && version < 7).then_some(UNSUPPORTED_COMPRESSION_TYPE)
}
