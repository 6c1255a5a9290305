//! DescribeGroups (15): each group from its coordinator shard; an unknown group is described
//! as `Dead` with no members (Kafka's answer before v6); a group whose coordinator is loading
//! gets COORDINATOR_LOAD_IN_PROGRESS.

use super::str_bytes;
use crate::group::GroupError;
use crate::group_service::on_coordinator;
use crate::shard::Shard;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use std::rc::Rc;

/// Groups one request may name.
const GROUPS_MAX: usize = 1_000;
const INVALID_REQUEST: i16 = 42;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let too_many = request.groups.len() > GROUPS_MAX;
    let mut groups = Vec::with_capacity(request.groups.len().min(GROUPS_MAX));
    for group_id in request.groups {
        let described = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(i32::MIN);
        if too_many {
            groups.push(described.with_error_code(INVALID_REQUEST));
            continue;
        }
        let id = group_id.0.to_string();
        let key = id.clone();
        let description = on_coordinator(shard, &key, move |shard| async move {
            shard.groups.describe(&id)
        })
        .await
        .unwrap_or(Err(GroupError::CoordinatorNotAvailable));
        let described = match description {
            Err(error) => described.with_error_code(error.code()),
            Ok(None) => described.with_group_state(str_bytes("Dead")),
            Ok(Some(description)) => described
                .with_group_state(str_bytes(description.state.name()))
                .with_protocol_type(str_bytes(&description.protocol_type))
                .with_protocol_data(str_bytes(&description.protocol_name))
                .with_members(
                    description
                        .members
                        .into_iter()
                        .map(|member| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&member.member_id))
                                .with_group_instance_id(
                                    member.group_instance_id.as_deref().map(str_bytes),
                                )
                                .with_client_id(str_bytes(&member.client_id))
                                .with_client_host(str_bytes(&member.client_host))
                                .with_member_metadata(member.metadata)
                                .with_member_assignment(member.assignment)
                        })
                        .collect(),
                ),
        };
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
