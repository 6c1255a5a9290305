//! Heartbeat (12): answered at once by the group's coordinator shard.

use crate::group::{GroupError, HeartbeatRequest};
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::{HeartbeatRequest as Request, HeartbeatResponse};
use std::rc::Rc;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: Request) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let heartbeat = HeartbeatRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
    };
    let result = on_coordinator(shard, &group_id, move |shard| async move {
        shard.groups.heartbeat(&heartbeat)
    })
    .await
    .unwrap_or(Err(GroupError::CoordinatorNotAvailable));
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, GroupError::code))
}
