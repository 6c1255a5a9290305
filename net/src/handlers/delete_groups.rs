//! DeleteGroups (42): removes empty groups (and their committed offsets) on their coordinator
//! shards.

use crate::group::GroupError;
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use std::rc::Rc;

/// Groups one request may name.
const GROUPS_MAX: usize = 1_000;
const INVALID_REQUEST: i16 = 42;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let too_many = request.groups_names.len() > GROUPS_MAX;
    let mut results = Vec::with_capacity(request.groups_names.len().min(GROUPS_MAX));
    for group_id in request.groups_names {
        let result = DeletableGroupResult::default().with_group_id(group_id.clone());
        if too_many {
            results.push(result.with_error_code(INVALID_REQUEST));
            continue;
        }
        let id = group_id.0.to_string();
        let key = id.clone();
        // Offset tombstones, then the group's, durable before the group goes and the answer.
        let outcome = on_coordinator(shard, &key, move |shard| async move {
            shard.groups.delete_group(&id).await
        })
        .await
        .unwrap_or(Err(GroupError::CoordinatorNotAvailable));
        results.push(result.with_error_code(outcome.err().map_or(0, GroupError::code)));
    }
    DeleteGroupsResponse::default().with_results(results)
}
