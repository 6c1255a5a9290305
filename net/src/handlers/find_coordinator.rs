//! FindCoordinator (10): every group is coordinated by this broker (the shard behind it is
//! chosen per request, see `group_service`). Transactions do not exist yet, so key type 1 gets
//! COORDINATOR_NOT_AVAILABLE. v4+ batches keys in `coordinator_keys` and answers in
//! `coordinators`; older versions use the top-level fields.

use super::str_bytes;
use crate::shard::Shard;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INVALID_REQUEST: i16 = 42;
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Keys answered per request; more get INVALID_REQUEST.
const KEYS_MAX: usize = 10_000;

/// (error code, message) for a key of `key_type`, or `None` when this broker coordinates it.
fn key_error(key_type: i8, key: &str) -> Option<(i16, &'static str)> {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => Some((INVALID_REQUEST, "The group id is empty.")),
        KEY_TYPE_GROUP => None,
        KEY_TYPE_TRANSACTION => Some((
            COORDINATOR_NOT_AVAILABLE,
            "Transactions are not supported by this broker.",
        )),
        _ => Some((INVALID_REQUEST, "Unknown coordinator key type.")),
    }
}

/// Handles the request.
pub fn handle(
    shard: &Shard,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let config = &shard.config;
    let node_id = BrokerId(config.node_id);
    let host = str_bytes(&config.advertised_host);
    let port = config.advertised_port;
    if version >= 4 {
        let too_many = request.coordinator_keys.len() > KEYS_MAX;
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key: StrBytes| {
                let error = if too_many {
                    Some((INVALID_REQUEST, "Too many coordinator keys."))
                } else {
                    key_error(request.key_type, &key)
                };
                let coordinator = Coordinator::default().with_key(key);
                match error {
                    None => coordinator
                        .with_node_id(node_id)
                        .with_host(host.clone())
                        .with_port(port)
                        .with_error_code(0)
                        .with_error_message(None),
                    Some((code, message)) => coordinator
                        .with_node_id(BrokerId(-1))
                        .with_host(str_bytes(""))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match key_error(request.key_type, &request.key) {
        None => FindCoordinatorResponse::default()
            .with_node_id(node_id)
            .with_host(host)
            .with_port(port)
            .with_error_code(0)
            .with_error_message(None),
        Some((code, message)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(-1))
            .with_host(str_bytes(""))
            .with_port(-1)
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message))),
    }
}
