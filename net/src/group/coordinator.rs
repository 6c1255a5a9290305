//! The membership state machine: groups, members, rebalances, timeouts.
//!
//! Lives on the coordinator shard; one caller at a time. Every public method takes the time as
//! `now_ms` and returns what to answer as values, so the whole protocol is testable without a
//! clock or a socket.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::offsets::CommittedOffset;
use super::records::{GroupMetadataValue, MemberMetadataValue};
use super::{
    Effect, GroupDescription, GroupError, GroupLimits, GroupListing, GroupState, HeartbeatRequest,
    JoinMember, JoinRequest, JoinResponse, LeaveMember, LeaveResponse, MemberDescription, Protocol,
    RequestToken, StorePurpose, SyncRequest, SyncResponse,
};

/// Longest prefix (client id or instance id) put in front of a generated member id.
const MEMBER_ID_PREFIX_BYTES_MAX: usize = 200;

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) member_id: String,
    pub(super) group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    /// A parked JoinGroup, answered when the rebalance completes.
    join_token: Option<RequestToken>,
    /// A parked SyncGroup, answered when the leader's assignment arrives.
    sync_token: Option<RequestToken>,
    /// Sent SyncGroup for the current generation (members that never do are removed).
    synced: bool,
    /// Order of arrival: the earliest joined member becomes leader.
    join_order: u64,
}

impl Member {
    pub(super) fn metadata_for(&self, protocol_name: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|protocol| Some(protocol.name.as_str()) == protocol_name)
            .map(|protocol| protocol.metadata.clone())
            .unwrap_or_default()
    }

    fn bytes(&self) -> usize {
        protocols_bytes(&self.protocols) + self.assignment.len()
    }

    fn update(&mut self, request: &JoinRequest) {
        self.client_id.clone_from(&request.client_id);
        self.client_host.clone_from(&request.client_host);
        self.session_timeout_ms = request.session_timeout_ms;
        self.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.protocols.clone_from(&request.protocols);
    }

    fn session_expired(&self, now_ms: i64) -> bool {
        // A member with a request in flight is alive: Kafka keeps members awaiting a join or
        // a sync response.
        self.join_token.is_none()
            && self.sync_token.is_none()
            && now_ms >= self.last_heartbeat_ms + i64::from(self.session_timeout_ms)
    }
}

fn protocols_bytes(protocols: &[Protocol]) -> usize {
    protocols
        .iter()
        .map(|protocol| protocol.name.len() + protocol.metadata.len())
        .sum()
}

/// One group: membership, generation, and its committed offsets.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) group_id: String,
    pub(super) state: GroupState,
    /// When the group entered its state; -1 when unknown (restored from an old record). The
    /// retention clock of an empty group starts here.
    pub(super) state_since_ms: i64,
    pub(super) generation_id: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol_name: Option<String>,
    leader_id: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pub(super) pending_members: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    initial_delay_until_ms: i64,
    sync_deadline_ms: i64,
    next_join_order: u64,
    pub(super) offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Commits prepared but not yet durable, per partition (how many): they are not visible to
    /// OffsetFetch, not expired, and a delete writes tombstones for them too.
    pub(super) pending_commits: HashMap<(String, i32), u32>,
    /// The leader's assignment of the current generation while its record is being written.
    pending_assignment: Option<HashMap<String, Bytes>>,
    /// Static members whose new member id is being written: new id -> previous incarnation.
    pending_static: HashMap<String, Member>,
}

impl Group {
    pub(super) fn new(group_id: &str, now_ms: i64) -> Self {
        Self {
            group_id: group_id.to_owned(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            sync_deadline_ms: 0,
            next_join_order: 0,
            offsets: BTreeMap::new(),
            pending_commits: HashMap::new(),
            pending_assignment: None,
            pending_static: HashMap::new(),
        }
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    fn size(&self) -> usize {
        self.members.len() + self.pending_members.len()
    }

    fn bytes(&self) -> usize {
        self.members.values().map(Member::bytes).sum()
    }

    /// The member's protocol type matches and it offers a protocol every other member offers.
    fn is_consistent(&self, request: &JoinRequest) -> bool {
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|member| member.member_id != request.member_id)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return false;
        }
        request.protocols.iter().any(|protocol| {
            others.iter().all(|member| {
                member
                    .protocols
                    .iter()
                    .any(|offered| offered.name == protocol.name)
            })
        })
    }

    /// Whether `member_id` may speak for `group_instance_id` (KIP-345 fencing).
    pub(super) fn check_instance(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        match group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(owner) if owner == member_id => Ok(()),
                Some(_) => Err(GroupError::FencedInstanceId),
                None => Err(GroupError::UnknownMemberId),
            },
            None => Ok(()),
        }
    }

    /// The protocol most members prefer among those all members offer.
    fn select_protocol(&self) -> Option<String> {
        let mut by_order: Vec<&Member> = self.members.values().collect();
        by_order.sort_by_key(|member| member.join_order);
        let first = by_order.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|protocol| protocol.name.as_str())
            .filter(|name| {
                by_order
                    .iter()
                    .all(|member| member.protocols.iter().any(|offered| offered.name == *name))
            })
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for member in &by_order {
            let choice = member
                .protocols
                .iter()
                .find_map(|offered| candidates.iter().position(|name| *name == offered.name));
            if let Some(index) = choice {
                votes[index] += 1;
            }
        }
        // Ties go to the earliest candidate in the first member's order.
        let mut best: Option<usize> = None;
        for (index, count) in votes.iter().enumerate() {
            if best.is_none_or(|current| *count > votes[current]) {
                best = Some(index);
            }
        }
        best.map(|index| candidates[index].to_owned())
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(member_id) {
            self.leader_id = None;
        }
        Some(member)
    }

    /// Remove a member and answer whatever it had parked.
    fn evict(&mut self, member_id: &str, error: GroupError, effects: &mut Vec<Effect>) {
        if let Some(member) = self.remove_member(member_id) {
            answer_parked(&member, error, effects);
        }
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|member| i64::from(member.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, limits: &GroupLimits, now_ms: i64, effects: &mut Vec<Effect>) {
        // An assignment still being written is void: this generation will not become stable.
        self.pending_assignment = None;
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(token) = member.sync_token.take() {
                    let response = SyncResponse::error(GroupError::RebalanceInProgress);
                    effects.push(Effect::Sync { token, response });
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.set_state(GroupState::PreparingRebalance, now_ms);
        let rebalance_timeout_ms = self.rebalance_timeout_ms();
        self.rebalance_deadline_ms = now_ms + rebalance_timeout_ms;
        self.initial_delay_until_ms = if was_empty {
            now_ms + limits.initial_rebalance_delay_ms.min(rebalance_timeout_ms)
        } else {
            now_ms
        };
        self.try_complete_join(now_ms, effects);
    }

    fn try_complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending_members.is_empty()
            && self
                .members
                .values()
                .all(|member| member.join_token.is_some());
        let delay_over = now_ms >= self.initial_delay_until_ms;
        if (all_joined && delay_over) || now_ms >= self.rebalance_deadline_ms {
            self.complete_join(now_ms, effects);
        }
    }

    fn complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        // Dynamic members that did not rejoin in time are out; static ones keep their place.
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|member| member.join_token.is_none() && member.group_instance_id.is_none())
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in missing {
            self.remove_member(&member_id);
        }
        self.pending_members.clear();
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader_id = None;
            self.set_state(GroupState::Empty, now_ms);
            self.store(StorePurpose::Update, effects);
            return;
        }
        self.protocol_name = self.select_protocol();
        self.elect_leader();
        self.set_state(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline_ms = now_ms + self.rebalance_timeout_ms();
        let everyone = self.join_members();
        let leader = self.leader_id.clone().unwrap_or_default();
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            member.synced = false;
            member.last_heartbeat_ms = now_ms;
            let Some(token) = member.join_token.take() else {
                continue;
            };
            let members = if member.member_id == leader {
                everyone.clone()
            } else {
                Vec::new()
            };
            let response = JoinResponse {
                error: None,
                generation_id: self.generation_id,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: leader.clone(),
                skip_assignment: false,
                member_id: member.member_id.clone(),
                members,
            };
            effects.push(Effect::Join { token, response });
        }
    }

    /// Keep the leader if it rejoined; otherwise the earliest member that did (or any).
    fn elect_leader(&mut self) {
        let leader_joined = self
            .leader_id
            .as_ref()
            .and_then(|id| self.members.get(id))
            .is_some_and(|member| member.join_token.is_some());
        if leader_joined {
            return;
        }
        let joined = self
            .members
            .values()
            .filter(|member| member.join_token.is_some())
            .min_by_key(|member| member.join_order);
        let any = self.members.values().min_by_key(|member| member.join_order);
        self.leader_id = joined.or(any).map(|member| member.member_id.clone());
    }

    fn join_members(&self) -> Vec<JoinMember> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|member| member.join_order);
        members
            .into_iter()
            .map(|member| JoinMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                metadata: member.metadata_for(self.protocol_name.as_deref()),
            })
            .collect()
    }

    /// The answer for a member that rejoins without changing anything: the current generation.
    fn current_generation_response(&self, member_id: &str, skip_assignment: bool) -> JoinResponse {
        let members = if self.is_leader(member_id) {
            self.join_members()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            skip_assignment,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn new_member(&mut self, request: &JoinRequest, member_id: String, now_ms: i64) -> Member {
        let join_order = self.next_join_order;
        self.next_join_order += 1;
        Member {
            member_id,
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols.clone(),
            assignment: Bytes::new(),
            last_heartbeat_ms: now_ms,
            join_token: None,
            sync_token: None,
            synced: false,
            join_order,
        }
    }

    fn check_room(&self, limits: &GroupLimits, request: &JoinRequest) -> Result<(), GroupError> {
        if self.size() >= limits.members_per_group_max {
            return Err(GroupError::GroupMaxSizeReached);
        }
        if self.bytes() + protocols_bytes(&request.protocols) > limits.group_bytes_max {
            return Err(GroupError::GroupMaxSizeReached);
        }
        Ok(())
    }

    fn add_member_and_rebalance(
        &mut self,
        limits: &GroupLimits,
        token: RequestToken,
        request: &JoinRequest,
        member_id: String,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let mut member = self.new_member(request, member_id.clone(), now_ms);
        member.join_token = Some(token);
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        self.members.insert(member_id, member);
        if self.state == GroupState::PreparingRebalance {
            // A new member during the first rebalance's delay extends it (group.initial.rebalance.delay.ms).
            if now_ms < self.initial_delay_until_ms {
                self.initial_delay_until_ms =
                    (now_ms + limits.initial_rebalance_delay_ms).min(self.rebalance_deadline_ms);
            }
            self.try_complete_join(now_ms, effects);
        } else {
            self.prepare_rebalance(limits, now_ms, effects);
        }
    }

    fn join_unknown_member(
        &mut self,
        limits: &GroupLimits,
        token: RequestToken,
        request: &JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        if let Some(instance) = &request.group_instance_id {
            if let Some(old_id) = self.static_members.get(instance).cloned() {
                self.rejoin_static(limits, token, request, &old_id, now_ms, effects);
                return Ok(());
            }
        }
        self.check_room(limits, request)?;
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        let member_id = generate_member_id(prefix);
        if request.require_known_member_id && request.group_instance_id.is_none() {
            let deadline_ms = now_ms + i64::from(request.session_timeout_ms);
            self.pending_members.insert(member_id.clone(), deadline_ms);
            let response = JoinResponse::error(GroupError::MemberIdRequired, &member_id);
            effects.push(Effect::Join { token, response });
            return Ok(());
        }
        self.add_member_and_rebalance(limits, token, request, member_id, now_ms, effects);
        Ok(())
    }

    /// KIP-345: a static member restarting gets a new member id; the old one is fenced. In a
    /// stable group with unchanged protocols it keeps its assignment and no rebalance happens.
    fn rejoin_static(
        &mut self,
        limits: &GroupLimits,
        token: RequestToken,
        request: &JoinRequest,
        old_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let was_leader = self.is_leader(old_id);
        let Some(mut member) = self.remove_member(old_id) else {
            debug_assert!(false, "static member map names a missing member");
            return;
        };
        answer_parked(&member, GroupError::FencedInstanceId, effects);
        member.join_token = None;
        member.sync_token = None;
        let previous = member.clone();
        let protocols_changed = member.protocols != request.protocols;
        let new_id = generate_member_id(request.group_instance_id.as_deref().unwrap_or_default());
        member.member_id.clone_from(&new_id);
        member.update(request);
        member.last_heartbeat_ms = now_ms;
        if let Some(instance) = &request.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if was_leader {
            self.leader_id = Some(new_id.clone());
        }
        member.join_token = Some(token);
        if self.state == GroupState::Stable && !protocols_changed {
            // No rebalance: the new member id is written first and the join answered then
            // (see `store_completed`); the parked token keeps the member alive meanwhile.
            self.members.insert(new_id.clone(), member);
            self.pending_static.insert(new_id.clone(), previous);
            self.store(StorePurpose::StaticRejoin { member_id: new_id }, effects);
            return;
        }
        self.members.insert(new_id, member);
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now_ms, effects);
        } else {
            self.prepare_rebalance(limits, now_ms, effects);
        }
    }

    fn join_known_member(
        &mut self,
        limits: &GroupLimits,
        token: RequestToken,
        request: &JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        let member_id = request.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            // The second join of KIP-394: the id we handed out is now a member.
            if self.bytes() + protocols_bytes(&request.protocols) > limits.group_bytes_max {
                return Err(GroupError::GroupMaxSizeReached);
            }
            self.add_member_and_rebalance(limits, token, request, member_id, now_ms, effects);
            return Ok(());
        }
        self.check_instance(&member_id, request.group_instance_id.as_deref())?;
        let Some(member) = self.members.get(&member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let growth = protocols_bytes(&request.protocols);
        if self.bytes() - protocols_bytes(&member.protocols) + growth > limits.group_bytes_max {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let unchanged = member.protocols == request.protocols;
        let rejoin_answers_now = match self.state {
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => false,
            GroupState::CompletingRebalance => unchanged,
            // The leader rejoining a stable group asks for a new assignment (metadata changed).
            GroupState::Stable => unchanged && !self.is_leader(&member_id),
        };
        if rejoin_answers_now {
            let response = self.current_generation_response(&member_id, false);
            effects.push(Effect::Join { token, response });
            return Ok(());
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        member.update(request);
        if let Some(previous) = member.join_token.replace(token) {
            let response = JoinResponse::error(GroupError::RebalanceInProgress, &member_id);
            effects.push(Effect::Join {
                token: previous,
                response,
            });
        }
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now_ms, effects);
        } else {
            self.prepare_rebalance(limits, now_ms, effects);
        }
        Ok(())
    }

    fn sync(
        &mut self,
        limits: &GroupLimits,
        token: RequestToken,
        request: &SyncRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.check_instance(&request.member_id, request.group_instance_id.as_deref())?;
        if !self.members.contains_key(&request.member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if request.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let type_mismatch = request
            .protocol_type
            .as_ref()
            .is_some_and(|name| Some(name) != self.protocol_type.as_ref());
        let name_mismatch = request
            .protocol_name
            .as_ref()
            .is_some_and(|name| Some(name) != self.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                let response = self.sync_success(&request.member_id, now_ms);
                effects.push(Effect::Sync { token, response });
                Ok(())
            }
            GroupState::CompletingRebalance => {
                self.sync_completing(limits, token, request, now_ms, effects)
            }
        }
    }

    fn sync_success(&mut self, member_id: &str, now_ms: i64) -> SyncResponse {
        let protocol_type = self.protocol_type.clone();
        let protocol_name = self.protocol_name.clone();
        let Some(member) = self.members.get_mut(member_id) else {
            return SyncResponse::error(GroupError::UnknownMemberId);
        };
        member.synced = true;
        member.last_heartbeat_ms = now_ms;
        SyncResponse {
            error: None,
            protocol_type,
            protocol_name,
            assignment: member.assignment.clone(),
        }
    }

    /// Followers wait; the leader's assignment makes the group stable and answers everyone.
    fn sync_completing(
        &mut self,
        limits: &GroupLimits,
        token: RequestToken,
        request: &SyncRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        let is_leader = self.is_leader(&request.member_id);
        if is_leader {
            let total: usize = request
                .assignments
                .iter()
                .map(|(_, bytes)| bytes.len())
                .sum();
            let too_big = request
                .assignments
                .iter()
                .any(|(_, bytes)| bytes.len() > limits.assignment_bytes_max);
            if too_big || self.bytes() + total > limits.group_bytes_max {
                return Err(GroupError::InvalidRequest);
            }
        }
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        member.synced = true;
        member.last_heartbeat_ms = now_ms;
        if let Some(previous) = member.sync_token.replace(token) {
            let response = SyncResponse::error(GroupError::RebalanceInProgress);
            effects.push(Effect::Sync {
                token: previous,
                response,
            });
        }
        if !is_leader || self.pending_assignment.is_some() {
            // Followers wait for the leader; a repeated leader sync waits for the write.
            return Ok(());
        }
        // Members the leader left out get an empty assignment; ids that are not members are
        // ignored. The assignment is the group's only once its record is durable.
        let assignments: HashMap<String, Bytes> = request
            .assignments
            .iter()
            .filter(|(member_id, _)| self.members.contains_key(member_id))
            .map(|(member_id, bytes)| (member_id.clone(), bytes.clone()))
            .collect();
        let record = self.record_with(|member| {
            assignments
                .get(&member.member_id)
                .cloned()
                .unwrap_or_default()
        });
        self.pending_assignment = Some(assignments);
        effects.push(Effect::StoreGroup {
            group_id: self.group_id.clone(),
            record,
            purpose: StorePurpose::Assignment {
                generation_id: self.generation_id,
            },
        });
        Ok(())
    }

    /// The leader's assignment is durable (or failed to be): see [`StorePurpose::Assignment`].
    fn assignment_stored(
        &mut self,
        limits: &GroupLimits,
        generation_id: i32,
        result: Result<(), GroupError>,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let current =
            self.state == GroupState::CompletingRebalance && self.generation_id == generation_id;
        if !current {
            // A rebalance overtook the write; the new generation stores its own assignment.
            return;
        }
        let Some(mut assignments) = self.pending_assignment.take() else {
            return;
        };
        if let Err(error) = result {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(token) = member.sync_token.take() {
                    let response = SyncResponse::error(error);
                    effects.push(Effect::Sync { token, response });
                }
            }
            self.prepare_rebalance(limits, now_ms, effects);
            return;
        }
        for member in self.members.values_mut() {
            member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
        }
        self.set_state(GroupState::Stable, now_ms);
        for member in self.members.values_mut() {
            if let Some(token) = member.sync_token.take() {
                let response = SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                effects.push(Effect::Sync { token, response });
            }
        }
    }

    /// A static member's new id is durable (or failed to be): see [`StorePurpose::StaticRejoin`].
    fn static_rejoin_stored(
        &mut self,
        member_id: &str,
        result: Result<(), GroupError>,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(mut previous) = self.pending_static.remove(member_id) else {
            return;
        };
        if self.state != GroupState::Stable {
            // A rebalance started meanwhile: the parked join is answered when it completes,
            // and that generation's record names the new id.
            return;
        }
        let Some(token) = self
            .members
            .get_mut(member_id)
            .and_then(|member| member.join_token.take())
        else {
            return;
        };
        if let Err(error) = result {
            // Kafka's revert: the previous incarnation is the member again.
            let response = JoinResponse::error(error, member_id);
            effects.push(Effect::Join { token, response });
            let was_leader = self.is_leader(member_id);
            self.remove_member(member_id);
            if let Some(instance) = &previous.group_instance_id {
                self.static_members
                    .insert(instance.clone(), previous.member_id.clone());
            }
            if was_leader {
                self.leader_id = Some(previous.member_id.clone());
            }
            previous.last_heartbeat_ms = now_ms;
            self.members.insert(previous.member_id.clone(), previous);
            return;
        }
        let is_leader = self.is_leader(member_id);
        let response = self.current_generation_response(member_id, is_leader);
        effects.push(Effect::Join { token, response });
    }

    /// Emits the group's current record for `purpose`.
    fn store(&self, purpose: StorePurpose, effects: &mut Vec<Effect>) {
        effects.push(Effect::StoreGroup {
            group_id: self.group_id.clone(),
            record: self.record(),
            purpose,
        });
    }

    fn heartbeat(&mut self, request: &HeartbeatRequest, now_ms: i64) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.check_instance(&request.member_id, request.group_instance_id.as_deref())?;
        if !self.members.contains_key(&request.member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if request.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if let Some(member) = self.members.get_mut(&request.member_id) {
            member.last_heartbeat_ms = now_ms;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    fn leave_one(
        &mut self,
        leaving: &LeaveMember,
        effects: &mut Vec<Effect>,
    ) -> Option<GroupError> {
        let member_id = match &leaving.group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => return Some(GroupError::UnknownMemberId),
                Some(owner) if !leaving.member_id.is_empty() && *owner != leaving.member_id => {
                    return Some(GroupError::FencedInstanceId);
                }
                Some(owner) => owner.clone(),
            },
            None => leaving.member_id.clone(),
        };
        if self.pending_members.remove(&member_id).is_some() {
            return None;
        }
        if !self.members.contains_key(&member_id) {
            return Some(GroupError::UnknownMemberId);
        }
        self.evict(&member_id, GroupError::UnknownMemberId, effects);
        None
    }

    /// A member left or died: the others must rebalance.
    fn after_membership_loss(
        &mut self,
        limits: &GroupLimits,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(limits, now_ms, effects)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, effects),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn tick(&mut self, limits: &GroupLimits, now_ms: i64, effects: &mut Vec<Effect>) {
        let pending_before = self.pending_members.len();
        self.pending_members
            .retain(|_, deadline_ms| *deadline_ms > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| member.session_expired(now_ms))
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in &expired {
            self.evict(member_id, GroupError::UnknownMemberId, effects);
        }
        if !expired.is_empty() {
            self.after_membership_loss(limits, now_ms, effects);
        } else if self.pending_members.len() != pending_before {
            self.try_complete_join(now_ms, effects);
        }
        self.try_complete_join(now_ms, effects);
        let awaiting_sync = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if awaiting_sync && now_ms >= self.sync_deadline_ms {
            let unsynced: Vec<String> = self
                .members
                .values()
                .filter(|member| !member.synced)
                .map(|member| member.member_id.clone())
                .collect();
            for member_id in &unsynced {
                self.evict(member_id, GroupError::UnknownMemberId, effects);
            }
            if !unsynced.is_empty() {
                self.after_membership_loss(limits, now_ms, effects);
            }
        }
    }

    fn describe(&self) -> GroupDescription {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|member| member.join_order);
        GroupDescription {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol_name.clone().unwrap_or_default(),
            members: members
                .into_iter()
                .map(|member| MemberDescription {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    metadata: member.metadata_for(self.protocol_name.as_deref()),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    fn record(&self) -> GroupMetadataValue {
        self.record_with(|member| member.assignment.clone())
    }

    /// The group's record with each member's assignment given by `assignment`.
    fn record_with(&self, assignment: impl Fn(&Member) -> Bytes) -> GroupMetadataValue {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|member| member.join_order);
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_since_ms,
            members: members
                .into_iter()
                .map(|member| MemberMetadataValue {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    subscription: member.metadata_for(self.protocol_name.as_deref()),
                    assignment: assignment(member),
                })
                .collect(),
        }
    }

    /// Rebuild membership from a stored record (startup). Members get a fresh session from `now_ms`.
    fn restore(&mut self, value: &GroupMetadataValue, now_ms: i64) {
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.generation_id = value.generation;
        self.protocol_type = (!value.protocol_type.is_empty()).then(|| value.protocol_type.clone());
        self.protocol_name.clone_from(&value.protocol);
        self.leader_id.clone_from(&value.leader);
        for stored in &value.members {
            let join_order = self.next_join_order;
            self.next_join_order += 1;
            let protocols = value
                .protocol
                .iter()
                .map(|name| Protocol {
                    name: name.clone(),
                    metadata: stored.subscription.clone(),
                })
                .collect();
            let member = Member {
                member_id: stored.member_id.clone(),
                group_instance_id: stored.group_instance_id.clone(),
                client_id: stored.client_id.clone(),
                client_host: stored.client_host.clone(),
                session_timeout_ms: stored.session_timeout_ms,
                rebalance_timeout_ms: stored.rebalance_timeout_ms,
                protocols,
                assignment: stored.assignment.clone(),
                last_heartbeat_ms: now_ms,
                join_token: None,
                sync_token: None,
                synced: true,
                join_order,
            };
            if let Some(instance) = &member.group_instance_id {
                self.static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
            self.members.insert(member.member_id.clone(), member);
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        // The stored time keeps an empty group's retention clock running across restarts.
        self.state_since_ms = value.current_state_timestamp_ms.max(-1);
    }
}

fn answer_parked(member: &Member, error: GroupError, effects: &mut Vec<Effect>) {
    if let Some(token) = member.join_token {
        let response = JoinResponse::error(error, &member.member_id);
        effects.push(Effect::Join { token, response });
    }
    if let Some(token) = member.sync_token {
        effects.push(Effect::Sync {
            token,
            response: SyncResponse::error(error),
        });
    }
}

/// Kafka's shape: `<client id or instance id>-<uuid>`.
fn generate_member_id(prefix: &str) -> String {
    let mut end = prefix.len().min(MEMBER_ID_PREFIX_BYTES_MAX);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{}", &prefix[..end], uuid::Uuid::new_v4())
}

/// All groups of one coordinator (one `__consumer_offsets` partition set on one shard).
#[derive(Debug)]
pub struct GroupCoordinator {
    pub(super) limits: GroupLimits,
    pub(super) groups: HashMap<String, Group>,
}

impl GroupCoordinator {
    pub fn new(limits: GroupLimits) -> Self {
        Self {
            limits,
            groups: HashMap::new(),
        }
    }

    pub fn limits(&self) -> &GroupLimits {
        &self.limits
    }

    /// JoinGroup. The answer for `token` comes as an [`Effect::Join`], now or from a later call.
    pub fn join(&mut self, token: RequestToken, request: JoinRequest, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Err(error) = self.join_inner(token, &request, now_ms, &mut effects) {
            let response = JoinResponse::error(error, &request.member_id);
            effects.push(Effect::Join { token, response });
        }
        effects
    }

    fn join_inner(
        &mut self,
        token: RequestToken,
        request: &JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        self.validate_join(request)?;
        let known_member = !request.member_id.is_empty();
        if !self.groups.contains_key(&request.group_id) {
            if known_member {
                return Err(GroupError::UnknownMemberId);
            }
            self.create_group(&request.group_id, now_ms)?;
        }
        let limits = &self.limits;
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        if group.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !group.is_consistent(request) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if known_member {
            group.join_known_member(limits, token, request, now_ms, effects)
        } else {
            group.join_unknown_member(limits, token, request, now_ms, effects)
        }
    }

    pub(super) fn create_group(&mut self, group_id: &str, now_ms: i64) -> Result<(), GroupError> {
        if self.groups.len() >= self.limits.groups_max {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.groups
            .insert(group_id.to_owned(), Group::new(group_id, now_ms));
        Ok(())
    }

    pub(super) fn validate_group_id(&self, group_id: &str) -> Result<(), GroupError> {
        if group_id.is_empty() || group_id.len() > self.limits.id_bytes_max {
            return Err(GroupError::InvalidGroupId);
        }
        Ok(())
    }

    fn validate_join(&self, request: &JoinRequest) -> Result<(), GroupError> {
        let limits = &self.limits;
        self.validate_group_id(&request.group_id)?;
        let session = request.session_timeout_ms;
        if session < limits.session_timeout_min_ms || session > limits.session_timeout_max_ms {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if request.rebalance_timeout_ms <= 0 {
            return Err(GroupError::InvalidRequest);
        }
        let ids_too_long = request.member_id.len() > limits.id_bytes_max
            || request.client_id.len() > limits.id_bytes_max
            || request.client_host.len() > limits.id_bytes_max
            || request.protocol_type.len() > limits.id_bytes_max
            || request
                .group_instance_id
                .as_ref()
                .is_some_and(|id| id.is_empty() || id.len() > limits.id_bytes_max)
            || request
                .protocols
                .iter()
                .any(|protocol| protocol.name.len() > limits.id_bytes_max);
        if ids_too_long {
            return Err(GroupError::InvalidRequest);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if request.protocols.len() > limits.protocols_per_member_max
            || protocols_bytes(&request.protocols) > limits.member_metadata_bytes_max
        {
            return Err(GroupError::InvalidRequest);
        }
        Ok(())
    }

    /// SyncGroup. The answer for `token` comes as an [`Effect::Sync`], now or later.
    pub fn sync(&mut self, token: RequestToken, request: SyncRequest, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let result = match self.groups.get_mut(&request.group_id) {
            None => Err(GroupError::UnknownMemberId),
            Some(group) => group.sync(&self.limits, token, &request, now_ms, &mut effects),
        };
        if let Err(error) = result {
            effects.push(Effect::Sync {
                token,
                response: SyncResponse::error(error),
            });
        }
        effects
    }

    /// Heartbeat: answered at once.
    pub fn heartbeat(&mut self, request: &HeartbeatRequest, now_ms: i64) -> Result<(), GroupError> {
        match self.groups.get_mut(&request.group_id) {
            None => Err(GroupError::UnknownMemberId),
            Some(group) => group.heartbeat(request, now_ms),
        }
    }

    /// LeaveGroup (batched, v3+). Leaving members trigger a rebalance at once.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[LeaveMember],
        now_ms: i64,
    ) -> (LeaveResponse, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            let results = members
                .iter()
                .map(|member| {
                    let error = Some(GroupError::UnknownMemberId);
                    (
                        member.member_id.clone(),
                        member.group_instance_id.clone(),
                        error,
                    )
                })
                .collect();
            let response = LeaveResponse {
                error: None,
                members: results,
            };
            return (response, effects);
        };
        if group.state == GroupState::Dead {
            let response = LeaveResponse {
                error: Some(GroupError::CoordinatorNotAvailable),
                members: Vec::new(),
            };
            return (response, effects);
        }
        let mut results = Vec::with_capacity(members.len());
        let mut removed_any = false;
        for leaving in members {
            let error = group.leave_one(leaving, &mut effects);
            removed_any |= error.is_none();
            let member_id = leaving.member_id.clone();
            results.push((member_id, leaving.group_instance_id.clone(), error));
        }
        if removed_any {
            group.after_membership_loss(&self.limits, now_ms, &mut effects);
        }
        let response = LeaveResponse {
            error: None,
            members: results,
        };
        (response, effects)
    }

    /// Expire sessions, pending member ids, rebalance and sync deadlines; drop groups left
    /// with nothing. Call it from a timer (every few hundred ms is enough).
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for group in self.groups.values_mut() {
            group.tick(&self.limits, now_ms, &mut effects);
        }
        // Groups that never stored anything and hold nothing go without a tombstone.
        self.groups.retain(|_, group| {
            !(group.state == GroupState::Empty
                && group.members.is_empty()
                && group.pending_members.is_empty()
                && group.offsets.is_empty()
                && group.pending_commits.is_empty()
                && group.generation_id == 0)
        });
        effects
    }

    /// A group record written for an [`Effect::StoreGroup`] is durable (`Ok`) or failed: apply
    /// or undo what waited for it. Call in the order the effects were emitted.
    pub fn store_completed(
        &mut self,
        group_id: &str,
        purpose: &StorePurpose,
        result: Result<(), GroupError>,
        now_ms: i64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return effects;
        };
        match purpose {
            StorePurpose::Update => {}
            StorePurpose::Assignment { generation_id } => {
                group.assignment_stored(&self.limits, *generation_id, result, now_ms, &mut effects)
            }
            StorePurpose::StaticRejoin { member_id } => {
                group.static_rejoin_stored(member_id, result, now_ms, &mut effects)
            }
        }
        effects
    }

    /// Takes over every group of `loaded` (a coordinator that just replayed one
    /// `__consumer_offsets` partition). Their members' sessions start at `now_ms`. Groups were
    /// loaded from disk, so `groups_max` does not apply to them.
    pub fn absorb(&mut self, loaded: GroupCoordinator, now_ms: i64) {
        for (group_id, mut group) in loaded.groups {
            for member in group.members.values_mut() {
                member.last_heartbeat_ms = now_ms;
            }
            debug_assert!(
                !self.groups.contains_key(&group_id),
                "a loading partition's group was created before its load finished"
            );
            self.groups.entry(group_id).or_insert(group);
        }
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.groups.get(group_id).map(Group::describe)
    }

    /// ListGroups; `states` empty means every state.
    pub fn list(&self, states: &[GroupState]) -> Vec<GroupListing> {
        let mut listings: Vec<GroupListing> = self
            .groups
            .values()
            .filter(|group| states.is_empty() || states.contains(&group.state))
            .map(|group| GroupListing {
                group_id: group.group_id.clone(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                state: group.state,
            })
            .collect();
        listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listings
    }

    /// The group's metadata record as it stands.
    pub fn group_record(&self, group_id: &str) -> Option<GroupMetadataValue> {
        self.groups.get(group_id).map(Group::record)
    }

    /// Rebuild a group from its latest stored record (loading `__consumer_offsets`).
    pub fn restore_group(
        &mut self,
        group_id: &str,
        value: &GroupMetadataValue,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.validate_group_id(group_id)?;
        self.groups
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id, now_ms))
            .restore(value, now_ms);
        Ok(())
    }
}
