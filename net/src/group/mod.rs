//! The classic consumer-group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) and
//! committed offsets, as a plain synchronous state machine.
//!
//! Modelled on Kafka's classic `GroupCoordinator` / `GroupMetadata`: a group moves through
//! `Empty -> PreparingRebalance -> CompletingRebalance -> Stable` (and `Dead` once deleted);
//! KIP-394 (a first join without a member id gets MEMBER_ID_REQUIRED and a generated id) and
//! KIP-345 (static members, `group.instance.id`) are followed.
//!
//! What this module must not know about: sockets, shards, clocks, the log. Time comes in as
//! `now_ms` arguments; requests that Kafka parks (JoinGroup until the rebalance completes,
//! SyncGroup until the leader's assignment) carry a caller-chosen [`RequestToken`], and every
//! call returns [`Effect`]s saying which parked requests to answer with what. The caller (the
//! coordinator shard, owner of partition hash(group) of `__consumer_offsets`) keeps the
//! responders keyed by token, drives [`GroupCoordinator::tick`] from a timer, and persists
//! group/offset records (see [`records`]) before answering.
//!
//! Apply after append: a change that must be durable is split in two. `prepare_*` validates
//! (fencing, limits) and returns what to write without changing what readers see; the caller
//! writes the records and then calls `complete_*` with the write's result, which applies the
//! change only if the write succeeded. Group metadata works the same way through
//! [`Effect::StoreGroup`] and [`GroupCoordinator::store_completed`]: the leader's assignment
//! becomes the group's (and SyncGroups are answered) only once its record is durable. The
//! caller must complete writes in the order it prepared them (one FIFO per `__consumer_offsets`
//! partition), so memory and the log agree on the last word for every key.
//!
//! One `GroupCoordinator` lives on one shard and is used by one task at a time (`&mut self`).
//! Everything is bounded by [`GroupLimits`].

mod coordinator;
mod offsets;
pub mod records;
#[cfg(test)]
mod tests;

pub use coordinator::GroupCoordinator;
pub use offsets::{
    CommitPartition, CommitRequest, CommittedOffset, FetchedOffset, PendingCommit,
    PendingOffsetDelete, PendingRemoval, OFFSET_NONE, RETENTION_TIME_DEFAULT,
};

use bytes::Bytes;
use records::GroupMetadataValue;

/// Caller-chosen id of a parked JoinGroup/SyncGroup request; returned in [`Effect`]s.
pub type RequestToken = u64;

/// Limits on what clients can make the coordinator hold.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    /// `group.max.size`: members (including those holding a MEMBER_ID_REQUIRED id) per group.
    pub members_per_group_max: usize,
    /// Groups held by one coordinator; more get COORDINATOR_NOT_AVAILABLE (retriable).
    pub groups_max: usize,
    /// Bytes of all protocol metadata one member may send in a JoinGroup.
    pub member_metadata_bytes_max: usize,
    /// Protocols (assignors) one member may offer.
    pub protocols_per_member_max: usize,
    /// Bytes of one member's assignment in the leader's SyncGroup.
    pub assignment_bytes_max: usize,
    /// Bytes of metadata + assignments one group may hold (its metadata record must stay small).
    pub group_bytes_max: usize,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    /// Committed partitions per group.
    pub offsets_per_group_max: usize,
    /// Longest group id / member id / instance id / protocol name accepted.
    pub id_bytes_max: usize,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub session_timeout_min_ms: i32,
    pub session_timeout_max_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members.
    pub initial_rebalance_delay_ms: i64,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            members_per_group_max: 1000,
            groups_max: 10_000,
            member_metadata_bytes_max: 1 << 20,
            protocols_per_member_max: 64,
            assignment_bytes_max: 1 << 20,
            group_bytes_max: 32 << 20,
            offset_metadata_bytes_max: 4096,
            offsets_per_group_max: 100_000,
            id_bytes_max: 1024,
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
        }
    }
}

/// Errors a client can cause; each maps to a Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("the coordinator is loading its groups")]
    CoordinatorLoadInProgress,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("too many committed offsets in the group")]
    InvalidCommitOffsetSize,
    #[error("invalid request (a size limit was exceeded)")]
    InvalidRequest,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("member id required")]
    MemberIdRequired,
    #[error("group max size reached")]
    GroupMaxSizeReached,
    #[error("fenced instance id")]
    FencedInstanceId,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
}

impl GroupError {
    pub fn code(self) -> i16 {
        match self {
            GroupError::UnknownTopicOrPartition => 3,
            GroupError::OffsetMetadataTooLarge => 12,
            GroupError::CoordinatorLoadInProgress => 14,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::InvalidCommitOffsetSize => 28,
            GroupError::InvalidRequest => 42,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::FencedInstanceId => 82,
            GroupError::GroupSubscribedToTopic => 86,
        }
    }
}

/// Error code of an optional error (0 = none).
pub fn error_code(error: Option<GroupError>) -> i16 {
    error.map_or(0, GroupError::code)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups / ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One assignor a member offers, with its subscription metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty on a first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: pass the session timeout.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a first join without member id gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// KIP-814: a static leader rejoining a stable group must not reassign. Before JoinGroup
    /// v9 the wiring should send `members` empty in that case.
    pub skip_assignment: bool,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    pub fn error(error: GroupError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+; checked when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment (member id, bytes); empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Zero-length when the member got nothing (or on error).
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: GroupError) -> Self {
        Self {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member named in a LeaveGroup (v3+ batches several; before v3 one, with no instance id).
#[derive(Debug, Clone)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResponse {
    /// Top-level error (the group is unknown); per-member results are then empty.
    pub error: Option<GroupError>,
    /// (member id, instance id, error) in request order.
    pub members: Vec<(String, Option<String>, Option<GroupError>)>,
}

/// What the caller must do after a call into the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer the parked (or just received) JoinGroup `token`.
    Join {
        token: RequestToken,
        response: JoinResponse,
    },
    /// Answer the parked (or just received) SyncGroup `token`.
    Sync {
        token: RequestToken,
        response: SyncResponse,
    },
    /// Write `record` (the group's metadata) to `__consumer_offsets`, then call
    /// [`GroupCoordinator::store_completed`] with `purpose` and the write's result. Answers that
    /// depend on the write are held by the coordinator until then.
    StoreGroup {
        group_id: String,
        record: GroupMetadataValue,
        purpose: StorePurpose,
    },
}

/// Why a group record is written, and so what its completion does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorePurpose {
    /// The group emptied: nothing waits (a failed write is only logged, as in Kafka).
    Update,
    /// The leader's assignment of `generation_id`: once durable the group is Stable and the
    /// parked SyncGroups get their assignments; a failed write answers them with the error and
    /// the group rebalances.
    Assignment { generation_id: i32 },
    /// A static member rejoined a stable group as `member_id` (KIP-345): its JoinGroup is
    /// answered once durable; a failed write puts the previous incarnation back.
    StaticRejoin { member_id: String },
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the group's chosen protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}
