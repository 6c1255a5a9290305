//! A small async Kafka client: one connection to one broker, one request at a time.
//!
//! Used by the `runnel` command-line tools and the load generator (`runnel-load`), so there is
//! exactly one copy of the client side of the protocol. It speaks through the same `kafka-protocol`
//! structs and framing ([`crate::frame`]) as the broker, negotiates versions with ApiVersions on
//! connect, and offers the calls the tools need: metadata, create/delete topics, describe/alter
//! topic configs, produce, fetch (records decoded by [`records`]) and list offsets, and the
//! consumer-group calls and membership driver in [`group`].
//!
//! Runs on one glommio executor (the `TcpStream` is `!Send`); not for concurrent use: every call
//! takes `&mut self`. Every call is bounded by a timeout, and every response by
//! [`ClientConfig::response_bytes_max`] before anything is allocated. After a transport failure
//! (I/O error, timeout, a response out of order) the connection's state is unknown, so the
//! client latches broken and every later call returns [`ClientError::Broken`]. For throughput,
//! a [`pipeline::Pipeline`] takes a connection over and keeps several requests in flight.
//!
//! Apart from [`group`] (which follows a group to its coordinator and retries coordinator
//! errors, bounded), it does not retry or know about leaders other than the one broker it is
//! connected to (single-node clusters; a cluster-aware client is the cluster issues' work).

pub mod group;
pub mod partitioner;
pub mod pipeline;
pub mod records;

use crate::frame::{self, FrameError};
use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    alter_configs_request, create_topics_request, delete_topics_request, describe_configs_request,
    fetch_request, incremental_alter_configs_request, list_offsets_request, metadata_request,
    produce_request, AlterConfigsRequest, ApiVersionsRequest, ApiVersionsResponse,
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
pub use partitioner::partition_for_key;
use records::{RecordBatch, RecordError};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use uuid::Uuid;

/// The API keys, for [`Client::version`] and [`ClientError::UnsupportedApi`].
pub use kafka_protocol::messages::ApiKey;

/// Versions this client can speak, per API: the request's fields are filled in for every
/// version in range. Topic-ID versions (Produce 13, Fetch 13+) are left out, as on the broker.
const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 2, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 2, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
];

/// The ApiVersions version sent first; a broker that does not know it answers error 35 with a
/// v0 body, and the client asks again with v0.
const API_VERSIONS_FIRST: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;
/// Config resource type of a topic (DescribeConfigs, AlterConfigs).
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// Broker-side timeout passed in admin and produce requests.
const BROKER_TIMEOUT_MS: i32 = 30_000;

/// ListOffsets timestamp meaning the log end (the next offset to be written).
pub const LATEST_OFFSET: i64 = -1;
/// ListOffsets timestamp meaning the log start (the first retained offset).
pub const EARLIEST_OFFSET: i64 = -2;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Sent in every request header.
    pub client_id: String,
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on one request's round trip (a fetch adds its `max_wait_ms`).
    pub request_timeout: Duration,
    /// Largest response frame accepted; a larger length prefix fails before allocating.
    pub response_bytes_max: usize,
    /// Decompression budget for one partition's data in one fetch response.
    pub decompressed_bytes_max: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            client_id: "runnel".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            response_bytes_max: frame::DEFAULT_FRAME_BYTES_MAX,
            decompressed_bytes_max: 256 << 20,
        }
    }
}

/// An error code from the broker, with its message when the response carries one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaError {
    /// The Kafka error code (never 0).
    pub code: i16,
    /// The broker's error message, if any.
    pub message: Option<String>,
}

impl KafkaError {
    /// `None` for code 0 (no error).
    pub fn from_code(code: i16, message: Option<&StrBytes>) -> Option<KafkaError> {
        (code != 0).then(|| KafkaError {
            code,
            message: message
                .map(|message| message.as_str().to_string())
                .filter(|message| !message.is_empty()),
        })
    }

    /// The name Kafka's tools print, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
    pub fn name(&self) -> String {
        match ResponseError::try_from_code(self.code) {
            Some(ResponseError::Unknown(_)) | None => format!("UNKNOWN_ERROR_CODE_{}", self.code),
            Some(known) => screaming_snake(&known.to_string()),
        }
    }
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => write!(formatter, "{}: {message}", self.name()),
            None => formatter.write_str(&self.name()),
        }
    }
}

/// `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(character.to_ascii_uppercase());
    }
    out
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// What was dialled.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// Writing a request or reading a response failed.
    #[error("connection to the broker failed: {0}")]
    Transport(String),
    /// No response within the timeout.
    #[error("no response from the broker within {0:?}")]
    Timeout(Duration),
    /// An earlier transport failure left the connection in an unknown state.
    #[error("connection unusable after an earlier failure: {0}")]
    Broken(String),
    /// The broker does not serve a version of this API that the client speaks.
    #[error("the broker does not support {api:?} (broker versions {broker:?}, client {client_min}..={client_max})")]
    UnsupportedApi {
        /// The API.
        api: ApiKey,
        /// The broker's advertised range, if it advertises the API at all.
        broker: Option<(i16, i16)>,
        /// Oldest version the client speaks.
        client_min: i16,
        /// Newest version the client speaks.
        client_max: i16,
    },
    /// The broker answered with an error code.
    #[error("{error} ({context})")]
    Broker {
        /// What the client was doing, e.g. `creating topic t`.
        context: String,
        /// The code and message.
        error: KafkaError,
    },
    /// A response that does not decode or does not answer the request.
    #[error("malformed response: {0}")]
    Protocol(String),
    /// Fetched records that do not decode.
    #[error(transparent)]
    Records(#[from] RecordError),
}

impl ClientError {
    /// The broker could not be reached or the connection failed (as opposed to an answer).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Transport(_)
                | ClientError::Timeout(_)
                | ClientError::Broken(_)
        )
    }

    /// The Kafka error when the broker answered with one.
    pub fn kafka_error(&self) -> Option<&KafkaError> {
        match self {
            ClientError::Broker { error, .. } => Some(error),
            _ => None,
        }
    }

    fn broker(context: impl Into<String>, error: KafkaError) -> ClientError {
        ClientError::Broker {
            context: context.into(),
            error,
        }
    }
}

/// A broker in Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if any.
    pub rack: Option<String>,
}

/// A partition in Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader node id (-1 if none).
    pub leader: i32,
    /// Leader epoch (-1 if unknown).
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Per-partition error.
    pub error: Option<KafkaError>,
}

/// A topic in Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (nil before Metadata v10).
    pub topic_id: Uuid,
    /// An internal topic such as `__consumer_offsets`.
    pub is_internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionInfo>,
    /// Per-topic error (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    pub error: Option<KafkaError>,
}

/// A Metadata answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Cluster id, if the broker has one.
    pub cluster_id: Option<String>,
    /// Controller node id.
    pub controller_id: i32,
    /// Brokers.
    pub brokers: Vec<BrokerInfo>,
    /// Topics, in the broker's order.
    pub topics: Vec<TopicInfo>,
}

/// A topic to create.
#[derive(Clone, Debug, Default)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count; `None` for the broker's `num.partitions`.
    pub partitions: Option<i32>,
    /// Replication factor; `None` for the broker's default.
    pub replication_factor: Option<i16>,
    /// Topic configs.
    pub configs: Vec<(String, String)>,
}

/// Where a config value comes from (DescribeConfigs `config_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigSource(pub i8);

impl ConfigSource {
    /// Set on the topic itself.
    pub const TOPIC: ConfigSource = ConfigSource(1);

    /// Kafka's name for the source.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "DYNAMIC_TOPIC_CONFIG",
            2 => "DYNAMIC_BROKER_CONFIG",
            3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            4 => "STATIC_BROKER_CONFIG",
            5 => "DEFAULT_CONFIG",
            6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
            7 => "CLIENT_METRICS_CONFIG",
            8 => "GROUP_CONFIG",
            _ => "UNKNOWN",
        }
    }
}

/// One entry of DescribeConfigs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name, e.g. `retention.ms`.
    pub name: String,
    /// Value; `None` when null or sensitive.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Cannot be altered.
    pub read_only: bool,
    /// Value hidden.
    pub is_sensitive: bool,
}

/// Limits of one Fetch request.
#[derive(Clone, Copy, Debug)]
pub struct FetchOptions {
    /// Longest the broker may wait for `min_bytes`.
    pub max_wait_ms: i32,
    /// Bytes that end the wait early.
    pub min_bytes: i32,
    /// Response limit (at least one batch is returned anyway, KIP-74).
    pub max_bytes: i32,
    /// Per-partition limit.
    pub partition_max_bytes: i32,
    /// 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
}

impl Default for FetchOptions {
    /// The Java consumer's defaults, with a shorter wait.
    fn default() -> FetchOptions {
        FetchOptions {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            isolation_level: 0,
        }
    }
}

/// A partition to fetch and the offset to read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPosition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
}

/// One partition of a Fetch answer.
#[derive(Clone, Debug)]
pub struct FetchedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Per-partition error (e.g. OFFSET_OUT_OF_RANGE); no batches then.
    pub error: Option<KafkaError>,
    /// The offset after the last committed record.
    pub high_watermark: i64,
    /// The first retained offset (-1 if the broker did not say).
    pub log_start_offset: i64,
    /// Whole batches, CRC-checked and decompressed. The first may start before the offset asked
    /// for: skip records below it.
    pub batches: Vec<RecordBatch>,
}

/// One partition's Produce answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducedPartition {
    /// Partition.
    pub partition: i32,
    /// Offset given to the batch's first record.
    pub base_offset: i64,
}

/// One partition's answer in a Produce response: the partition and its base offset or error.
pub type PartitionAnswer = (i32, Result<i64, KafkaError>);

/// A connection to one broker. See the module documentation.
pub struct Client {
    stream: TcpStream,
    address: SocketAddr,
    config: ClientConfig,
    /// Broker's advertised (min, max) per API key, from ApiVersions.
    broker_versions: BTreeMap<i16, (i16, i16)>,
    next_correlation_id: i32,
    broken: Option<String>,
}

impl Client {
    /// Connects to `bootstrap` (`HOST:PORT`; each resolved address is tried in turn) and
    /// negotiates API versions.
    pub async fn connect(bootstrap: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            address: bootstrap.to_string(),
            reason,
        };
        let addresses: Vec<SocketAddr> = bootstrap
            .to_socket_addrs()
            .map_err(|error| connect_error(error.to_string()))?
            .collect();
        let mut last_error = "the address resolves to nothing".to_string();
        for address in addresses {
            match TcpStream::connect_timeout(address, config.connect_timeout).await {
                Ok(stream) => {
                    stream
                        .set_nodelay(true)
                        .map_err(|error| connect_error(error.to_string()))?;
                    let mut client = Client {
                        stream,
                        address,
                        config,
                        broker_versions: BTreeMap::new(),
                        next_correlation_id: 0,
                        broken: None,
                    };
                    client.negotiate_versions().await?;
                    return Ok(client);
                }
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(connect_error(last_error))
    }

    /// The broker's address this client is connected to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The broker's advertised version range for `api`, if it serves it.
    pub fn broker_versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.broker_versions.get(&(api as i16)).copied()
    }

    /// The version the client will use for `api`: the newest both sides speak.
    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        negotiated_version(&self.broker_versions, api)
    }

    async fn negotiate_versions(&mut self) -> Result<(), ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("runnel"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = self.api_versions(API_VERSIONS_FIRST, &request).await?;
        if response.error_code == UNSUPPORTED_VERSION {
            response = self.api_versions(0, &ApiVersionsRequest::default()).await?;
        }
        if let Some(error) = KafkaError::from_code(response.error_code, None) {
            return Err(ClientError::broker("negotiating API versions", error));
        }
        self.broker_versions = response
            .api_keys
            .iter()
            .map(|key| (key.api_key, (key.min_version, key.max_version)))
            .collect();
        Ok(())
    }

    /// One ApiVersions round trip. A broker that does not know `version` answers with a v0
    /// body (KIP-511), so a body that does not decode as `version` is read as v0.
    async fn api_versions(
        &mut self,
        version: i16,
        request: &ApiVersionsRequest,
    ) -> Result<ApiVersionsResponse, ClientError> {
        let body = self
            .round_trip(request, version, self.config.request_timeout)
            .await?;
        match ApiVersionsResponse::decode(&mut body.clone(), version) {
            Ok(response) if response.error_code != UNSUPPORTED_VERSION => Ok(response),
            _ => ApiVersionsResponse::decode(&mut body.clone(), 0)
                .map_err(|error| ClientError::Protocol(format!("ApiVersions: {error}"))),
        }
    }

    /// Metadata for `topics` (`None`: every topic). `allow_auto_create` lets the broker create
    /// missing topics (only sent from v4; older versions always allow it).
    pub async fn metadata(
        &mut self,
        topics: Option<&[&str]>,
        allow_auto_create: bool,
    ) -> Result<ClusterInfo, ClientError> {
        let version = self.version(ApiKey::Metadata)?;
        let mut request = MetadataRequest::default().with_topics(topics.map(|names| {
            names
                .iter()
                .map(|name| {
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic_name(name)))
                })
                .collect()
        }));
        if version >= 4 {
            request.allow_auto_topic_creation = allow_auto_create;
        }
        let response = self.call(&request, version).await?;
        let topics = response
            .topics
            .into_iter()
            .map(|topic| {
                let mut partitions: Vec<PartitionInfo> = topic
                    .partitions
                    .into_iter()
                    .map(|partition| PartitionInfo {
                        partition: partition.partition_index,
                        leader: partition.leader_id.0,
                        leader_epoch: partition.leader_epoch,
                        replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                        isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                        error: KafkaError::from_code(partition.error_code, None),
                    })
                    .collect();
                partitions.sort_by_key(|partition| partition.partition);
                TopicInfo {
                    name: topic
                        .name
                        .map(|name| name.0.to_string())
                        .unwrap_or_default(),
                    topic_id: topic.topic_id,
                    is_internal: topic.is_internal,
                    partitions,
                    error: KafkaError::from_code(topic.error_code, None),
                }
            })
            .collect();
        Ok(ClusterInfo {
            cluster_id: response.cluster_id.map(|id| id.to_string()),
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .into_iter()
                .map(|broker| BrokerInfo {
                    node_id: broker.node_id.0,
                    host: broker.host.to_string(),
                    port: broker.port,
                    rack: broker.rack.map(|rack| rack.to_string()),
                })
                .collect(),
            topics,
        })
    }

    /// Metadata of one topic, without auto-creating it; its error (e.g.
    /// UNKNOWN_TOPIC_OR_PARTITION) is returned as [`ClientError::Broker`].
    pub async fn topic(
        &mut self,
        name: &str,
        allow_auto_create: bool,
    ) -> Result<TopicInfo, ClientError> {
        let cluster = self.metadata(Some(&[name]), allow_auto_create).await?;
        let topic = cluster
            .topics
            .into_iter()
            .find(|topic| topic.name == name)
            .ok_or_else(|| ClientError::Protocol(format!("Metadata did not list topic {name}")))?;
        match &topic.error {
            Some(error) => Err(ClientError::broker(format!("topic {name}"), error.clone())),
            None => Ok(topic),
        }
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be created).
    pub async fn create_topic(
        &mut self,
        topic: &NewTopic,
        validate_only: bool,
    ) -> Result<(), ClientError> {
        let version = self.version(ApiKey::CreateTopics)?;
        // Before v4 the request cannot ask for the broker's defaults.
        let default = if version >= 4 { -1 } else { 1 };
        let request = CreateTopicsRequest::default()
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(topic_name(&topic.name))
                .with_num_partitions(topic.partitions.unwrap_or(default))
                .with_replication_factor(topic.replication_factor.unwrap_or(default as i16))
                .with_configs(
                    topic
                        .configs
                        .iter()
                        .map(|(name, value)| {
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(str_bytes(name))
                                .with_value(Some(str_bytes(value)))
                        })
                        .collect(),
                )])
            .with_timeout_ms(BROKER_TIMEOUT_MS)
            .with_validate_only(validate_only);
        let response = self.call(&request, version).await?;
        let result = response
            .topics
            .iter()
            .find(|result| result.name.0.as_str() == topic.name)
            .ok_or_else(|| {
                ClientError::Protocol("CreateTopics did not answer for the topic".into())
            })?;
        match KafkaError::from_code(result.error_code, result.error_message.as_ref()) {
            Some(error) => Err(ClientError::broker(
                format!("creating topic {}", topic.name),
                error,
            )),
            None => Ok(()),
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        let version = self.version(ApiKey::DeleteTopics)?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(BROKER_TIMEOUT_MS);
        if version >= 6 {
            request.topics = vec![delete_topics_request::DeleteTopicState::default()
                .with_name(Some(topic_name(name)))];
        } else {
            request.topic_names = vec![topic_name(name)];
        }
        let response = self.call(&request, version).await?;
        let result = response
            .responses
            .iter()
            .find(|result| result.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .ok_or_else(|| {
                ClientError::Protocol("DeleteTopics did not answer for the topic".into())
            })?;
        match KafkaError::from_code(result.error_code, result.error_message.as_ref()) {
            Some(error) => Err(ClientError::broker(format!("deleting topic {name}"), error)),
            None => Ok(()),
        }
    }

    /// Every config of a topic, with its source.
    pub async fn describe_topic_configs(
        &mut self,
        name: &str,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let version = self.version(ApiKey::DescribeConfigs)?;
        let request = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(name))
                .with_configuration_keys(None),
        ]);
        let response = self.call(&request, version).await?;
        let result = response
            .results
            .into_iter()
            .find(|result| result.resource_name.as_str() == name)
            .ok_or_else(|| {
                ClientError::Protocol("DescribeConfigs did not answer for the topic".into())
            })?;
        if let Some(error) = KafkaError::from_code(result.error_code, result.error_message.as_ref())
        {
            return Err(ClientError::broker(
                format!("describing configs of topic {name}"),
                error,
            ));
        }
        Ok(result
            .configs
            .into_iter()
            .map(|entry| ConfigEntry {
                name: entry.name.to_string(),
                value: entry.value.map(|value| value.to_string()),
                source: ConfigSource(entry.config_source),
                read_only: entry.read_only,
                is_sensitive: entry.is_sensitive,
            })
            .collect())
    }

    /// Sets and removes topic configs: IncrementalAlterConfigs where the broker has it, else
    /// AlterConfigs with the topic's current overrides merged in (AlterConfigs replaces them all).
    pub async fn alter_topic_configs(
        &mut self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), ClientError> {
        let context = format!("altering configs of topic {name}");
        if let Ok(version) = self.version(ApiKey::IncrementalAlterConfigs) {
            let operations = set
                .iter()
                .map(|(key, value)| (key, OP_SET, Some(str_bytes(value))))
                .chain(delete.iter().map(|key| (key, OP_DELETE, None)))
                .map(|(key, operation, value)| {
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(str_bytes(key))
                        .with_config_operation(operation)
                        .with_value(value)
                })
                .collect();
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(str_bytes(name))
                    .with_configs(operations),
            ]);
            let response = self.call(&request, version).await?;
            return alter_result(
                response
                    .responses
                    .iter()
                    .map(|r| (r.error_code, r.error_message.as_ref())),
                context,
            );
        }
        let version = self.version(ApiKey::AlterConfigs)?;
        let mut merged: BTreeMap<String, String> = self
            .describe_topic_configs(name)
            .await?
            .into_iter()
            .filter(|entry| entry.source == ConfigSource::TOPIC)
            .filter_map(|entry| Some((entry.name, entry.value?)))
            .collect();
        for key in delete {
            merged.remove(key);
        }
        merged.extend(set.iter().cloned());
        let request = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(name))
                .with_configs(
                    merged
                        .iter()
                        .map(|(key, value)| {
                            alter_configs_request::AlterableConfig::default()
                                .with_name(str_bytes(key))
                                .with_value(Some(str_bytes(value)))
                        })
                        .collect(),
                ),
        ]);
        let response = self.call(&request, version).await?;
        alter_result(
            response
                .responses
                .iter()
                .map(|r| (r.error_code, r.error_message.as_ref())),
            context,
        )
    }

    /// Produces one encoded batch per partition of `topic` in one request. With `acks` 0 the
    /// broker sends no answer and the result is empty; otherwise each partition's base offset,
    /// or the first partition error as [`ClientError::Broker`].
    pub async fn produce(
        &mut self,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
        acks: i16,
    ) -> Result<Vec<ProducedPartition>, ClientError> {
        let version = self.version(ApiKey::Produce)?;
        let partitions: Vec<i32> = batches.iter().map(|(partition, _)| *partition).collect();
        let request = produce_request(topic, batches, acks);
        if acks == 0 {
            self.send_only(&request, version).await?;
            return Ok(Vec::new());
        }
        let response = self.call(&request, version).await?;
        let mut produced = Vec::with_capacity(partitions.len());
        for (partition, answer) in produce_answers(&response, topic, &partitions)? {
            match answer {
                Ok(base_offset) => produced.push(ProducedPartition {
                    partition,
                    base_offset,
                }),
                Err(error) => {
                    return Err(ClientError::broker(
                        format!("producing to {topic}-{partition}"),
                        error,
                    ))
                }
            }
        }
        Ok(produced)
    }

    /// Asks for an idempotent producer id (no transactional id): `(producer id, epoch)`.
    pub async fn init_producer_id(&mut self) -> Result<(i64, i16), ClientError> {
        let version = self.version(ApiKey::InitProducerId)?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(-1);
        let response = self.call(&request, version).await?;
        match KafkaError::from_code(response.error_code, None) {
            Some(error) => Err(ClientError::broker("initializing a producer id", error)),
            None => Ok((response.producer_id.0, response.producer_epoch)),
        }
    }

    /// Fetches from each position. Per-partition errors are in the result; a top-level error,
    /// or records that do not decode, fail the call.
    pub async fn fetch(
        &mut self,
        options: &FetchOptions,
        positions: &[FetchPosition],
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let version = self.version(ApiKey::Fetch)?;
        let mut topics: Vec<fetch_request::FetchTopic> = Vec::new();
        for position in positions {
            let partition = fetch_request::FetchPartition::default()
                .with_partition(position.partition)
                .with_fetch_offset(position.offset)
                .with_partition_max_bytes(options.partition_max_bytes);
            match topics
                .iter_mut()
                .find(|topic| topic.topic.0.as_str() == position.topic)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    fetch_request::FetchTopic::default()
                        .with_topic(topic_name(&position.topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(options.max_wait_ms)
            .with_min_bytes(options.min_bytes)
            .with_max_bytes(options.max_bytes)
            .with_isolation_level(options.isolation_level)
            .with_topics(topics);
        let wait = Duration::from_millis(u64::try_from(options.max_wait_ms).unwrap_or(0));
        let timeout = self.config.request_timeout + wait;
        let body = self.round_trip(&request, version, timeout).await?;
        let response = decode_body::<FetchRequest>(body, version)?;
        if let Some(error) = KafkaError::from_code(response.error_code, None) {
            return Err(ClientError::broker("fetching", error));
        }
        let mut fetched = Vec::new();
        for topic in response.responses {
            for partition in topic.partitions {
                let error = KafkaError::from_code(partition.error_code, None);
                let batches = match (&error, &partition.records) {
                    (None, Some(data)) => {
                        records::decode_batches(data, self.config.decompressed_bytes_max)?
                    }
                    _ => Vec::new(),
                };
                fetched.push(FetchedPartition {
                    topic: topic.topic.0.to_string(),
                    partition: partition.partition_index,
                    error,
                    high_watermark: partition.high_watermark,
                    log_start_offset: partition.log_start_offset,
                    batches,
                });
            }
        }
        Ok(fetched)
    }

    /// The offset for `timestamp` in one partition: [`LATEST_OFFSET`], [`EARLIEST_OFFSET`], or
    /// a time in milliseconds (the first offset whose timestamp is at least that; -1 if none).
    pub async fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64, ClientError> {
        let version = self.version(ApiKey::ListOffsets)?;
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ])]);
        let response = self.call(&request, version).await?;
        let answer = response
            .topics
            .iter()
            .filter(|answer| answer.name.0.as_str() == topic)
            .flat_map(|answer| answer.partitions.iter())
            .find(|answer| answer.partition_index == partition)
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "ListOffsets did not answer for {topic}-{partition}"
                ))
            })?;
        match KafkaError::from_code(answer.error_code, None) {
            Some(error) => Err(ClientError::broker(
                format!("listing offsets of {topic}-{partition}"),
                error,
            )),
            None => Ok(answer.offset),
        }
    }

    /// One request and its decoded response, within the request timeout.
    async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let body = self
            .round_trip(request, version, self.config.request_timeout)
            .await?;
        decode_body::<R>(body, version)
    }

    /// Sends a request that gets no response (Produce with acks=0).
    async fn send_only<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        let (frame, _) = self.encode(request, version)?;
        let timeout = self.config.request_timeout;
        let result = with_timeout(timeout, async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await
        })
        .await;
        self.latch(transport_error(result))
    }

    /// Writes a request and reads its response frame; returns the body after the response
    /// header, whose correlation id has been checked.
    async fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let (frame, correlation_id) = self.encode(request, version)?;
        let frame_bytes_max = self.config.response_bytes_max;
        let stream = &mut self.stream;
        let result = with_timeout(timeout, async {
            stream.write_all(&frame).await?;
            stream.flush().await?;
            frame::read_frame(stream, frame_bytes_max)
                .await
                .map_err(|error| match error {
                    FrameError::Io(error) => error,
                    other => std::io::Error::other(other.to_string()),
                })
        })
        .await;
        let mut body = self.latch(transport_error(result))?;
        let header_version = R::Response::header_version(version);
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|error| ClientError::Protocol(format!("response header: {error}")));
        let header = self.latch(header)?;
        if header.correlation_id != correlation_id {
            return self.latch(Err(ClientError::Protocol(format!(
                "response for correlation id {} while waiting for {correlation_id}",
                header.correlation_id
            ))));
        }
        Ok(body)
    }

    /// Frames a request; fails if the client is broken or the request does not encode.
    fn encode<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(BytesMut, i32), ClientError> {
        if let Some(reason) = &self.broken {
            return Err(ClientError::Broken(reason.clone()));
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(request, version, correlation_id, &self.config.client_id)?;
        Ok((frame, correlation_id))
    }

    /// Marks the client broken if `result` is a failure that leaves the stream in an unknown
    /// state (every transport failure and a response out of order).
    fn latch<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(error) = &result {
            if matches!(
                error,
                ClientError::Transport(_) | ClientError::Timeout(_) | ClientError::Protocol(_)
            ) {
                self.broken = Some(error.to_string());
            }
        }
        result
    }
}

/// The newest version of `api` both the client ([`CLIENT_VERSIONS`]) and the broker speak.
fn negotiated_version(
    broker_versions: &BTreeMap<i16, (i16, i16)>,
    api: ApiKey,
) -> Result<i16, ClientError> {
    let (client_min, client_max) = CLIENT_VERSIONS
        .iter()
        .find(|(key, _, _)| *key == api)
        .map_or((0, -1), |(_, min, max)| (*min, *max));
    let broker = broker_versions.get(&(api as i16)).copied();
    let unsupported = ClientError::UnsupportedApi {
        api,
        broker,
        client_min,
        client_max,
    };
    let Some((broker_min, broker_max)) = broker else {
        return Err(unsupported);
    };
    let (low, high) = (client_min.max(broker_min), client_max.min(broker_max));
    if low > high {
        return Err(unsupported);
    }
    Ok(high)
}

fn decode_body<R: Request>(mut body: Bytes, version: i16) -> Result<R::Response, ClientError> {
    R::Response::decode(&mut body, version).map_err(|error| {
        let api = ApiKey::try_from(R::KEY)
            .map_or_else(|_| format!("API {}", R::KEY), |key| format!("{key:?}"));
        ClientError::Protocol(format!("{api} v{version} response: {error}"))
    })
}

/// A Produce request with one batch per partition of `topic`.
fn produce_request(topic: &str, batches: Vec<(i32, Bytes)>, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(BROKER_TIMEOUT_MS)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(
                batches
                    .into_iter()
                    .map(|(partition, batch)| {
                        produce_request::PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch))
                    })
                    .collect(),
            )])
}

/// Each partition's answer in a Produce response, in the order of `partitions`: the base
/// offset or the partition's error. A partition without an answer fails the whole response.
fn produce_answers(
    response: &ProduceResponse,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<PartitionAnswer>, ClientError> {
    partitions
        .iter()
        .map(|&partition| {
            let answer = response
                .responses
                .iter()
                .filter(|answer| answer.name.0.as_str() == topic)
                .flat_map(|answer| answer.partition_responses.iter())
                .find(|answer| answer.index == partition)
                .ok_or_else(|| {
                    ClientError::Protocol(format!("Produce did not answer for {topic}-{partition}"))
                })?;
            let result =
                match KafkaError::from_code(answer.error_code, answer.error_message.as_ref()) {
                    Some(error) => Err(error),
                    None => Ok(answer.base_offset),
                };
            Ok((partition, result))
        })
        .collect()
}

fn alter_result<'a>(
    mut answers: impl Iterator<Item = (i16, Option<&'a StrBytes>)>,
    context: String,
) -> Result<(), ClientError> {
    let (code, message) = answers
        .next()
        .ok_or_else(|| ClientError::Protocol("no answer for the topic".into()))?;
    match KafkaError::from_code(code, message) {
        Some(error) => Err(ClientError::broker(context, error)),
        None => Ok(()),
    }
}

/// Frames a request: length prefix, request header, body.
fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<BytesMut, ClientError> {
    let api_key = ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Protocol(format!("unknown API key {}", R::KEY)))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(str_bytes(client_id)));
    let mut frame = BytesMut::with_capacity(256);
    frame.put_i32(0);
    header
        .encode(&mut frame, R::header_version(version))
        .and_then(|()| request.encode(&mut frame, version))
        .map_err(|error| {
            ClientError::Protocol(format!("encoding {api_key:?} v{version}: {error}"))
        })?;
    if frame.len() - 4 > i32::MAX as usize {
        return Err(ClientError::Protocol("request over 2 GiB".into()));
    }
    frame::finish_frame(&mut frame);
    Ok(frame)
}

/// Runs `future` with a deadline; a late one is [`ClientError::Timeout`].
async fn with_timeout<T>(
    timeout: Duration,
    future: impl Future<Output = std::io::Result<T>>,
) -> Result<std::io::Result<T>, ClientError> {
    match glommio::timer::timeout(timeout, async { Ok(future.await) }).await {
        Ok(result) => Ok(result),
        Err(glommio::GlommioError::TimedOut(_)) => Err(ClientError::Timeout(timeout)),
        Err(other) => Err(ClientError::Transport(other.to_string())),
    }
}

fn transport_error<T>(result: Result<std::io::Result<T>, ClientError>) -> Result<T, ClientError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ClientError::Transport(error.to_string())),
        Err(error) => Err(error),
    }
}

fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn topic_name(name: &str) -> TopicName {
    TopicName(str_bytes(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        let name = |code| {
            KafkaError {
                code,
                message: None,
            }
            .name()
        };
        assert_eq!(name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(name(1), "OFFSET_OUT_OF_RANGE");
        assert_eq!(name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(name(9999), "UNKNOWN_ERROR_CODE_9999");
        assert!(KafkaError::from_code(0, None).is_none());
        let with_message = KafkaError::from_code(36, Some(&str_bytes("Topic 't' already exists.")));
        assert_eq!(
            with_message.unwrap().to_string(),
            "TOPIC_ALREADY_EXISTS: Topic 't' already exists."
        );
    }

    /// A fake broker on a std thread: accepts one connection and runs `script` on it.
    fn fake_broker(script: impl FnOnce(std::net::TcpStream) + Send + 'static) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                script(stream);
            }
        });
        address
    }

    /// Reads one request frame: (api key, version, correlation id).
    fn read_request(stream: &mut std::net::TcpStream) -> (i16, i16, i32) {
        use std::io::Read;
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).expect("length");
        let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).expect("body");
        let field = |at: usize| i16::from_be_bytes([body[at], body[at + 1]]);
        (
            field(0),
            field(2),
            i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        )
    }

    /// Answers an ApiVersions request with the broker's own table; returns its version.
    fn answer_api_versions(stream: &mut std::net::TcpStream) -> i16 {
        use std::io::Write;
        let (key, version, correlation_id) = read_request(stream);
        assert_eq!(key, ApiKey::ApiVersions as i16);
        let body = kafka_protocol::messages::ResponseKind::ApiVersions(
            crate::handlers::api_versions::handle(0),
        );
        let frame =
            crate::codec::encode_response(ApiKey::ApiVersions, version, correlation_id, &body)
                .expect("encodes");
        stream.write_all(&frame).expect("write");
        version
    }

    fn config() -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        }
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(future)
    }

    #[test]
    fn an_oversized_response_fails_before_allocating_and_latches() {
        let address = fake_broker(|mut stream| {
            use std::io::Write;
            answer_api_versions(&mut stream);
            read_request(&mut stream);
            // Claims 2 GiB - 1: above response_bytes_max, so nothing may be allocated for it.
            stream.write_all(&[0x7f, 0xff, 0xff, 0xff]).expect("write");
            std::thread::sleep(Duration::from_secs(1));
        });
        run(async move {
            let mut client = Client::connect(&address, config()).await.expect("connects");
            assert_eq!(client.version(ApiKey::Metadata).ok(), Some(12));
            let error = client.metadata(None, false).await.expect_err("too large");
            assert!(
                matches!(&error, ClientError::Transport(reason) if reason.contains("frame length")),
                "{error}"
            );
            assert!(error.is_connection());
            let again = client.metadata(None, false).await.expect_err("latched");
            assert!(matches!(again, ClientError::Broken(_)), "{again}");
        });
    }

    #[test]
    fn a_response_for_another_request_is_refused() {
        let address = fake_broker(|mut stream| {
            use std::io::Write;
            answer_api_versions(&mut stream);
            let (_, version, correlation_id) = read_request(&mut stream);
            let body = kafka_protocol::messages::ResponseKind::Metadata(Default::default());
            let frame =
                crate::codec::encode_response(ApiKey::Metadata, version, correlation_id + 1, &body)
                    .expect("encodes");
            stream.write_all(&frame).expect("write");
            std::thread::sleep(Duration::from_secs(1));
        });
        run(async move {
            let mut client = Client::connect(&address, config()).await.expect("connects");
            let error = client.metadata(None, false).await.expect_err("mismatch");
            assert!(
                matches!(&error, ClientError::Protocol(reason) if reason.contains("correlation")),
                "{error}"
            );
            let again = client.metadata(None, false).await.expect_err("latched");
            assert!(matches!(again, ClientError::Broken(_)), "{again}");
        });
    }

    #[test]
    fn a_silent_broker_times_out() {
        let address = fake_broker(|mut stream| {
            answer_api_versions(&mut stream);
            read_request(&mut stream);
            std::thread::sleep(Duration::from_secs(2));
        });
        run(async move {
            let mut client = Client::connect(&address, config()).await.expect("connects");
            let error = client.metadata(None, false).await.expect_err("silent");
            assert!(matches!(error, ClientError::Timeout(_)), "{error}");
            assert!(error.is_connection());
        });
    }

    #[test]
    fn an_old_broker_gets_api_versions_v0_after_error_35() {
        let address = fake_broker(|mut stream| {
            use std::io::Write;
            let (_, version, correlation_id) = read_request(&mut stream);
            assert_eq!(version, API_VERSIONS_FIRST);
            // What a broker that does not know v3 sends: a v0 body with error 35 (KIP-511).
            let frame = crate::handlers::api_versions::unsupported_version(correlation_id);
            stream.write_all(&frame).expect("write");
            assert_eq!(answer_api_versions(&mut stream), 0, "the retry asks for v0");
            std::thread::sleep(Duration::from_secs(1));
        });
        run(async move {
            let client = Client::connect(&address, config()).await.expect("connects");
            assert_eq!(client.broker_versions(ApiKey::Fetch), Some((4, 12)));
        });
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let address = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("address").to_string()
        };
        run(async move {
            let error = Client::connect(&address, config())
                .await
                .err()
                .expect("refused");
            assert!(matches!(error, ClientError::Connect { .. }), "{error}");
            assert!(error.is_connection());
        });
        let error = run(Client::connect("no-such-host.invalid:9092", config()))
            .err()
            .expect("unresolvable");
        assert!(matches!(error, ClientError::Connect { .. }), "{error}");
    }

    #[test]
    fn every_client_version_range_encodes_with_the_crate() {
        for (key, min, max) in CLIENT_VERSIONS {
            let crate_range = key.valid_versions();
            assert!(
                crate_range.min <= *min && *max <= crate_range.max,
                "{key:?}"
            );
        }
    }
}
