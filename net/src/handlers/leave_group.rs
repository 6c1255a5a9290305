//! LeaveGroup (13): v0-2 name one member (top-level `member_id`, error at the top level); v3+
//! batch members with per-member errors.

use super::str_bytes;
use crate::group::{error_code, GroupError, LeaveMember, LeaveResponse};
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use std::rc::Rc;

/// Members one request may name.
const MEMBERS_MAX: usize = 10_000;
const INVALID_REQUEST: i16 = 42;

/// Handles the request.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let members: Vec<LeaveMember> = if version < 3 {
        vec![LeaveMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    } else {
        request
            .members
            .iter()
            .map(|member| LeaveMember {
                member_id: member.member_id.to_string(),
                group_instance_id: member.group_instance_id.as_ref().map(|id| id.to_string()),
            })
            .collect()
    };
    if members.len() > MEMBERS_MAX {
        return LeaveGroupResponse::default().with_error_code(INVALID_REQUEST);
    }
    let key = group_id.clone();
    let response = on_coordinator(shard, &key, move |shard| async move {
        shard.groups.leave(&group_id, &members)
    })
    .await
    .unwrap_or(LeaveResponse {
        error: Some(GroupError::CoordinatorNotAvailable),
        members: Vec::new(),
    });
    if version < 3 {
        let error = response
            .error
            .or_else(|| response.members.first().and_then(|(_, _, error)| *error));
        return LeaveGroupResponse::default().with_error_code(error_code(error));
    }
    let members = response
        .members
        .into_iter()
        .map(|(member_id, instance_id, error)| {
            MemberResponse::default()
                .with_member_id(str_bytes(&member_id))
                .with_group_instance_id(instance_id.as_deref().map(str_bytes))
                .with_error_code(error_code(error))
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(error_code(response.error))
        .with_members(members)
}
