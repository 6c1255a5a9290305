//! JoinGroup (11): runs on the group's coordinator shard and parks there until the rebalance
//! completes (see `group_service`).

use super::str_bytes;
use crate::group::{error_code, GroupError, JoinRequest, JoinResponse, Protocol};
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use std::rc::Rc;

/// Handles the request from `client` (its client id and host).
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    client: (String, String),
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let (client_id, client_host) = client;
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let join = JoinRequest {
        group_id: group_id.clone(),
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id,
        client_host,
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| Protocol {
                name: protocol.name.to_string(),
                metadata: protocol.metadata,
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    let response = on_coordinator(shard, &group_id, move |shard| async move {
        shard.groups.join(join).await
    })
    .await
    .unwrap_or_else(|| JoinResponse::error(GroupError::CoordinatorNotAvailable, &member_id));
    encode(version, response)
}

fn encode(version: i16, response: JoinResponse) -> JoinGroupResponse {
    let members = if response.skip_assignment && version < 9 {
        Vec::new()
    } else {
        response
            .members
            .into_iter()
            .map(|member| {
                JoinGroupResponseMember::default()
                    .with_member_id(str_bytes(&member.member_id))
                    .with_group_instance_id(member.group_instance_id.as_deref().map(str_bytes))
                    .with_metadata(member.metadata)
            })
            .collect()
    };
    // Before v7 the protocol name is not nullable.
    let protocol_name = match response.protocol_name {
        Some(name) => Some(str_bytes(&name)),
        None if version < 7 => Some(str_bytes("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(error_code(response.error))
        .with_generation_id(response.generation_id)
        .with_protocol_type(response.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&response.leader))
        .with_skip_assignment(response.skip_assignment && version >= 9)
        .with_member_id(str_bytes(&response.member_id))
        .with_members(members)
}
