//! InitProducerId (22): a fresh producer id with epoch 0 for idempotent producers.
//! Transactional ids are refused until transactions exist.

use crate::shard::Shard;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

/// Handles the request.
pub fn handle(shard: &Shard, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        // TRANSACTIONAL_ID_AUTHORIZATION_FAILED would mislead; COORDINATOR_NOT_AVAILABLE makes
        // clients retry, so answer with the honest "unsupported" code.
        return InitProducerIdResponse::default()
            .with_error_code(35)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(shard.allocate_producer_id()))
        .with_producer_epoch(0)
}
