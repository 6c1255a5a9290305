//! Fetch (1): reads each partition on its owner shard, long-polls (`max_wait_ms`, `min_bytes`)
//! on the partitions' durable-data watches, and honours partition and response byte limits
//! (always at least one whole batch for the first partition with data, as KIP-74 requires).
//!
//! Fetch sessions (KIP-227) are declined: `session_id` is always 0, so clients send full requests.
//!
//! The record bytes are copied into the response from the read plan on the blocking pool (file
//! chunks) so a cold read never stalls the reactor. TODO(broker issue): encode the response
//! around the plan and `sendfile` file chunks straight to the socket.

use crate::shard::{PartitionError, Shard, TopicPartition};
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use runnel_engine::LogError;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a fetch may wait, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

struct Wanted {
    topic: TopicName,
    partition: TopicPartition,
    offset: i64,
    max_bytes: u64,
}

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: FetchRequest) -> FetchResponse {
    let wanted: Vec<Wanted> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(move |partition| Wanted {
                topic: topic.topic.clone(),
                partition: TopicPartition {
                    topic: Arc::from(topic.topic.0.as_str()),
                    partition: partition.partition,
                },
                offset: partition.fetch_offset,
                max_bytes: u64::try_from(partition.partition_max_bytes).unwrap_or(0),
            })
        })
        .collect();
    let response_max_bytes = u64::try_from(request.max_bytes).unwrap_or(0);
    let min_bytes = u64::try_from(request.min_bytes).unwrap_or(0).max(1);
    let deadline = Instant::now()
        + Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    loop {
        let (results, total_bytes, any_error) = read_all(shard, &wanted, response_max_bytes).await;
        let now = Instant::now();
        if total_bytes >= min_bytes || any_error || now >= deadline {
            return build_response(&wanted, results);
        }
        wait_for_any(shard, &wanted, deadline - now).await;
    }
}

type PartitionResult = Result<(Bytes, i64, i64), i16>;

async fn read_all(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    response_max_bytes: u64,
) -> (Vec<PartitionResult>, u64, bool) {
    let snapshot = shard.metadata();
    let mut results = Vec::with_capacity(wanted.len());
    let mut total = 0u64;
    let mut any_error = false;
    for want in wanted {
        let known = snapshot.topic(&want.partition.topic).is_some_and(|topic| {
            want.partition.partition >= 0 && want.partition.partition < topic.partitions
        });
        if !known {
            any_error = true;
            results.push(Err(3));
            continue;
        }
        // KIP-74: only the first partition with data may exceed the limits (by one batch, so a
        // consumer always makes progress); later partitions get data only if it fits in what is
        // left of the response limit, and otherwise just their offsets.
        let budget = want.max_bytes.min(response_max_bytes.saturating_sub(total));
        let plan = shard
            .read(want.partition.clone(), want.offset, budget.max(1))
            .await;
        match plan {
            Ok(mut plan) => {
                if total > 0 && plan.len_bytes() > budget {
                    plan.chunks.clear();
                }
                let high_watermark = plan.durable_end_offset;
                let log_start = plan.log_start_offset;
                let bytes = if plan.is_empty() {
                    Bytes::new()
                } else {
                    match glommio::executor()
                        .spawn_blocking(move || plan.to_vec())
                        .await
                    {
                        Ok(bytes) => Bytes::from(bytes),
                        Err(error) => {
                            tracing::warn!(partition = ?want.partition, %error, "reading a fetch plan failed");
                            any_error = true;
                            results.push(Err(56));
                            continue;
                        }
                    }
                };
                total += bytes.len() as u64;
                results.push(Ok((bytes, high_watermark, log_start)));
            }
            Err(error) => {
                any_error = true;
                results.push(Err(partition_error_code(&error)));
            }
        }
    }
    (results, total, any_error)
}

fn partition_error_code(error: &PartitionError) -> i16 {
    match error {
        PartitionError::Log(LogError::OffsetOutOfRange { .. }) => 1,
        other => other.kafka_error_code(),
    }
}

async fn wait_for_any(shard: &Rc<Shard>, wanted: &[Wanted], timeout: Duration) {
    let (woken_tx, woken_rx) = flume::bounded::<()>(wanted.len().max(1));
    let mut tasks = Vec::with_capacity(wanted.len());
    for want in wanted {
        let (shard, partition, offset, woken) = (
            shard.clone(),
            want.partition.clone(),
            want.offset,
            woken_tx.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            shard.watch(partition, offset, timeout).await;
            let _ = woken.try_send(());
        }));
    }
    let timer = glommio::timer::sleep(timeout);
    futures_lite::future::or(
        async {
            let _ = woken_rx.recv_async().await;
        },
        timer,
    )
    .await;
    drop(tasks); // cancels the remaining local watches
}

fn build_response(wanted: &[Wanted], results: Vec<PartitionResult>) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for (want, result) in wanted.iter().zip(results) {
        let partition = PartitionData::default().with_partition_index(want.partition.partition);
        let partition = match result {
            Ok((bytes, high_watermark, log_start)) => partition
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(log_start)
                .with_records(Some(bytes)),
            Err(code) => partition
                .with_error_code(code)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new())),
        };
        match topics.last_mut() {
            Some(topic) if topic.topic == want.topic => topic.partitions.push(partition),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(want.topic.clone())
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchResponse::default().with_responses(topics)
}
