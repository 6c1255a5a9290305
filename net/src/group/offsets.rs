//! Committed offsets per group: OffsetCommit (generation and member fencing), OffsetFetch,
//! OffsetDelete, retention, and the records they map to.
//!
//! In memory here; the caller persists each accepted commit as an `OffsetCommitKey` /
//! `OffsetCommitValue` record (see [`super::records`]) and deletions as tombstones.

use super::coordinator::{Group, GroupCoordinator};
use super::records::OffsetCommitValue;
use super::{GroupError, GroupState};

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
}

impl CommittedOffset {
    /// The record value to persist for this commit.
    pub fn record(&self) -> OffsetCommitValue {
        OffsetCommitValue {
            offset: self.offset,
            leader_epoch: self.leader_epoch,
            metadata: self.metadata.clone(),
            commit_timestamp_ms: self.commit_timestamp_ms,
            expire_timestamp_ms: -1,
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
}

impl GroupCoordinator {
    /// OffsetCommit. `Err` is a group-level error for every partition; `Ok` holds one result per
    /// partition in request order. The caller persists the accepted ones ([`Self::committed`]).
    pub fn commit_offsets(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        partitions: &[CommitPartition],
        now_ms: i64,
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        self.validate_group_id(group_id)?;
        if !self.groups.contains_key(group_id) {
            if generation_id >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            self.create_group(group_id, now_ms)?;
        }
        let limits = self.limits.clone();
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        group.validate_commit(generation_id, member_id, group_instance_id)?;
        let results = partitions
            .iter()
            .map(|partition| {
                let metadata = partition.metadata.clone().unwrap_or_default();
                if metadata.len() > limits.offset_metadata_bytes_max {
                    return Some(GroupError::OffsetMetadataTooLarge);
                }
                let bad_topic = partition.topic.is_empty()
                    || partition.topic.len() > TOPIC_NAME_BYTES_MAX
                    || partition.partition < 0;
                if bad_topic {
                    return Some(GroupError::UnknownTopicOrPartition);
                }
                let key = (partition.topic.clone(), partition.partition);
                let full = group.offsets.len() >= limits.offsets_per_group_max;
                if full && !group.offsets.contains_key(&key) {
                    return Some(GroupError::InvalidCommitOffsetSize);
                }
                let committed = CommittedOffset {
                    offset: partition.offset,
                    leader_epoch: partition.leader_epoch,
                    metadata,
                    commit_timestamp_ms: now_ms,
                };
                group.offsets.insert(key, committed);
                None
            })
            .collect();
        Ok(results)
    }

    /// The stored commit of one partition (to build the record after a commit).
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

    /// OffsetDelete. Partitions of topics an active consumer group subscribes to are refused;
    /// an active group of another protocol type is refused as a whole.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        let Some(group) = self.groups.get_mut(group_id) else {
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
        let results = partitions
            .iter()
            .map(|(topic, partition)| {
                let is_subscribed = subscribed
                    .as_ref()
                    .is_none_or(|topics| topics.iter().any(|name| name == topic));
                if is_subscribed {
                    return Some(GroupError::GroupSubscribedToTopic);
                }
                group.offsets.remove(&(topic.clone(), *partition));
                None
            })
            .collect();
        Ok(results)
    }

    /// Offset retention (`offsets.retention.minutes`): an empty group's commits expire
    /// `retention_ms` after the later of the commit and the group becoming empty; an empty group
    /// left without offsets is removed. Returns the (group, topic, partition) tombstones and the
    /// removed groups, for the caller to write.
    pub fn expire_offsets(&mut self, now_ms: i64, retention_ms: i64) -> ExpiredOffsets {
        let mut expired = ExpiredOffsets::default();
        for group in self.groups.values_mut() {
            if group.state != GroupState::Empty {
                continue;
            }
            let empty_since_ms = group.state_since_ms;
            group.offsets.retain(|(topic, partition), committed| {
                let base_ms = committed.commit_timestamp_ms.max(empty_since_ms);
                let keep = now_ms < base_ms.saturating_add(retention_ms);
                if !keep {
                    let key = (group.group_id.clone(), topic.clone(), *partition);
                    expired.offsets.push(key);
                }
                keep
            });
        }
        self.groups.retain(|group_id, group| {
            let remove = group.state == GroupState::Empty
                && group.members.is_empty()
                && group.offsets.is_empty()
                && now_ms >= group.state_since_ms.saturating_add(retention_ms);
            if remove {
                expired.groups.push(group_id.clone());
            }
            !remove
        });
        expired
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
        if !self.groups.contains_key(group_id) {
            if value.is_none() {
                return Ok(());
            }
            self.create_group(group_id, now_ms)?;
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        let key = (topic.to_owned(), partition);
        match value {
            None => {
                group.offsets.remove(&key);
            }
            Some(value) => {
                let committed = CommittedOffset {
                    offset: value.offset,
                    leader_epoch: value.leader_epoch,
                    metadata: value.metadata.clone(),
                    commit_timestamp_ms: value.commit_timestamp_ms,
                };
                group.offsets.insert(key, committed);
            }
        }
        Ok(())
    }
}

/// What [`GroupCoordinator::expire_offsets`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExpiredOffsets {
    pub offsets: Vec<(String, String, i32)>,
    pub groups: Vec<String>,
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
