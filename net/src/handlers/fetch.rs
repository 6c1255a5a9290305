//! Fetch (1): reads each partition on its owner shard, long-polls (`max_wait_ms`, `min_bytes`)
//! on the partitions' durable-data watches, and honours partition and response byte limits
//! (always at least one whole batch for the first partition with data, as KIP-74 requires).
//!
//! Fetch sessions (KIP-227) are declined: `session_id` is always 0, so clients send full requests.
//!
//! Zero copy: the response is encoded around each partition's read plan
//! ([`crate::fetch_response`]); the connection loop writes its memory pieces and `sendfile`s its
//! file pieces from the blocking pool, so on-disk records never pass through user space and a
//! cold read never stalls the reactor.

use crate::fetch_response::{self, PartitionAnswer, ResponseParts, TopicAnswer};
use crate::shard::{PartitionError, Shard, TopicPartition};
use kafka_protocol::messages::{FetchRequest, TopicName};
use runnel_engine::{LogError, ReadPlan};
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

/// Handles the request; the answer is a whole response frame of `version`.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    correlation_id: i32,
    request: FetchRequest,
) -> ResponseParts {
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
            return fetch_response::encode(
                version,
                correlation_id,
                build_answers(&wanted, results),
            );
        }
        wait_for_any(shard, &wanted, deadline - now).await;
    }
}

type PartitionResult = Result<ReadPlan, i16>;

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
                total += plan.len_bytes();
                results.push(Ok(plan));
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

fn build_answers(wanted: &[Wanted], results: Vec<PartitionResult>) -> Vec<TopicAnswer> {
    let mut topics: Vec<TopicAnswer> = Vec::new();
    for (want, result) in wanted.iter().zip(results) {
        let answer = match result {
            Ok(plan) => PartitionAnswer {
                partition: want.partition.partition,
                error_code: 0,
                high_watermark: plan.durable_end_offset,
                last_stable_offset: plan.durable_end_offset,
                log_start_offset: plan.log_start_offset,
                records: plan,
            },
            Err(code) => PartitionAnswer {
                partition: want.partition.partition,
                error_code: code,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: ReadPlan::default(),
            },
        };
        match topics.last_mut() {
            Some(topic) if topic.name.as_str() == want.topic.0.as_str() => {
                topic.partitions.push(answer)
            }
            _ => topics.push(TopicAnswer {
                name: want.topic.0.to_string(),
                partitions: vec![answer],
            }),
        }
    }
    topics
}
