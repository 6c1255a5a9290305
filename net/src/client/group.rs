//! Consumer groups, client side: the classic group APIs on [`Client`], the consumer protocol's
//! embedded subscription and assignment formats, the `range` and `roundrobin` assignors, a
//! [`GroupMember`] that drives one consumer's membership (join, sync, background heartbeat,
//! commit, leave) and a [`GroupAdmin`] for the admin calls (list, describe, delete, commit on
//! behalf of an empty group).
//!
//! Everything runs on the caller's glommio executor. A [`GroupMember`] holds two connections to
//! the coordinator: one for the member's own calls (made one at a time through `&mut self`) and
//! one owned by its heartbeat task, so a heartbeat never waits behind a long JoinGroup or
//! OffsetCommit. The task reports what it saw through [`GroupMember::signal`]; it never changes
//! the membership itself. Every retry loop here is bounded ([`Backoff`], [`JOIN_ROUNDS_MAX`]).

use super::{decode_body, str_bytes, topic_name, Client, ClientConfig, ClientError, KafkaError};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_assignment, leave_group_request, offset_commit_request, offset_fetch_request,
    sync_group_request, ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// The protocol type of consumer groups.
pub const PROTOCOL_TYPE_CONSUMER: &str = "consumer";
/// The embedded consumer protocol version written (Kafka 4's). Newer versions only append
/// fields, so they are read as this one (as Kafka's `ConsumerProtocol` does).
const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// Kafka error codes the group code acts on.
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
/// The coordinator is not available (yet).
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// The broker asked is not the group's coordinator.
pub const NOT_COORDINATOR: i16 = 16;
/// The member's generation is not the group's.
pub const ILLEGAL_GENERATION: i16 = 22;
/// The coordinator does not know the member id.
pub const UNKNOWN_MEMBER_ID: i16 = 25;
/// The group is rebalancing: join again.
pub const REBALANCE_IN_PROGRESS: i16 = 27;
/// DeleteGroups on a group with members.
pub const NON_EMPTY_GROUP: i16 = 68;
/// DeleteGroups on a group that does not exist.
pub const GROUP_ID_NOT_FOUND: i16 = 69;
/// KIP-394: a first JoinGroup gets its member id with this error and must join again with it.
pub const MEMBER_ID_REQUIRED: i16 = 79;

/// JoinGroup/SyncGroup rounds one [`GroupMember::join`] may take before giving up (each round
/// waits for a rebalance, so a group that never settles is reported instead of retried forever).
pub const JOIN_ROUNDS_MAX: u32 = 100;
/// Extra time a JoinGroup may take beyond the rebalance timeout (the coordinator parks it until
/// the rebalance completes), as the Java consumer allows.
const JOIN_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// True for the coordinator errors that are retried after finding the coordinator again.
pub fn is_coordinator_error(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
    )
}

fn coordinator_error(error: &ClientError) -> bool {
    error
        .kafka_error()
        .is_some_and(|error| is_coordinator_error(error.code))
}

/// Paces retries after coordinator errors: 100 ms doubling up to 1 s, at most
/// [`Backoff::WAITS_MAX`] waits (about half a minute in all).
#[derive(Debug)]
pub struct Backoff {
    waits: u32,
    waits_max: u32,
    first: Duration,
    longest: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            waits: 0,
            waits_max: Self::WAITS_MAX,
            first: Duration::from_millis(100),
            longest: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// Waits allowed before giving up.
    pub const WAITS_MAX: u32 = 32;

    /// Sleeps before the next attempt; false (without sleeping) once the waits are used up.
    pub async fn wait(&mut self) -> bool {
        if self.waits >= self.waits_max {
            return false;
        }
        let delay = self
            .first
            .saturating_mul(1 << self.waits.min(4))
            .min(self.longest);
        self.waits += 1;
        glommio::timer::sleep(delay).await;
        true
    }
}

/// A group coordinator from FindCoordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinator {
    /// Its node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
}

impl Coordinator {
    /// `HOST:PORT` to connect to (IPv6 hosts in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One protocol a member offers in JoinGroup.
#[derive(Clone, Debug)]
pub struct JoinProtocol {
    /// Assignor name, e.g. `range`.
    pub name: String,
    /// Protocol metadata (for consumers, an encoded subscription).
    pub metadata: Bytes,
}

/// A JoinGroup request.
#[derive(Clone, Debug)]
pub struct JoinParams {
    /// Group id.
    pub group_id: String,
    /// Empty on the first join.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for members to rejoin.
    pub rebalance_timeout_ms: i32,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// Offered protocols, preferred first.
    pub protocols: Vec<JoinProtocol>,
}

/// A member as the leader sees it in a JoinGroup answer.
#[derive(Clone, Debug)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup answer. With an error, only `member_id` may be meaningful (MEMBER_ID_REQUIRED).
#[derive(Clone, Debug)]
pub struct JoinOutcome {
    /// The error, if any.
    pub error: Option<KafkaError>,
    /// The new generation.
    pub generation_id: i32,
    /// The protocol the coordinator chose.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// The leader must not compute an assignment (static leader rejoining, KIP-814).
    pub skip_assignment: bool,
    /// Every member, for the leader only.
    pub members: Vec<JoinedMember>,
}

/// One partition's offset to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetToCommit {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset to consume.
    pub offset: i64,
    /// Free-form metadata stored with it.
    pub metadata: Option<String>,
}

/// One partition of an OffsetFetch answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset, `None` if nothing was committed.
    pub offset: Option<i64>,
    /// Metadata committed with it.
    pub metadata: Option<String>,
}

/// A ListGroups entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`consumer`, `connect`, or empty for offsets-only groups).
    pub protocol_type: String,
    /// State, e.g. `Stable` (empty before ListGroups v4).
    pub state: String,
}

/// A member in DescribeGroups.
#[derive(Clone, Debug)]
pub struct GroupMemberInfo {
    /// Member id.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's address as the coordinator saw it (Kafka's form, e.g. `/127.0.0.1`).
    pub client_host: String,
    /// Its metadata for the group's protocol.
    pub metadata: Bytes,
    /// Its assignment (for consumers, an encoded [`ConsumerProtocolAssignment`]).
    pub assignment: Bytes,
}

/// A DescribeGroups answer for one group.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// Group id.
    pub group_id: String,
    /// State: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`
    /// (`Dead` also for a group that does not exist).
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// The chosen protocol (assignor for consumers).
    pub protocol: String,
    /// Members.
    pub members: Vec<GroupMemberInfo>,
}

impl Client {
    /// The coordinator of `group_id` (FindCoordinator, key type group). An error answer is
    /// [`ClientError::Broker`]; see [`is_coordinator_error`].
    pub async fn find_coordinator(&mut self, group_id: &str) -> Result<Coordinator, ClientError> {
        let version = self.version(ApiKey::FindCoordinator)?;
        let mut request = FindCoordinatorRequest::default();
        if version >= 4 {
            request.coordinator_keys = vec![str_bytes(group_id)];
        } else {
            request.key = str_bytes(group_id);
        }
        let response = self.call(&request, version).await?;
        let (code, message, node_id, host, port) = if version >= 4 {
            let answer = response
                .coordinators
                .into_iter()
                .find(|answer| answer.key.as_str() == group_id)
                .ok_or_else(|| {
                    ClientError::Protocol("FindCoordinator did not answer for the group".into())
                })?;
            (
                answer.error_code,
                answer.error_message,
                answer.node_id.0,
                answer.host,
                answer.port,
            )
        } else {
            (
                response.error_code,
                response.error_message,
                response.node_id.0,
                response.host,
                response.port,
            )
        };
        if let Some(error) = KafkaError::from_code(code, message.as_ref()) {
            return Err(ClientError::broker(
                format!("finding the coordinator of group {group_id}"),
                error,
            ));
        }
        if !(1..=i32::from(u16::MAX)).contains(&port) || host.is_empty() {
            return Err(ClientError::Protocol(format!(
                "FindCoordinator answered a bad address {host}:{port}"
            )));
        }
        Ok(Coordinator {
            node_id,
            host: host.to_string(),
            port,
        })
    }

    /// Finds the coordinator of `group_id` and opens a connection to it with this client's
    /// settings.
    pub async fn connect_coordinator(&mut self, group_id: &str) -> Result<Client, ClientError> {
        let coordinator = self.find_coordinator(group_id).await?;
        Client::connect(&coordinator.address(), self.config.clone()).await
    }

    /// JoinGroup. The coordinator holds the answer until the rebalance completes, so the
    /// request may take up to the rebalance timeout. Error answers are in the outcome.
    pub async fn join_group(&mut self, params: &JoinParams) -> Result<JoinOutcome, ClientError> {
        let version = self.version(ApiKey::JoinGroup)?;
        let mut request = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&params.group_id)))
            .with_session_timeout_ms(params.session_timeout_ms)
            .with_rebalance_timeout_ms(params.rebalance_timeout_ms)
            .with_member_id(str_bytes(&params.member_id))
            .with_protocol_type(str_bytes(&params.protocol_type))
            .with_protocols(
                params
                    .protocols
                    .iter()
                    .map(|protocol| {
                        kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                            .with_name(str_bytes(&protocol.name))
                            .with_metadata(protocol.metadata.clone())
                    })
                    .collect(),
            );
        if version >= 5 {
            request.group_instance_id = params.group_instance_id.as_deref().map(str_bytes);
        }
        let rebalance =
            Duration::from_millis(u64::try_from(params.rebalance_timeout_ms).unwrap_or(0));
        let timeout = self
            .config
            .request_timeout
            .max(rebalance + JOIN_TIMEOUT_MARGIN);
        let body = self.round_trip(&request, version, timeout).await?;
        let response = decode_body::<JoinGroupRequest>(body, version)?;
        Ok(JoinOutcome {
            error: KafkaError::from_code(response.error_code, None),
            generation_id: response.generation_id,
            protocol_name: response.protocol_name.map(|name| name.to_string()),
            leader: response.leader.to_string(),
            member_id: response.member_id.to_string(),
            skip_assignment: response.skip_assignment,
            members: response
                .members
                .into_iter()
                .map(|member| JoinedMember {
                    member_id: member.member_id.to_string(),
                    group_instance_id: member.group_instance_id.map(|id| id.to_string()),
                    metadata: member.metadata,
                })
                .collect(),
        })
    }

    /// SyncGroup: sends the leader's assignments (empty from followers) and returns this
    /// member's (empty bytes when it has none).
    #[allow(clippy::too_many_arguments)]
    pub async fn sync_group(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: &str,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, ClientError> {
        let version = self.version(ApiKey::SyncGroup)?;
        let mut request = SyncGroupRequest::default()
            .with_group_id(GroupId(str_bytes(group_id)))
            .with_generation_id(generation_id)
            .with_member_id(str_bytes(member_id))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(member, assignment)| {
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(str_bytes(&member))
                            .with_assignment(assignment)
                    })
                    .collect(),
            );
        if version >= 3 {
            request.group_instance_id = group_instance_id.map(str_bytes);
        }
        if version >= 5 {
            request.protocol_type = Some(str_bytes(protocol_type));
            request.protocol_name = protocol_name.map(str_bytes);
        }
        // The coordinator parks a follower's SyncGroup until the leader's arrives.
        let timeout = self.config.request_timeout + JOIN_TIMEOUT_MARGIN;
        let body = self.round_trip(&request, version, timeout).await?;
        let response = decode_body::<SyncGroupRequest>(body, version)?;
        match KafkaError::from_code(response.error_code, None) {
            Some(error) => Err(ClientError::broker(
                format!("syncing group {group_id}"),
                error,
            )),
            None => Ok(response.assignment),
        }
    }

    /// Heartbeat.
    pub async fn heartbeat(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let version = self.version(ApiKey::Heartbeat)?;
        let mut request = HeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(group_id)))
            .with_generation_id(generation_id)
            .with_member_id(str_bytes(member_id));
        if version >= 3 {
            request.group_instance_id = group_instance_id.map(str_bytes);
        }
        let response = self.call(&request, version).await?;
        match KafkaError::from_code(response.error_code, None) {
            Some(error) => Err(ClientError::broker(
                format!("heartbeat in group {group_id}"),
                error,
            )),
            None => Ok(()),
        }
    }

    /// LeaveGroup for one member.
    pub async fn leave_group(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let version = self.version(ApiKey::LeaveGroup)?;
        let mut request = LeaveGroupRequest::default().with_group_id(GroupId(str_bytes(group_id)));
        if version >= 3 {
            request.members = vec![leave_group_request::MemberIdentity::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(group_instance_id.map(str_bytes))];
        } else {
            request.member_id = str_bytes(member_id);
        }
        let response = self.call(&request, version).await?;
        let member_code = response
            .members
            .first()
            .map_or(0, |member| member.error_code);
        let code = if response.error_code != 0 {
            response.error_code
        } else {
            member_code
        };
        match KafkaError::from_code(code, None) {
            Some(error) => Err(ClientError::broker(
                format!("leaving group {group_id}"),
                error,
            )),
            None => Ok(()),
        }
    }

    /// OffsetCommit. A member commits with its generation and id; an admin (for an empty
    /// group) with generation -1 and an empty member id. The first error, group-level or
    /// per partition, fails the call.
    pub async fn commit_offsets(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        offsets: &[OffsetToCommit],
    ) -> Result<(), ClientError> {
        let version = self.version(ApiKey::OffsetCommit)?;
        let mut topics: Vec<offset_commit_request::OffsetCommitRequestTopic> = Vec::new();
        for offset in offsets {
            let partition = offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(offset.partition)
                .with_committed_offset(offset.offset)
                .with_committed_metadata(Some(str_bytes(offset.metadata.as_deref().unwrap_or(""))));
            match topics
                .iter_mut()
                .find(|topic| topic.name.0.as_str() == offset.topic)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name(&offset.topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let mut request = OffsetCommitRequest::default()
            .with_group_id(GroupId(str_bytes(group_id)))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(str_bytes(member_id))
            .with_topics(topics);
        if version >= 7 {
            request.group_instance_id = group_instance_id.map(str_bytes);
        }
        let response = self.call(&request, version).await?;
        let context = format!("committing offsets of group {group_id}");
        let mut answered = 0usize;
        for topic in &response.topics {
            for partition in &topic.partitions {
                answered += 1;
                if let Some(error) = KafkaError::from_code(partition.error_code, None) {
                    return Err(ClientError::broker(
                        format!("{context} ({}-{})", topic.name.0, partition.partition_index),
                        error,
                    ));
                }
            }
        }
        if answered != offsets.len() {
            return Err(ClientError::Protocol(format!(
                "OffsetCommit answered {answered} partitions for {} committed",
                offsets.len()
            )));
        }
        Ok(())
    }

    /// OffsetFetch: the committed offsets of `partitions`, or of every partition the group has
    /// committed when `None`.
    pub async fn fetch_committed(
        &mut self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let version = self.version(ApiKey::OffsetFetch)?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions.unwrap_or(&[]) {
            by_topic.entry(topic.as_str()).or_default().push(*partition);
        }
        let context = format!("fetching committed offsets of group {group_id}");
        let mut request = OffsetFetchRequest::default();
        if version >= 8 {
            let topics = partitions.map(|_| {
                by_topic
                    .iter()
                    .map(|(topic, partitions)| {
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic_name(topic))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect()
            });
            request.groups = vec![offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(str_bytes(group_id)))
                .with_topics(topics)];
        } else {
            request.group_id = GroupId(str_bytes(group_id));
            request.topics = partitions.map(|_| {
                by_topic
                    .iter()
                    .map(|(topic, partitions)| {
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic_name(topic))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect()
            });
        }
        let response = self.call(&request, version).await?;
        // (topic, partition, offset, metadata, error code) from either layout.
        let mut rows: Vec<(String, i32, i64, Option<StrBytes>, i16)> = Vec::new();
        let group_code = if version >= 8 {
            let group = response
                .groups
                .into_iter()
                .find(|group| group.group_id.0.as_str() == group_id)
                .ok_or_else(|| {
                    ClientError::Protocol("OffsetFetch did not answer for the group".into())
                })?;
            for topic in group.topics {
                for partition in topic.partitions {
                    rows.push((
                        topic.name.0.to_string(),
                        partition.partition_index,
                        partition.committed_offset,
                        partition.metadata,
                        partition.error_code,
                    ));
                }
            }
            group.error_code
        } else {
            for topic in response.topics {
                for partition in topic.partitions {
                    rows.push((
                        topic.name.0.to_string(),
                        partition.partition_index,
                        partition.committed_offset,
                        partition.metadata,
                        partition.error_code,
                    ));
                }
            }
            response.error_code
        };
        if let Some(error) = KafkaError::from_code(group_code, None) {
            return Err(ClientError::broker(context, error));
        }
        let mut committed = Vec::with_capacity(rows.len());
        for (topic, partition, offset, metadata, code) in rows {
            if let Some(error) = KafkaError::from_code(code, None) {
                return Err(ClientError::broker(
                    format!("{context} ({topic}-{partition})"),
                    error,
                ));
            }
            committed.push(CommittedOffset {
                topic,
                partition,
                offset: (offset >= 0).then_some(offset),
                metadata: metadata.map(|metadata| metadata.to_string()),
            });
        }
        committed.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(committed)
    }

    /// DescribeGroups for one group.
    pub async fn describe_group(&mut self, group_id: &str) -> Result<GroupInfo, ClientError> {
        let version = self.version(ApiKey::DescribeGroups)?;
        let request =
            DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group_id))]);
        let response = self.call(&request, version).await?;
        let group = response
            .groups
            .into_iter()
            .find(|group| group.group_id.0.as_str() == group_id)
            .ok_or_else(|| {
                ClientError::Protocol("DescribeGroups did not answer for the group".into())
            })?;
        if let Some(error) = KafkaError::from_code(group.error_code, group.error_message.as_ref()) {
            return Err(ClientError::broker(
                format!("describing group {group_id}"),
                error,
            ));
        }
        Ok(GroupInfo {
            group_id: group_id.to_string(),
            state: group.group_state.to_string(),
            protocol_type: group.protocol_type.to_string(),
            protocol: group.protocol_data.to_string(),
            members: group
                .members
                .into_iter()
                .map(|member| GroupMemberInfo {
                    member_id: member.member_id.to_string(),
                    group_instance_id: member.group_instance_id.map(|id| id.to_string()),
                    client_id: member.client_id.to_string(),
                    client_host: member.client_host.to_string(),
                    metadata: member.member_metadata,
                    assignment: member.member_assignment,
                })
                .collect(),
        })
    }

    /// ListGroups (this broker's groups), sorted by id.
    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>, ClientError> {
        let version = self.version(ApiKey::ListGroups)?;
        let response = self.call(&ListGroupsRequest::default(), version).await?;
        if let Some(error) = KafkaError::from_code(response.error_code, None) {
            return Err(ClientError::broker("listing groups", error));
        }
        let mut groups: Vec<GroupListing> = response
            .groups
            .into_iter()
            .map(|group| GroupListing {
                group_id: group.group_id.0.to_string(),
                protocol_type: group.protocol_type.to_string(),
                state: group.group_state.to_string(),
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// DeleteGroups: each group's own result.
    pub async fn delete_groups(
        &mut self,
        group_ids: &[String],
    ) -> Result<Vec<(String, Option<KafkaError>)>, ClientError> {
        let version = self.version(ApiKey::DeleteGroups)?;
        let request = DeleteGroupsRequest::default().with_groups_names(
            group_ids
                .iter()
                .map(|group| GroupId(str_bytes(group)))
                .collect(),
        );
        let response = self.call(&request, version).await?;
        group_ids
            .iter()
            .map(|group| {
                let result = response
                    .results
                    .iter()
                    .find(|result| result.group_id.0.as_str() == group)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("DeleteGroups did not answer for {group}"))
                    })?;
                Ok((
                    group.clone(),
                    KafkaError::from_code(result.error_code, None),
                ))
            })
            .collect()
    }
}

/// Encodes a subscription to `topics` (version prefix, then the struct), Kafka 4's layout.
pub fn encode_subscription(topics: &[String]) -> Result<Bytes, ClientError> {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|topic| str_bytes(topic)).collect())
        .with_generation_id(-1);
    encode_versioned(&subscription, "subscription")
}

/// The topics of an encoded subscription. Versions above the newest known are read as it.
pub fn decode_subscription(bytes: &[u8]) -> Result<Vec<String>, ClientError> {
    let subscription: ConsumerProtocolSubscription = decode_versioned(bytes, "subscription")?;
    Ok(subscription
        .topics
        .into_iter()
        .map(|topic| topic.to_string())
        .collect())
}

/// Encodes an assignment of partitions, by topic.
pub fn encode_assignment(partitions: &BTreeMap<String, Vec<i32>>) -> Result<Bytes, ClientError> {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        partitions
            .iter()
            .map(|(topic, partitions)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(partitions.clone())
            })
            .collect(),
    );
    encode_versioned(&assignment, "assignment")
}

/// The partitions of an encoded assignment, sorted; empty bytes are no assignment.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, i32)>, ClientError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let assignment: ConsumerProtocolAssignment = decode_versioned(bytes, "assignment")?;
    let mut partitions: Vec<(String, i32)> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| (topic.topic.0.to_string(), *partition))
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    Ok(partitions)
}

fn encode_versioned(message: &impl Encodable, what: &str) -> Result<Bytes, ClientError> {
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(CONSUMER_PROTOCOL_VERSION);
    message
        .encode(&mut out, CONSUMER_PROTOCOL_VERSION)
        .map_err(|error| ClientError::Protocol(format!("encoding a consumer {what}: {error}")))?;
    Ok(out.freeze())
}

fn decode_versioned<T: Decodable>(bytes: &[u8], what: &str) -> Result<T, ClientError> {
    let bad = |reason: String| ClientError::Protocol(format!("consumer {what}: {reason}"));
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return Err(bad("shorter than its version".into()));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(bad(format!("negative version {version}")));
    }
    T::decode(&mut buf, version.min(CONSUMER_PROTOCOL_VERSION))
        .map_err(|error| bad(error.to_string()))
}

/// A partition assignor of the consumer protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, consecutive ranges of partitions to members in order (Kafka's default).
    Range,
    /// Every partition of every topic dealt to members in turn.
    RoundRobin,
}

impl Assignor {
    /// The protocol name members agree on.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// The assignor of a protocol name.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Assigns the partitions of the subscribed topics (`partition_counts`: topic -> count;
    /// unknown topics get nothing). Every member gets an entry, possibly empty. Deterministic:
    /// members are ordered as Kafka's assignors order them (static ids first, then member ids).
    pub fn assign(
        self,
        members: &[MemberSubscription],
        partition_counts: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
        let mut ordered: Vec<&MemberSubscription> = members.iter().collect();
        ordered.sort_by(|a, b| member_order(a, b));
        let mut result: BTreeMap<String, BTreeMap<String, Vec<i32>>> = members
            .iter()
            .map(|member| (member.member_id.clone(), BTreeMap::new()))
            .collect();
        let mut give = |member: &str, topic: &str, partition: i32| {
            if let Some(topics) = result.get_mut(member) {
                topics.entry(topic.to_string()).or_default().push(partition);
            }
        };
        let subscribed: BTreeSet<&str> = members
            .iter()
            .flat_map(|member| member.topics.iter().map(String::as_str))
            .collect();
        match self {
            Assignor::Range => {
                for topic in subscribed {
                    let count = partition_counts.get(topic).copied().unwrap_or(0).max(0);
                    let takers: Vec<&str> = ordered
                        .iter()
                        .filter(|member| member.topics.iter().any(|t| t == topic))
                        .map(|member| member.member_id.as_str())
                        .collect();
                    if takers.is_empty() {
                        continue;
                    }
                    let takers_count = i32::try_from(takers.len()).unwrap_or(i32::MAX);
                    let (each, extra) = (count / takers_count, count % takers_count);
                    let mut next = 0;
                    for (index, member) in takers.iter().enumerate() {
                        let index = i32::try_from(index).unwrap_or(i32::MAX);
                        let length = each + i32::from(index < extra);
                        for partition in next..next + length {
                            give(member, topic, partition);
                        }
                        next += length;
                    }
                }
            }
            Assignor::RoundRobin => {
                let mut turn = 0usize;
                for topic in subscribed {
                    let count = partition_counts.get(topic).copied().unwrap_or(0).max(0);
                    for partition in 0..count {
                        // The next member in the circle that subscribes to the topic (one
                        // exists: the topic is in someone's subscription).
                        for step in 0..ordered.len() {
                            let member = ordered[(turn + step) % ordered.len()];
                            if member.topics.iter().any(|t| t == topic) {
                                give(&member.member_id, topic, partition);
                                turn = (turn + step + 1) % ordered.len();
                                break;
                            }
                        }
                    }
                }
            }
        }
        result
    }
}

/// A member's subscription, as the leader decodes it from JoinGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSubscription {
    /// Member id.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Subscribed topics.
    pub topics: Vec<String>,
}

/// Kafka's member order for assignors: members with a static id first (by that id), then by
/// member id.
fn member_order(a: &MemberSubscription, b: &MemberSubscription) -> std::cmp::Ordering {
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(a_id), Some(b_id)) => a_id.cmp(b_id).then_with(|| a.member_id.cmp(&b.member_id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    }
}

/// Settings of a [`GroupMember`].
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// Group id.
    pub group_id: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Assignors offered, preferred first (at least one).
    pub assignors: Vec<Assignor>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for members to rejoin (`max.poll.interval.ms`).
    pub rebalance_timeout_ms: i32,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
}

/// What the heartbeat task saw that the member must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberSignal {
    /// A rebalance started, or the member's generation or id is no longer valid: commit what
    /// can be committed, then [`GroupMember::join`] again.
    Rejoin(KafkaError),
    /// The coordinator moved or its connection failed: [`GroupMember::reconnect`].
    CoordinatorLost(String),
    /// An error no rejoin fixes (e.g. the group's protocol changed, authorization).
    Fatal(KafkaError),
}

/// What the member and its heartbeat task share (same executor, never borrowed across await).
#[derive(Debug, Default)]
struct Shared {
    generation_id: i32,
    member_id: String,
    signal: Option<MemberSignal>,
}

/// One consumer's membership in a classic group. See the module documentation.
///
/// Lifecycle: [`GroupMember::join`] (also after [`MemberSignal::Rejoin`]), then
/// [`GroupMember::commit`] / [`GroupMember::committed`] while the caller consumes its
/// assignment, watching [`GroupMember::signal`]; [`GroupMember::leave`] at the end.
pub struct GroupMember {
    bootstrap: String,
    client_config: ClientConfig,
    config: MemberConfig,
    coordinator: Option<Client>,
    coordinator_address: Option<String>,
    member_id: String,
    /// -1 outside a generation.
    generation_id: i32,
    protocol_name: Option<String>,
    shared: Rc<RefCell<Shared>>,
    heartbeat: Option<glommio::Task<()>>,
}

/// Why one join round did not produce an assignment.
enum JoinStep {
    /// Join again at once (member id handed out, rebalance restarted, generation moved).
    Again,
    /// The coordinator is unavailable or moved: find it again after a backoff.
    Coordinator(ClientError),
    /// Give up.
    Fatal(ClientError),
}

impl GroupMember {
    /// A member that has not joined yet; no I/O until [`GroupMember::join`].
    pub fn new(bootstrap: &str, client_config: ClientConfig, config: MemberConfig) -> GroupMember {
        assert!(!config.assignors.is_empty(), "a member offers an assignor");
        GroupMember {
            bootstrap: bootstrap.to_string(),
            client_config,
            config,
            coordinator: None,
            coordinator_address: None,
            member_id: String::new(),
            generation_id: -1,
            protocol_name: None,
            shared: Rc::new(RefCell::new(Shared::default())),
            heartbeat: None,
        }
    }

    /// The member id the coordinator gave (empty before the first join).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The current generation, -1 outside one.
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// The assignor the group chose in the current generation.
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    /// What the heartbeat task reported since the last join, if anything (taken: reported once).
    pub fn signal(&self) -> Option<MemberSignal> {
        self.shared.borrow_mut().signal.take()
    }

    /// Joins the group (again): JoinGroup (twice on a first join, KIP-394), the assignment as
    /// leader, SyncGroup; then starts the heartbeat. Returns this member's partitions, sorted.
    /// Coordinator errors are retried after a [`Backoff`]; the whole join is bounded by
    /// [`JOIN_ROUNDS_MAX`] rounds.
    pub async fn join(&mut self) -> Result<Vec<(String, i32)>, ClientError> {
        self.stop_heartbeat().await;
        self.generation_id = -1;
        let mut backoff = Backoff::default();
        for _ in 0..JOIN_ROUNDS_MAX {
            match self.join_once().await {
                Ok(assignment) => {
                    self.start_heartbeat().await?;
                    return Ok(assignment);
                }
                Err(JoinStep::Again) => {}
                Err(JoinStep::Coordinator(error)) => {
                    self.forget_coordinator();
                    if !backoff.wait().await {
                        return Err(error);
                    }
                }
                Err(JoinStep::Fatal(error)) => return Err(error),
            }
        }
        Err(ClientError::Protocol(format!(
            "group {} did not settle within {JOIN_ROUNDS_MAX} join rounds",
            self.config.group_id
        )))
    }

    async fn join_once(&mut self) -> Result<Vec<(String, i32)>, JoinStep> {
        let subscription = encode_subscription(&self.config.topics).map_err(JoinStep::Fatal)?;
        let params = JoinParams {
            group_id: self.config.group_id.clone(),
            member_id: self.member_id.clone(),
            group_instance_id: None,
            session_timeout_ms: self.config.session_timeout_ms,
            rebalance_timeout_ms: self.config.rebalance_timeout_ms,
            protocol_type: PROTOCOL_TYPE_CONSUMER.into(),
            protocols: self
                .config
                .assignors
                .iter()
                .map(|assignor| JoinProtocol {
                    name: assignor.name().into(),
                    metadata: subscription.clone(),
                })
                .collect(),
        };
        let coordinator = self.coordinator().await.map_err(classify)?;
        let joined = coordinator.join_group(&params).await.map_err(classify)?;
        if let Some(error) = joined.error {
            return Err(match error.code {
                MEMBER_ID_REQUIRED => {
                    self.member_id = joined.member_id;
                    JoinStep::Again
                }
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    JoinStep::Again
                }
                ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS => JoinStep::Again,
                _ => classify(ClientError::broker(
                    format!("joining group {}", self.config.group_id),
                    error,
                )),
            });
        }
        self.member_id = joined.member_id.clone();
        let assignments = if joined.leader == joined.member_id && !joined.skip_assignment {
            self.leader_assignments(&joined).await.map_err(classify)?
        } else {
            Vec::new()
        };
        let group_id = self.config.group_id.clone();
        let coordinator = self.coordinator().await.map_err(classify)?;
        let synced = coordinator
            .sync_group(
                &group_id,
                joined.generation_id,
                &joined.member_id,
                None,
                PROTOCOL_TYPE_CONSUMER,
                joined.protocol_name.as_deref(),
                assignments,
            )
            .await;
        let assignment = match synced {
            Ok(assignment) => assignment,
            Err(error) => {
                return Err(match error.kafka_error().map(|error| error.code) {
                    Some(UNKNOWN_MEMBER_ID) => {
                        self.member_id.clear();
                        JoinStep::Again
                    }
                    Some(ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS) => JoinStep::Again,
                    _ => classify(error),
                })
            }
        };
        let partitions = decode_assignment(&assignment).map_err(JoinStep::Fatal)?;
        self.generation_id = joined.generation_id;
        self.protocol_name = joined.protocol_name;
        let mut shared = self.shared.borrow_mut();
        shared.generation_id = self.generation_id;
        shared.member_id.clone_from(&self.member_id);
        shared.signal = None;
        Ok(partitions)
    }

    /// The leader's work: decode every member's subscription, look up the partition counts,
    /// run the chosen assignor, encode each member's share.
    async fn leader_assignments(
        &mut self,
        joined: &JoinOutcome,
    ) -> Result<Vec<(String, Bytes)>, ClientError> {
        let name = joined.protocol_name.as_deref().unwrap_or_default();
        let assignor = Assignor::from_name(name).ok_or_else(|| {
            ClientError::Protocol(format!(
                "the group chose assignor {name:?}, not one offered"
            ))
        })?;
        // A member whose metadata does not decode subscribes to nothing: it gets an empty
        // assignment rather than failing the whole group.
        let members: Vec<MemberSubscription> = joined
            .members
            .iter()
            .map(|member| MemberSubscription {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                topics: decode_subscription(&member.metadata).unwrap_or_default(),
            })
            .collect();
        let topics: BTreeSet<&str> = members
            .iter()
            .flat_map(|member| member.topics.iter().map(String::as_str))
            .collect();
        let topics: Vec<&str> = topics.into_iter().collect();
        let mut counts = BTreeMap::new();
        if !topics.is_empty() {
            let coordinator = self.coordinator().await?;
            let cluster = coordinator.metadata(Some(&topics), false).await?;
            for topic in cluster.topics {
                if topic.error.is_none() {
                    let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
                    counts.insert(topic.name, count);
                }
            }
        }
        assignor
            .assign(&members, &counts)
            .into_iter()
            .map(|(member, partitions)| Ok((member, encode_assignment(&partitions)?)))
            .collect()
    }

    /// Commits offsets in the current generation. Coordinator errors are retried after a
    /// [`Backoff`]; a stale generation or member fails (the partitions may belong to another
    /// member by now).
    pub async fn commit(&mut self, offsets: &[OffsetToCommit]) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::default();
        loop {
            let (group_id, generation_id, member_id) = (
                self.config.group_id.clone(),
                self.generation_id,
                self.member_id.clone(),
            );
            let result = match self.coordinator().await {
                Ok(coordinator) => {
                    coordinator
                        .commit_offsets(&group_id, generation_id, &member_id, None, offsets)
                        .await
                }
                Err(error) => Err(error),
            };
            match result {
                Err(error) if retriable(&error) => {
                    self.forget_coordinator();
                    if !backoff.wait().await {
                        return Err(error);
                    }
                }
                other => return other,
            }
        }
    }

    /// The group's committed offsets of `partitions` (`None` where nothing is committed).
    pub async fn committed(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let mut backoff = Backoff::default();
        loop {
            let group_id = self.config.group_id.clone();
            let result = match self.coordinator().await {
                Ok(coordinator) => {
                    coordinator
                        .fetch_committed(&group_id, Some(partitions))
                        .await
                }
                Err(error) => Err(error),
            };
            match result {
                Err(error) if retriable(&error) => {
                    self.forget_coordinator();
                    if !backoff.wait().await {
                        return Err(error);
                    }
                }
                other => return other,
            }
        }
    }

    /// After [`MemberSignal::CoordinatorLost`]: finds the coordinator again and restarts the
    /// heartbeat in the same generation (a stale one then shows up as a rejoin signal).
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.stop_heartbeat().await;
        self.forget_coordinator();
        let mut backoff = Backoff::default();
        loop {
            match self.coordinator().await {
                Ok(_) => break,
                Err(error) if retriable(&error) => {
                    self.forget_coordinator();
                    if !backoff.wait().await {
                        return Err(error);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        self.start_heartbeat().await
    }

    /// Leaves the group (LeaveGroup) and stops the heartbeat. Nothing to do before a join.
    pub async fn leave(&mut self) -> Result<(), ClientError> {
        self.stop_heartbeat().await;
        self.generation_id = -1;
        if self.member_id.is_empty() {
            return Ok(());
        }
        let (group_id, member_id) = (self.config.group_id.clone(), self.member_id.clone());
        let result = match self.coordinator().await {
            Ok(coordinator) => coordinator.leave_group(&group_id, &member_id, None).await,
            Err(error) => Err(error),
        };
        self.member_id.clear();
        result
    }

    /// The connection to the coordinator, found and opened if needed.
    async fn coordinator(&mut self) -> Result<&mut Client, ClientError> {
        if self.coordinator.is_none() {
            let mut bootstrap =
                Client::connect(&self.bootstrap, self.client_config.clone()).await?;
            let found = bootstrap.find_coordinator(&self.config.group_id).await?;
            let address = found.address();
            let client = Client::connect(&address, self.client_config.clone()).await?;
            self.coordinator_address = Some(address);
            self.coordinator = Some(client);
        }
        self.coordinator
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("no coordinator connection".into()))
    }

    fn forget_coordinator(&mut self) {
        self.coordinator = None;
        self.coordinator_address = None;
    }

    async fn start_heartbeat(&mut self) -> Result<(), ClientError> {
        self.stop_heartbeat().await;
        let address = match &self.coordinator_address {
            Some(address) => address.clone(),
            None => {
                self.coordinator().await?;
                self.coordinator_address.clone().unwrap_or_default()
            }
        };
        let client = Client::connect(&address, self.client_config.clone()).await?;
        let task = glommio::spawn_local(heartbeat_loop(
            client,
            self.config.group_id.clone(),
            self.config.heartbeat_interval,
            Rc::clone(&self.shared),
        ));
        self.heartbeat = Some(task);
        Ok(())
    }

    async fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.cancel().await;
        }
    }
}

/// Sends a heartbeat every `interval` until one fails, then reports why and ends.
async fn heartbeat_loop(
    mut client: Client,
    group_id: String,
    interval: Duration,
    shared: Rc<RefCell<Shared>>,
) {
    loop {
        glommio::timer::sleep(interval).await;
        let (generation_id, member_id) = {
            let shared = shared.borrow();
            (shared.generation_id, shared.member_id.clone())
        };
        let signal = match client
            .heartbeat(&group_id, generation_id, &member_id, None)
            .await
        {
            Ok(()) => continue,
            Err(error) => match error.kafka_error() {
                Some(kafka)
                    if matches!(
                        kafka.code,
                        REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID
                    ) =>
                {
                    MemberSignal::Rejoin(kafka.clone())
                }
                Some(kafka) if is_coordinator_error(kafka.code) => {
                    MemberSignal::CoordinatorLost(error.to_string())
                }
                Some(kafka) => MemberSignal::Fatal(kafka.clone()),
                None => MemberSignal::CoordinatorLost(error.to_string()),
            },
        };
        shared.borrow_mut().signal = Some(signal);
        return;
    }
}

/// Coordinator errors and failed connections: worth finding the coordinator again.
fn retriable(error: &ClientError) -> bool {
    coordinator_error(error) || error.is_connection()
}

fn classify(error: ClientError) -> JoinStep {
    if retriable(&error) {
        JoinStep::Coordinator(error)
    } else {
        JoinStep::Fatal(error)
    }
}

/// Admin calls on groups, each sent to the group's coordinator (found once per group and
/// cached), with coordinator errors retried after a [`Backoff`]. Connection failures are not
/// retried: an admin command reports them.
pub struct GroupAdmin {
    bootstrap: Client,
    /// Coordinator connections by address.
    connections: HashMap<String, Client>,
    /// Group id -> coordinator address.
    coordinators: HashMap<String, String>,
}

impl GroupAdmin {
    /// Admin calls through `bootstrap` (also used for metadata and ListGroups).
    pub fn new(bootstrap: Client) -> GroupAdmin {
        GroupAdmin {
            bootstrap,
            connections: HashMap::new(),
            coordinators: HashMap::new(),
        }
    }

    /// The bootstrap connection, for metadata and offsets.
    pub fn client(&mut self) -> &mut Client {
        &mut self.bootstrap
    }

    /// Every group of the broker, sorted by id.
    pub async fn list(&mut self) -> Result<Vec<GroupListing>, ClientError> {
        let mut backoff = Backoff::default();
        loop {
            match self.bootstrap.list_groups().await {
                Err(error) if coordinator_error(&error) && backoff.wait().await => {}
                other => return other,
            }
        }
    }

    /// DescribeGroups of one group.
    pub async fn describe(&mut self, group_id: &str) -> Result<GroupInfo, ClientError> {
        let mut backoff = Backoff::default();
        loop {
            let result = match self.coordinator(group_id).await {
                Ok(client) => client.describe_group(group_id).await,
                Err(error) => Err(error),
            };
            if !self.retry(group_id, &result, &mut backoff).await {
                return result;
            }
        }
    }

    /// Every committed offset of the group.
    pub async fn committed(&mut self, group_id: &str) -> Result<Vec<CommittedOffset>, ClientError> {
        let mut backoff = Backoff::default();
        loop {
            let result = match self.coordinator(group_id).await {
                Ok(client) => client.fetch_committed(group_id, None).await,
                Err(error) => Err(error),
            };
            if !self.retry(group_id, &result, &mut backoff).await {
                return result;
            }
        }
    }

    /// Commits as an admin (generation -1, no member): only an empty group accepts it.
    pub async fn commit(
        &mut self,
        group_id: &str,
        offsets: &[OffsetToCommit],
    ) -> Result<(), ClientError> {
        let mut backoff = Backoff::default();
        loop {
            let result = match self.coordinator(group_id).await {
                Ok(client) => client.commit_offsets(group_id, -1, "", None, offsets).await,
                Err(error) => Err(error),
            };
            if !self.retry(group_id, &result, &mut backoff).await {
                return result;
            }
        }
    }

    /// Deletes one group; its own error (e.g. NON_EMPTY_GROUP) is `Ok(Some(..))`.
    pub async fn delete(&mut self, group_id: &str) -> Result<Option<KafkaError>, ClientError> {
        let mut backoff = Backoff::default();
        loop {
            let result = match self.coordinator(group_id).await {
                Ok(client) => client.delete_groups(&[group_id.to_string()]).await,
                Err(error) => Err(error),
            };
            let result = result.map(|mut results| results.pop().and_then(|(_, error)| error));
            let retriable_answer =
                matches!(&result, Ok(Some(error)) if is_coordinator_error(error.code));
            if retriable_answer {
                self.coordinators.remove(group_id);
                if backoff.wait().await {
                    continue;
                }
                return result;
            }
            if !self.retry(group_id, &result, &mut backoff).await {
                return result;
            }
        }
    }

    /// True (after a backoff) when `result` is a coordinator error worth another try.
    async fn retry<T>(
        &mut self,
        group_id: &str,
        result: &Result<T, ClientError>,
        backoff: &mut Backoff,
    ) -> bool {
        match result {
            Err(error) if coordinator_error(error) => {
                if error
                    .kafka_error()
                    .is_some_and(|e| e.code == NOT_COORDINATOR)
                {
                    self.coordinators.remove(group_id);
                }
                backoff.wait().await
            }
            Err(error) if error.is_connection() => {
                // The coordinator connection is unusable; the next call reconnects once more.
                if let Some(address) = self.coordinators.remove(group_id) {
                    self.connections.remove(&address);
                }
                false
            }
            _ => false,
        }
    }

    async fn coordinator(&mut self, group_id: &str) -> Result<&mut Client, ClientError> {
        let address = match self.coordinators.get(group_id) {
            Some(address) => address.clone(),
            None => {
                let address = self.bootstrap.find_coordinator(group_id).await?.address();
                self.coordinators
                    .insert(group_id.to_string(), address.clone());
                address
            }
        };
        if !self.connections.contains_key(&address) {
            let client = Client::connect(&address, self.bootstrap.config.clone()).await?;
            self.connections.insert(address.clone(), client);
        }
        self.connections
            .get_mut(&address)
            .ok_or_else(|| ClientError::Protocol("no coordinator connection".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instance: Option<&str>, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            group_instance_id: instance.map(Into::into),
            topics: topics.iter().map(|topic| topic.to_string()).collect(),
        }
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics
            .iter()
            .map(|(topic, count)| (topic.to_string(), *count))
            .collect()
    }

    fn flat(assignment: &BTreeMap<String, Vec<i32>>) -> Vec<(String, i32)> {
        assignment
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(|p| (topic.clone(), *p)))
            .collect()
    }

    #[test]
    fn range_gives_consecutive_ranges_the_first_members_one_more() {
        let members = [
            member("b", None, &["t"]),
            member("a", None, &["t"]),
            member("c", None, &["t"]),
        ];
        let result = Assignor::Range.assign(&members, &counts(&[("t", 7)]));
        assert_eq!(result["a"]["t"], vec![0, 1, 2]);
        assert_eq!(result["b"]["t"], vec![3, 4]);
        assert_eq!(result["c"]["t"], vec![5, 6]);
    }

    #[test]
    fn range_leaves_extra_members_idle_and_is_per_topic() {
        let members = [
            member("m1", None, &["t", "u"]),
            member("m2", None, &["t"]),
            member("m3", None, &["t"]),
        ];
        let result = Assignor::Range.assign(&members, &counts(&[("t", 2), ("u", 2)]));
        assert_eq!(
            flat(&result["m1"]),
            vec![("t".into(), 0), ("u".into(), 0), ("u".into(), 1)]
        );
        assert_eq!(flat(&result["m2"]), vec![("t".into(), 1)]);
        assert!(
            result["m3"].is_empty(),
            "more members than partitions: one idles"
        );
    }

    #[test]
    fn static_members_come_first() {
        let members = [member("a", None, &["t"]), member("z", Some("i1"), &["t"])];
        let result = Assignor::Range.assign(&members, &counts(&[("t", 3)]));
        assert_eq!(result["z"]["t"], vec![0, 1]);
        assert_eq!(result["a"]["t"], vec![2]);
    }

    #[test]
    fn roundrobin_deals_partitions_in_turn_skipping_unsubscribed_members() {
        let members = [
            member("a", None, &["t", "u"]),
            member("b", None, &["t"]),
            member("c", None, &["u"]),
        ];
        let result = Assignor::RoundRobin.assign(&members, &counts(&[("t", 3), ("u", 3)]));
        // t0 a, t1 b, t2 a (c skips t), u0 c (b skips u), u1 a, u2 c.
        assert_eq!(
            flat(&result["a"]),
            vec![("t".into(), 0), ("t".into(), 2), ("u".into(), 1)]
        );
        assert_eq!(flat(&result["b"]), vec![("t".into(), 1)]);
        assert_eq!(flat(&result["c"]), vec![("u".into(), 0), ("u".into(), 2)]);
    }

    #[test]
    fn unknown_topics_assign_nothing() {
        let members = [member("a", None, &["missing"])];
        let result = Assignor::Range.assign(&members, &counts(&[]));
        assert!(result["a"].is_empty());
        let result = Assignor::RoundRobin.assign(&members, &counts(&[]));
        assert!(result["a"].is_empty());
    }

    #[test]
    fn subscriptions_and_assignments_round_trip_with_a_version_prefix() {
        let topics = vec!["t".to_string(), "u".to_string()];
        let encoded = encode_subscription(&topics).unwrap();
        assert_eq!(&encoded[..2], &CONSUMER_PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(decode_subscription(&encoded).unwrap(), topics);

        let mut partitions = BTreeMap::new();
        partitions.insert("t".to_string(), vec![2, 0]);
        let encoded = encode_assignment(&partitions).unwrap();
        assert_eq!(
            decode_assignment(&encoded).unwrap(),
            vec![("t".into(), 0), ("t".into(), 2)]
        );
        assert!(decode_assignment(&[]).unwrap().is_empty());
    }

    #[test]
    fn older_and_newer_subscription_versions_decode() {
        // Version 0 as old clients write it: topics array, then null user data.
        let mut v0 = BytesMut::new();
        v0.put_i16(0);
        v0.put_i32(1);
        v0.put_i16(1);
        v0.put_slice(b"t");
        v0.put_i32(-1);
        assert_eq!(decode_subscription(&v0).unwrap(), vec!["t".to_string()]);
        // A future version 9 that appends a field: read as the newest known.
        let mut v9 = BytesMut::new();
        v9.put_i16(9);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![str_bytes("t")])
            .encode(&mut v9, CONSUMER_PROTOCOL_VERSION)
            .unwrap();
        v9.put_i32(12345);
        assert_eq!(decode_subscription(&v9).unwrap(), vec!["t".to_string()]);
    }

    #[test]
    fn malformed_consumer_protocol_bytes_are_errors_not_panics() {
        for bad in [
            &[0u8][..],
            &[0xff, 0xff],
            &[0, 0, 0x7f, 0xff, 0xff, 0xff],
            &[0, 3, 0, 0, 0, 9],
        ] {
            assert!(decode_subscription(bad).is_err(), "{bad:?}");
            assert!(decode_assignment(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake broker on std threads: answers ApiVersions with the broker's table, then every
    /// request with `answer(api key, version)`, on any number of connections.
    fn fake_broker(
        answer: impl Fn(ApiKey, &str) -> kafka_protocol::messages::ResponseKind + Send + Sync + 'static,
    ) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let answer = std::sync::Arc::new(answer);
        let own_address = address.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let answer = answer.clone();
                let own_address = own_address.clone();
                std::thread::spawn(move || loop {
                    let mut prefix = [0u8; 4];
                    if stream.read_exact(&mut prefix).is_err() {
                        return;
                    }
                    let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
                    stream.read_exact(&mut body).expect("body");
                    let key = i16::from_be_bytes([body[0], body[1]]);
                    let version = i16::from_be_bytes([body[2], body[3]]);
                    let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    let key = ApiKey::try_from(key).expect("known key");
                    let response = if key == ApiKey::ApiVersions {
                        kafka_protocol::messages::ResponseKind::ApiVersions(
                            crate::handlers::api_versions::handle(0),
                        )
                    } else {
                        answer(key, &own_address)
                    };
                    let frame =
                        crate::codec::encode_response(key, version, correlation_id, &response)
                            .expect("encodes");
                    stream.write_all(&frame).expect("write");
                });
            }
        });
        address
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(future)
    }

    fn coordinator_answer(address: &str) -> kafka_protocol::messages::ResponseKind {
        use kafka_protocol::messages::find_coordinator_response::Coordinator as Answer;
        let (host, port) = address.rsplit_once(':').expect("host:port");
        kafka_protocol::messages::ResponseKind::FindCoordinator(
            kafka_protocol::messages::FindCoordinatorResponse::default().with_coordinators(vec![
                Answer::default()
                    .with_key(str_bytes("g"))
                    .with_node_id(kafka_protocol::messages::BrokerId(1))
                    .with_host(str_bytes(host))
                    .with_port(port.parse().expect("port")),
            ]),
        )
    }

    fn described(code: i16) -> kafka_protocol::messages::ResponseKind {
        use kafka_protocol::messages::describe_groups_response::DescribedGroup;
        kafka_protocol::messages::ResponseKind::DescribeGroups(
            kafka_protocol::messages::DescribeGroupsResponse::default().with_groups(vec![
                DescribedGroup::default()
                    .with_group_id(GroupId(str_bytes("g")))
                    .with_error_code(code)
                    .with_group_state(str_bytes("Empty")),
            ]),
        )
    }

    #[test]
    fn coordinator_errors_are_retried_until_the_group_loads() {
        let describes = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = describes.clone();
        let address = fake_broker(move |key, address| match key {
            ApiKey::FindCoordinator => coordinator_answer(address),
            ApiKey::DescribeGroups => {
                let seen = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Loading twice, then a coordinator move, then the answer.
                described(match seen {
                    0 | 1 => COORDINATOR_LOAD_IN_PROGRESS,
                    2 => NOT_COORDINATOR,
                    _ => 0,
                })
            }
            other => panic!("unexpected {other:?}"),
        });
        run(async move {
            let bootstrap = Client::connect(&address, ClientConfig::default())
                .await
                .expect("connects");
            let mut admin = GroupAdmin::new(bootstrap);
            let group = admin.describe("g").await.expect("answered in the end");
            assert_eq!(group.state, "Empty");
        });
        assert_eq!(describes.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[test]
    fn other_group_errors_are_not_retried() {
        let address = fake_broker(move |key, address| match key {
            ApiKey::FindCoordinator => coordinator_answer(address),
            ApiKey::DescribeGroups => described(30), // GROUP_AUTHORIZATION_FAILED
            other => panic!("unexpected {other:?}"),
        });
        run(async move {
            let bootstrap = Client::connect(&address, ClientConfig::default())
                .await
                .expect("connects");
            let error = GroupAdmin::new(bootstrap)
                .describe("g")
                .await
                .expect_err("refused");
            assert_eq!(error.kafka_error().map(|error| error.code), Some(30));
        });
    }

    #[test]
    fn backoff_gives_up_after_its_waits() {
        run(async {
            let mut backoff = Backoff {
                waits_max: 3,
                first: Duration::from_millis(1),
                ..Backoff::default()
            };
            let mut waited = 0;
            while backoff.wait().await {
                waited += 1;
                assert!(waited <= 3, "unbounded");
            }
            assert_eq!(waited, 3);
        });
    }

    #[test]
    fn coordinator_addresses_bracket_ipv6() {
        let coordinator = |host: &str| Coordinator {
            node_id: 1,
            host: host.into(),
            port: 9092,
        };
        assert_eq!(coordinator("127.0.0.1").address(), "127.0.0.1:9092");
        assert_eq!(coordinator("::1").address(), "[::1]:9092");
    }
}
