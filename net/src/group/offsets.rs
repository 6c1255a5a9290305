//! Committed offsets per group: OffsetCommit (generation and member fencing), OffsetFetch,
//! OffsetDelete, retention, and the records they map to.
//!
//! Every change is prepared (validated, nothing visible), written by the caller as
//! `OffsetCommitKey` / `OffsetCommitValue` records (see [`super::records`]) or tombstones, and
//! then completed with the write's result: only durable changes are ever visible to OffsetFetch.

use super::coordinator::{Group, GroupCoordinator};
use super::records::OffsetCommitValue;
use super::{GroupError, GroupLimits, GroupState};

/// The offset OffsetFetch returns for a partition with no commit.
pub const OFFSET_NONE: i64 = -1;

/// Kafka's longest topic name.
const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Set by OffsetCommit v2-v4 with a retention time: the offset expires then, whatever the
    /// group does (Kafka's pre-KIP-211 semantics for such commits).
    pub expire_timestamp_ms: Option<i64>,
}

impl CommittedOffset {
    /// The record value to persist for this commit.
    pub fn record(&self) -> OffsetCommitValue {
        OffsetCommitValue {
            offset: self.offset,
            leader_epoch: self.leader_epoch,
            metadata: self.metadata.clone(),
            commit_timestamp_ms: self.commit_timestamp_ms,
            expire_timestamp_ms: self.expire_timestamp_ms.unwrap_or(-1),
        }
    }
}

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// One partition of an OffsetFetch answer (offset -1 and empty metadata when never committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

impl Group {
    /// Kafka's classic checks: admin/simple commits (generation < 0) only to empty groups;
    /// otherwise the member must be in the group and on the current generation.
    fn validate_commit(
        &self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        self.check_instance(member_id, group_instance_id)?;
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Topics the group's consumers subscribe to, or `None` when unknown (not a consumer group,
    /// or metadata we cannot parse): then every topic counts as subscribed.
    fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let mut topics = Vec::new();
        for member in self.members.values() {
            let metadata = member.metadata_for(self.protocol_name.as_deref());
            topics.extend(parse_subscription_topics(&metadata)?);
        }
        Some(topics)
    }

    /// Checks one partition of a commit and reserves it (see `pending_commits`).
    fn reserve_commit(
        &mut self,
        limits: &GroupLimits,
        partition: &CommitPartition,
        expire_timestamp_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<((String, i32), CommittedOffset), GroupError> {
        let metadata = partition.metadata.clone().unwrap_or_default();
        if metadata.len() > limits.offset_metadata_bytes_max {
            return Err(GroupError::OffsetMetadataTooLarge);
        }
        let bad_topic = partition.topic.is_empty()
            || partition.topic.len() > TOPIC_NAME_BYTES_MAX
            || partition.partition < 0;
        if bad_topic {
            return Err(GroupError::UnknownTopicOrPartition);
        }
        let key = (partition.topic.clone(), partition.partition);
        let known = self.offsets.contains_key(&key) || self.pending_commits.contains_key(&key);
        let held = self.offsets.len() + self.pending_commits.len();
        if !known && held >= limits.offsets_per_group_max {
            return Err(GroupError::InvalidCommitOffsetSize);
        }
        *self.pending_commits.entry(key.clone()).or_insert(0) += 1;
        let committed = CommittedOffset {
            offset: partition.offset,
            leader_epoch: partition.leader_epoch,
            metadata,
            commit_timestamp_ms: now_ms,
            expire_timestamp_ms,
        };
        Ok((key, committed))
    }

    /// The committed partitions whose retention is over at `now_ms` (see
    /// [`GroupCoordinator::prepare_expiry`]).
    fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        // (whether the clock starts when the group became empty, topics that never expire)
        let (from_empty_since, subscribed) = match self.protocol_type.as_deref() {
            Some(_) if self.state == GroupState::Empty => (true, None),
            Some("consumer") if self.state == GroupState::Stable => {
                match self.subscribed_topics() {
                    Some(topics) => (false, Some(topics)),
                    None => return Vec::new(),
                }
            }
            Some(_) => return Vec::new(),
            None => (false, None),
        };
        self.offsets
            .iter()
            .filter(|(key, committed)| {
                if self.pending_commits.contains_key(*key) {
                    return false;
                }
                let (topic, _) = key;
                if subscribed
                    .as_ref()
                    .is_some_and(|topics| topics.iter().any(|name| name == topic))
                {
                    return false;
                }
                if let Some(expire_timestamp_ms) = committed.expire_timestamp_ms {
                    return now_ms >= expire_timestamp_ms;
                }
                let base_ms = if from_empty_since && self.state_since_ms >= 0 {
                    self.state_since_ms
                } else {
                    committed.commit_timestamp_ms
                };
                now_ms.saturating_sub(base_ms) >= retention_ms
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Marks the group Dead while its tombstones are written.
    fn begin_removal(&mut self, offsets: Vec<(String, i32)>) -> PendingRemoval {
        let empty_since_ms = self.state_since_ms;
        self.state = GroupState::Dead;
        PendingRemoval {
            group_id: self.group_id.clone(),
            offsets,
            remove_group: true,
            empty_since_ms,
        }
    }
}

impl GroupCoordinator {
    /// OffsetCommit, first half: fencing and limits. `Err` is a group-level error for every
    /// partition. Nothing is visible yet: the caller writes [`PendingCommit::accepted`] and then
    /// calls [`Self::complete_commit`]. A simple commit (generation < 0) to an unknown group
    /// creates it, as in Kafka.
    pub fn prepare_commit(
        &mut self,
        request: &CommitRequest,
        now_ms: i64,
    ) -> Result<PendingCommit, GroupError> {
        let group_id = request.group_id.as_str();
        self.validate_group_id(group_id)?;
        if !self.groups.contains_key(group_id) {
            if request.generation_id >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            self.create_group(group_id, now_ms)?;
        }
        let limits = &self.limits;
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        group.validate_commit(
            request.generation_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
        )?;
        // OffsetCommit v2-v4 `retention_time_ms`: -1 is the broker's retention.
        let expire_timestamp_ms = (request.retention_time_ms != RETENTION_TIME_DEFAULT)
            .then(|| now_ms.saturating_add(request.retention_time_ms));
        let mut pending = PendingCommit {
            group_id: group_id.to_owned(),
            results: Vec::with_capacity(request.partitions.len()),
            accepted: Vec::new(),
        };
        for partition in &request.partitions {
            let result = group.reserve_commit(limits, partition, expire_timestamp_ms, now_ms);
            match result {
                Ok(accepted) => {
                    pending.accepted.push(accepted);
                    pending.results.push(None);
                }
                Err(error) => pending.results.push(Some(error)),
            }
        }
        Ok(pending)
    }

    /// OffsetCommit, second half: `result` is the write's. Only a durable commit becomes
    /// visible; either way the reservation ends. Call in the order the commits were prepared.
    pub fn complete_commit(&mut self, pending: &PendingCommit, result: Result<(), GroupError>) {
        let Some(group) = self.groups.get_mut(&pending.group_id) else {
            debug_assert!(false, "a group with pending commits was removed");
            return;
        };
        for (key, committed) in &pending.accepted {
            if let Some(count) = group.pending_commits.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    group.pending_commits.remove(key);
                }
            }
            if result.is_ok() {
                group.offsets.insert(key.clone(), committed.clone());
            }
        }
    }

    /// The durable commit of one partition.
    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&CommittedOffset> {
        let group = self.groups.get(group_id)?;
        group.offsets.get(&(topic.to_owned(), partition))
    }

    /// OffsetFetch: the given partitions (missing ones get offset -1), or every committed one.
    /// Only durable commits are seen.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<FetchedOffset> {
        let group = self.groups.get(group_id);
        let fetched =
            |topic: &str, partition: i32, committed: Option<&CommittedOffset>| FetchedOffset {
                topic: topic.to_owned(),
                partition,
                offset: committed.map_or(OFFSET_NONE, |committed| committed.offset),
                leader_epoch: committed.map_or(-1, |committed| committed.leader_epoch),
                metadata: committed
                    .map(|committed| committed.metadata.clone())
                    .unwrap_or_default(),
            };
        match partitions {
            Some(wanted) => wanted
                .iter()
                .map(|(topic, partition)| {
                    let key = (topic.clone(), *partition);
                    let committed = group.and_then(|group| group.offsets.get(&key));
                    fetched(topic, *partition, committed)
                })
                .collect(),
            None => group
                .map(|group| {
                    group
                        .offsets
                        .iter()
                        .map(|((topic, partition), committed)| {
                            fetched(topic, *partition, Some(committed))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// OffsetDelete, first half. Partitions of topics an active consumer group subscribes to
    /// are refused; an active group of another protocol type is refused as a whole. The caller
    /// writes tombstones for [`PendingOffsetDelete::deleted`], then calls
    /// [`Self::complete_delete_offsets`].
    pub fn prepare_delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<PendingOffsetDelete, GroupError> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        if group.state == GroupState::Dead {
            return Err(GroupError::GroupIdNotFound);
        }
        let subscribed = if group.state == GroupState::Empty {
            Some(Vec::new())
        } else {
            match group.subscribed_topics() {
                Some(topics) => Some(topics),
                None if group.protocol_type.as_deref() == Some("consumer") => None,
                None => return Err(GroupError::NonEmptyGroup),
            }
        };
        let mut pending = PendingOffsetDelete {
            group_id: group_id.to_owned(),
            results: Vec::with_capacity(partitions.len()),
            deleted: Vec::new(),
        };
        for (topic, partition) in partitions {
            let is_subscribed = subscribed
                .as_ref()
                .is_none_or(|topics| topics.iter().any(|name| name == topic));
            if is_subscribed {
                pending
                    .results
                    .push(Some(GroupError::GroupSubscribedToTopic));
                continue;
            }
            pending.deleted.push((topic.clone(), *partition));
            pending.results.push(None);
        }
        Ok(pending)
    }

    /// OffsetDelete, second half: the tombstones are durable (`Ok`) or not.
    pub fn complete_delete_offsets(
        &mut self,
        pending: &PendingOffsetDelete,
        result: Result<(), GroupError>,
    ) {
        if result.is_err() {
            return;
        }
        if let Some(group) = self.groups.get_mut(&pending.group_id) {
            for key in &pending.deleted {
                group.offsets.remove(key);
            }
        }
    }

    /// DeleteGroups, first half: only empty groups. The group is Dead from now on (joins and
    /// commits get retriable errors) while the caller writes tombstones for every offset
    /// (committed or pending) and the group, then calls [`Self::complete_removal`].
    pub fn prepare_delete_group(&mut self, group_id: &str) -> Result<PendingRemoval, GroupError> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        match group.state {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty if group.pending_members.is_empty() => {}
            _ => return Err(GroupError::NonEmptyGroup),
        }
        let mut offsets: Vec<(String, i32)> = group.offsets.keys().cloned().collect();
        offsets.extend(
            group
                .pending_commits
                .keys()
                .filter(|key| !group.offsets.contains_key(*key))
                .cloned(),
        );
        Ok(group.begin_removal(offsets))
    }

    /// Offset retention (`offsets.retention.minutes`, KIP-211), first half: what expired at
    /// `now_ms`, per group. An empty group's offsets expire `retention_ms` after it became
    /// empty; a group without a protocol (simple commits only) by commit time; a Stable consumer
    /// group only for topics it no longer subscribes to, by commit time; an offset committed
    /// with a retention time (OffsetCommit v2-v4) at its own expiry time. Offsets with a commit
    /// in flight stay. An empty group left without offsets is removed: it is Dead until
    /// [`Self::complete_removal`]. The caller writes the tombstones, then completes each.
    pub fn prepare_expiry(&mut self, now_ms: i64, retention_ms: i64) -> Vec<PendingRemoval> {
        let mut removals = Vec::new();
        for group in self.groups.values_mut() {
            if group.state == GroupState::Dead {
                continue;
            }
            let expired = group.expired_offsets(now_ms, retention_ms);
            let remove_group = group.state == GroupState::Empty
                && group.members.is_empty()
                && group.pending_members.is_empty()
                && group.pending_commits.is_empty()
                && group.offsets.len() == expired.len()
                // A group that never stored a record and holds nothing is `tick`'s to drop.
                && !(group.offsets.is_empty() && group.generation_id == 0);
            if remove_group {
                removals.push(group.begin_removal(expired));
            } else if !expired.is_empty() {
                removals.push(PendingRemoval {
                    group_id: group.group_id.clone(),
                    offsets: expired,
                    remove_group: false,
                    empty_since_ms: group.state_since_ms,
                });
            }
        }
        removals
    }

    /// DeleteGroups or retention, second half: the tombstones are durable (`Ok`): the offsets
    /// (and the group) go; or the write failed: everything stays as it was.
    pub fn complete_removal(&mut self, pending: &PendingRemoval, result: Result<(), GroupError>) {
        let Some(group) = self.groups.get_mut(&pending.group_id) else {
            return;
        };
        match (result, pending.remove_group) {
            (Ok(()), true) => {
                debug_assert_eq!(group.state, GroupState::Dead);
                self.groups.remove(&pending.group_id);
            }
            (Ok(()), false) => {
                for key in &pending.offsets {
                    group.offsets.remove(key);
                }
            }
            (Err(_), true) if group.state == GroupState::Dead => {
                group.state = GroupState::Empty;
                group.state_since_ms = pending.empty_since_ms;
            }
            (Err(_), _) => {}
        }
    }

    /// Load one stored offset record (a `None` value is a tombstone).
    pub fn restore_offset(
        &mut self,
        group_id: &str,
        topic: &str,
        partition: i32,
        value: Option<&OffsetCommitValue>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.validate_group_id(group_id)?;
        let key = (topic.to_owned(), partition);
        let Some(value) = value else {
            if let Some(group) = self.groups.get_mut(group_id) {
                group.offsets.remove(&key);
            }
            return Ok(());
        };
        // Stored groups load whatever `groups_max` says: they exist already.
        let group = self
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id, now_ms));
        let committed = CommittedOffset {
            offset: value.offset,
            leader_epoch: value.leader_epoch,
            metadata: value.metadata.clone(),
            commit_timestamp_ms: value.commit_timestamp_ms,
            expire_timestamp_ms: (value.expire_timestamp_ms >= 0)
                .then_some(value.expire_timestamp_ms),
        };
        group.offsets.insert(key, committed);
        Ok(())
    }

    /// Load a group tombstone: the group was deleted or expired.
    pub fn restore_group_deleted(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }

    /// Test shorthand: a commit whose write succeeds.
    #[cfg(test)]
    pub fn commit_offsets(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        partitions: &[CommitPartition],
        now_ms: i64,
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        let request = CommitRequest {
            group_id: group_id.to_owned(),
            generation_id,
            member_id: member_id.to_owned(),
            group_instance_id: group_instance_id.map(str::to_owned),
            retention_time_ms: RETENTION_TIME_DEFAULT,
            partitions: partitions.to_vec(),
        };
        let pending = self.prepare_commit(&request, now_ms)?;
        self.complete_commit(&pending, Ok(()));
        Ok(pending.results)
    }

    /// Test shorthand: an OffsetDelete whose write succeeds.
    #[cfg(test)]
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        let pending = self.prepare_delete_offsets(group_id, partitions)?;
        self.complete_delete_offsets(&pending, Ok(()));
        Ok(pending.results)
    }

    /// Test shorthand: a DeleteGroups whose write succeeds; the offsets it dropped.
    #[cfg(test)]
    pub fn delete_group(&mut self, group_id: &str) -> Result<Vec<(String, i32)>, GroupError> {
        let pending = self.prepare_delete_group(group_id)?;
        self.complete_removal(&pending, Ok(()));
        Ok(pending.offsets)
    }
}

/// `retention_time_ms` of an OffsetCommit that leaves retention to the broker.
pub const RETENTION_TIME_DEFAULT: i64 = -1;

/// An OffsetCommit as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    /// Below 0: a simple (admin) commit, allowed to empty groups only.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// OffsetCommit v2-v4; [`RETENTION_TIME_DEFAULT`] otherwise.
    pub retention_time_ms: i64,
    pub partitions: Vec<CommitPartition>,
}

/// A validated OffsetCommit waiting for its write.
#[derive(Debug, Clone)]
pub struct PendingCommit {
    pub group_id: String,
    /// Per request partition in request order: `None` accepted, or why it was refused.
    pub results: Vec<Option<GroupError>>,
    /// What to write (and then apply), in request order.
    pub accepted: Vec<((String, i32), CommittedOffset)>,
}

/// A validated OffsetDelete waiting for its tombstones.
#[derive(Debug, Clone)]
pub struct PendingOffsetDelete {
    pub group_id: String,
    /// Per request partition in request order.
    pub results: Vec<Option<GroupError>>,
    /// The partitions to write tombstones for.
    pub deleted: Vec<(String, i32)>,
}

/// Offsets (and maybe the whole group) to remove once their tombstones are durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRemoval {
    pub group_id: String,
    pub offsets: Vec<(String, i32)>,
    /// Also write the group's tombstone and drop the group.
    pub remove_group: bool,
    /// When the group became empty, restored if the write fails.
    empty_since_ms: i64,
}

/// The topic list of a `ConsumerProtocolSubscription` (v0-v3, not flexible): i16 version,
/// i32 topic count, then i16-length strings. `None` if it does not parse.
fn parse_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata;
    let mut take = |length: usize| -> Option<&[u8]> {
        if rest.len() < length {
            return None;
        }
        let (head, tail) = rest.split_at(length);
        rest = tail;
        Some(head)
    };
    let _version = take(2)?;
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    let mut topics = Vec::with_capacity(count.min(metadata.len()));
    for _ in 0..count {
        let length = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let length = usize::try_from(length).ok()?;
        let name = std::str::from_utf8(take(length)?).ok()?;
        topics.push(name.to_owned());
    }
    Some(topics)
}
