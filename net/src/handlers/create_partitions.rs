//! CreatePartitions (37): raises a topic's partition count (never lowers it). The controller
//! persists the new count and every shard opens the new partitions it owns before the answer.
//! Manual assignments are accepted only when each new partition names just this broker.
//! `validate_only` checks without changing anything.

use super::str_bytes;
use crate::metadata::PARTITIONS_MAX;
use crate::shard::Shard;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use std::collections::HashSet;
use std::rc::Rc;

const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_REQUEST: i16 = 42;

/// Handles the request.
pub async fn handle(
    shard: &Rc<Shard>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<&str> = request
        .topics
        .iter()
        .map(|topic| topic.name.0.as_str())
        .filter(|name| !seen.insert(*name))
        .collect();
    let mut outcomes: Vec<Result<(), (i16, String)>> = request
        .topics
        .iter()
        .map(|topic| {
            if duplicates.contains(topic.name.0.as_str()) {
                return Err((INVALID_REQUEST, "Duplicate topic in request.".into()));
            }
            check(shard, topic)
        })
        .collect();
    let counts: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(topic, _)| (topic.name.0.to_string(), topic.count))
        .collect();
    if !counts.is_empty() {
        let mut results = shard
            .create_partitions(counts, request.validate_only)
            .await
            .into_iter();
        for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_ok()) {
            *outcome = results
                .next()
                .unwrap_or_else(|| Err((-1, "the controller gave no answer".into())));
        }
    }
    let results = request
        .topics
        .iter()
        .zip(outcomes)
        .map(|(topic, outcome)| {
            let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            match outcome {
                Ok(()) => result.with_error_message(None),
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// Checks that need no controller state beyond the current snapshot.
fn check(shard: &Shard, topic: &CreatePartitionsTopic) -> Result<(), (i16, String)> {
    if !(1..=PARTITIONS_MAX).contains(&topic.count) {
        return Err((
            INVALID_PARTITIONS,
            format!(
                "Number of partitions must be between 1 and {PARTITIONS_MAX}, got {}",
                topic.count
            ),
        ));
    }
    let Some(assignments) = &topic.assignments else {
        return Ok(());
    };
    let node_id = shard.config.node_id;
    if let Some(current) = shard.metadata().topic(&topic.name.0) {
        let added = i64::from(topic.count) - i64::from(current.partitions);
        if added > 0 && assignments.len() as i64 != added {
            return Err((
                INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "Increasing the number of partitions by {added} but {} assignments provided.",
                    assignments.len()
                ),
            ));
        }
    }
    if assignments
        .iter()
        .any(|assignment| assignment.broker_ids.iter().map(|id| id.0).ne([node_id]))
    {
        return Err((
            INVALID_REPLICA_ASSIGNMENT,
            format!("Each new partition must be assigned to exactly this broker ({node_id})."),
        ));
    }
    Ok(())
}
