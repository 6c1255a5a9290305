//! DeleteTopics (20): by name (v1-5 `topic_names`, v6 `topics` with names or ids).

use super::str_bytes;
use crate::shard::Shard;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use std::rc::Rc;

const UNKNOWN_TOPIC_ID: i16 = 100;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let snapshot = shard.metadata();
    // Resolve every entry to a name (or an error for an unknown id).
    let mut entries: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|name| (Some(name.0.to_string()), uuid::Uuid::nil()))
        .collect();
    for state in &request.topics {
        let name = match &state.name {
            Some(name) => Some(name.0.to_string()),
            None => snapshot
                .topics
                .values()
                .find(|topic| topic.uuid() == state.topic_id)
                .map(|topic| topic.name.clone()),
        };
        entries.push((name, state.topic_id));
    }
    let names: Vec<String> = entries
        .iter()
        .filter_map(|(name, _)| name.clone())
        .collect();
    let mut outcomes = shard.delete_topics(names).await.into_iter();
    let responses = entries
        .into_iter()
        .map(|(name, topic_id)| {
            let result = DeletableTopicResult::default().with_topic_id(topic_id);
            let Some(name) = name else {
                return result
                    .with_error_code(UNKNOWN_TOPIC_ID)
                    .with_error_message(Some(str_bytes(
                        "This server does not host this topic ID.",
                    )));
            };
            let result = result.with_name(Some(TopicName(str_bytes(&name))));
            match outcomes.next() {
                Some(Ok(())) => result,
                Some(Err((code, message))) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
                None => result.with_error_code(-1),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
