//! ListGroups (16): the groups of every shard's coordinator, optionally filtered by state (v4+).
//! While a shard loads its groups the answer carries COORDINATOR_LOAD_IN_PROGRESS with the
//! groups already served, as Kafka's.

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
            shard.groups.list(&states)
        })
        .await;
        let Some((error, listed)) = listed else {
            error_code = crate::group::GroupError::CoordinatorNotAvailable.code();
            continue;
        };
        if let Some(error) = error {
            // A shard still loading wins: clients retry COORDINATOR_LOAD_IN_PROGRESS.
            if error_code != crate::group::GroupError::CoordinatorLoadInProgress.code() {
                error_code = error.code();
            }
        }
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
