//! SyncGroup (14): runs on the group's coordinator shard and parks there until the leader's
//! assignment arrives. An empty assignment is zero-length bytes, never null.

use super::str_bytes;
use crate::group::{error_code, GroupError, SyncRequest, SyncResponse};
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use std::rc::Rc;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let sync = SyncRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        protocol_type: request.protocol_type.map(|name| name.to_string()),
        protocol_name: request.protocol_name.map(|name| name.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    let response = on_coordinator(shard, &group_id, move |shard| async move {
        shard.groups.sync(sync).await
    })
    .await
    .unwrap_or_else(|| SyncResponse::error(GroupError::CoordinatorNotAvailable));
    SyncGroupResponse::default()
        .with_error_code(error_code(response.error))
        .with_protocol_type(response.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(response.protocol_name.as_deref().map(str_bytes))
        .with_assignment(response.assignment)
}
