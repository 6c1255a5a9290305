//! ListGroups (16): the groups of every shard's coordinator, optionally filtered by state (v4+).

use super::str_bytes;
use crate::group::GroupState;
use crate::group_service::on_shard;
use crate::shard::Shard;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use std::rc::Rc;

const ALL_STATES: [GroupState; 5] = [
    GroupState::Empty,
    GroupState::PreparingRebalance,
    GroupState::CompletingRebalance,
    GroupState::Stable,
    GroupState::Dead,
];

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut states: Vec<GroupState> = Vec::new();
    for wanted in &request.states_filter {
        match ALL_STATES
            .iter()
            .find(|state| state.name().eq_ignore_ascii_case(wanted))
        {
            Some(state) => states.push(*state),
            // A state no group can be in: nothing matches.
            None => return ListGroupsResponse::default(),
        }
    }
    let mut groups = Vec::new();
    let mut error_code = 0;
    for target in 0..shard.shard_count() {
        let states = states.clone();
        let listed = on_shard(shard, target, move |shard| async move {
            shard
                .groups
                .with(|coordinator, _| (coordinator.list(&states), Vec::new()))
        })
        .await;
        let Some(listed) = listed else {
            error_code = crate::group::GroupError::CoordinatorNotAvailable.code();
            continue;
        };
        groups.extend(listed.into_iter().map(|listing| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&listing.group_id)))
                .with_protocol_type(str_bytes(&listing.protocol_type))
                .with_group_state(str_bytes(listing.state.name()))
        }));
    }
    ListGroupsResponse::default()
        .with_error_code(error_code)
        .with_groups(groups)
}
