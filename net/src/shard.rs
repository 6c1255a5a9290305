//! A shard: one glommio executor, the partitions it owns, its metadata snapshot, and the bounded
//! channels to every other shard.
//!
//! **Ownership:** partition `(topic, p)` belongs to shard `owner_shard(topic, p, shard_count)`.
//! Only that shard opens, appends to and reads its log. A request touching another shard's
//! partition sends a [`ShardMessage`] over that shard's bounded flume inbox and awaits the reply.
//!
//! **Metadata:** shard 0 holds the [`MetadataStore`] (the single-node controller). Changes go to
//! it as messages; it persists them, then sends the new snapshot to every shard and waits until
//! each has opened (or closed) the logs it owns before answering.

use crate::metadata::{MetadataSnapshot, MetadataStore, TopicMeta};
use bytes::{Bytes, BytesMut};
use runnel_engine::retention::RetentionSet;
use runnel_engine::{LogConfig, LogContext, LogError, PartitionLog, ReadPlan, TimestampMatch};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Messages a shard's inbox carries.
pub const INBOX_CAPACITY: usize = 1024;

/// Broker-wide settings, the same on every shard.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Host and port given to clients in Metadata.
    pub advertised_host: String,
    /// Advertised port.
    pub advertised_port: i32,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Number of shards.
    pub shards: usize,
    /// This broker's node id.
    pub node_id: i32,
    /// `socket.request.max.bytes`.
    pub frame_bytes_max: usize,
    /// A request whose first byte arrived must be complete within this, or the connection is
    /// closed (a stalled half request); also the longest a response write may stall.
    pub request_timeout_ms: u64,
    /// `connections.max.idle.ms`: a connection with no request for this long is closed.
    pub connections_max_idle_ms: u64,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions` for auto-created topics and CreateTopics with -1.
    pub default_partitions: i32,
    /// Broker-level log defaults.
    pub log_defaults: LogConfig,
    /// Tail cache bytes per shard.
    pub cache_bytes_per_shard: u64,
    /// Each shard's log cleaner (compacted topics).
    pub cleaner: runnel_engine::CleanerConfig,
    /// Consumer-group coordinator settings (limits, offset retention).
    pub groups: crate::group_service::GroupConfig,
    /// `log.flush.offset.checkpoint.interval.ms`: how often each shard writes its logs'
    /// recovery checkpoints.
    pub recovery_checkpoint_interval_ms: u64,
}

/// A topic-partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: i32,
}

/// The shard owning a partition: a stable hash, so restarts with the same shard count agree.
pub fn owner_shard(topic: &str, partition: i32, shard_count: usize) -> usize {
    let mut hash = crc32c::crc32c(topic.as_bytes());
    hash = crc32c::crc32c_append(hash, &partition.to_be_bytes());
    (hash as usize) % shard_count.max(1)
}

fn first_producer_id(shard: usize) -> i64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0);
    now_ms * 1024 + shard as i64
}

/// A new topic as asked for by CreateTopics or auto-creation.
#[derive(Clone, Debug)]
pub struct TopicSpec {
    /// Name (already validated).
    pub name: String,
    /// Partitions (already resolved from -1).
    pub partitions: i32,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// Per-topic results of a controller change, and the snapshot to publish if anything changed.
type ControllerOutcome = (
    Vec<Result<(), (i16, String)>>,
    Option<Arc<MetadataSnapshot>>,
);

/// A topic config change, run on the controller against the topic's current overrides (so two
/// concurrent changes never overwrite each other): returns the complete new set of overrides, or
/// (error code, message).
pub type ConfigEdit = Box<
    dyn FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, (i16, String)> + Send,
>;

/// Per-topic results of a controller operation: `Ok` or (error code, message).
pub type TopicResults = Vec<Result<(), (i16, String)>>;

/// Result of one partition's append, sent back across shards.
pub type AppendReply = Result<runnel_engine::AppendResult, PartitionError>;

/// Errors on one partition that map to a Kafka error code.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PartitionError {
    /// The topic or partition does not exist (on this shard).
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The log refused.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl PartitionError {
    /// The Kafka error code.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            PartitionError::UnknownTopicOrPartition => 3,
            PartitionError::Log(error) => error.kafka_error_code(),
        }
    }
}

/// What a partition reports about itself for ListOffsets and Fetch.
#[derive(Clone, Copy, Debug)]
pub struct PartitionOffsets {
    /// First readable offset.
    pub log_start: i64,
    /// High watermark (durable end).
    pub high_watermark: i64,
}

/// Cross-shard requests. Every variant carries its own reply channel.
pub enum ShardMessage {
    /// Append a batch to a partition this shard owns.
    Append {
        /// Where.
        partition: TopicPartition,
        /// The batch (validated again by the owner).
        batch: Bytes,
        /// Answer.
        reply: flume::Sender<AppendReply>,
    },
    /// Plan a read.
    Read {
        /// Where.
        partition: TopicPartition,
        /// From which offset.
        offset: i64,
        /// Up to how many bytes.
        max_bytes: u64,
        /// Answer.
        reply: flume::Sender<Result<ReadPlan, PartitionError>>,
    },
    /// Offsets of a partition, or the offset for a timestamp.
    Offsets {
        /// Where.
        partition: TopicPartition,
        /// `Some(ts)`: look up by timestamp.
        timestamp: Option<i64>,
        /// Answer.
        reply: flume::Sender<Result<(PartitionOffsets, Option<TimestampMatch>), PartitionError>>,
    },
    /// Resolve once data at or after `offset` is durable, or after `timeout`.
    Watch {
        /// Where.
        partition: TopicPartition,
        /// Offset to wait beyond.
        offset: i64,
        /// Longest wait.
        timeout: Duration,
        /// Answer (sent when woken or timed out).
        reply: flume::Sender<()>,
    },
    /// DeleteRecords: advance the log start offset (-1: to the high watermark).
    DeleteRecords {
        /// Where.
        partition: TopicPartition,
        /// New log start offset, or -1.
        offset: i64,
        /// Answer: the new log start offset (low watermark).
        reply: flume::Sender<Result<i64, PartitionError>>,
    },
    /// To shard 0: create topics.
    CreateTopics {
        /// What to create.
        topics: Vec<TopicSpec>,
        /// Per-topic result: `Ok` or (error code, message).
        reply: flume::Sender<Vec<Result<(), (i16, String)>>>,
    },
    /// To shard 0: delete topics.
    DeleteTopics {
        /// Names.
        names: Vec<String>,
        /// Per-topic result.
        reply: flume::Sender<Vec<Result<(), (i16, String)>>>,
    },
    /// To shard 0: change topic configs.
    AlterTopicConfigs {
        /// Topic name and its change.
        edits: Vec<(String, ConfigEdit)>,
        /// Check only; persist nothing.
        validate_only: bool,
        /// Per-topic result.
        reply: flume::Sender<TopicResults>,
    },
    /// To shard 0: raise partition counts.
    CreatePartitions {
        /// Topic name and its new partition count.
        counts: Vec<(String, i32)>,
        /// Check only; persist nothing.
        validate_only: bool,
        /// Per-topic result.
        reply: flume::Sender<TopicResults>,
    },
    /// From shard 0: a new metadata snapshot; open/close owned logs, then reply.
    ApplyMetadata {
        /// The snapshot.
        snapshot: Arc<MetadataSnapshot>,
        /// Acknowledgement.
        reply: flume::Sender<()>,
    },
    /// A consumer-group operation for a group this shard coordinates.
    Group {
        /// Runs on this shard and sends its own answer.
        op: crate::group_service::GroupOp,
    },
    /// Close every log cleanly and stop.
    Shutdown {
        /// Acknowledgement.
        reply: flume::Sender<()>,
    },
}

/// One shard's state. Lives on its executor only (`Rc`).
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Settings.
    pub config: Arc<BrokerConfig>,
    /// Current metadata.
    metadata: RefCell<Arc<MetadataSnapshot>>,
    /// Logs of the partitions this shard owns.
    logs: RefCell<HashMap<TopicPartition, PartitionLog>>,
    /// Every shard's inbox (including this one's).
    inboxes: Arc<Vec<flume::Sender<ShardMessage>>>,
    log_context: LogContext,
    retention: RetentionSet,
    /// Shard 0 only: the persisted store.
    store: RefCell<Option<MetadataStore>>,
    /// Serializes metadata changes on shard 0.
    controller_lock: glommio::sync::Semaphore,
    /// Producer ids handed out (shard 0 allocates; others ask it).
    next_producer_id: std::cell::Cell<i64>,
    /// The consumer groups this shard coordinates.
    pub groups: Rc<crate::group_service::GroupService>,
}

impl Shard {
    /// Builds the shard and opens the logs it owns for the topics in `snapshot`.
    pub async fn start(
        id: usize,
        config: Arc<BrokerConfig>,
        inboxes: Arc<Vec<flume::Sender<ShardMessage>>>,
        store: Option<MetadataStore>,
        snapshot: Arc<MetadataSnapshot>,
    ) -> Result<Rc<Shard>, String> {
        let groups = Rc::new(crate::group_service::GroupService::new(
            config.groups.clone(),
        ));
        let shard = Rc::new(Shard {
            id,
            log_context: LogContext::direct(config.cache_bytes_per_shard),
            config,
            metadata: RefCell::new(Arc::new(MetadataSnapshot::default())),
            logs: RefCell::new(HashMap::new()),
            inboxes,
            retention: RetentionSet::new(),
            store: RefCell::new(store),
            controller_lock: glommio::sync::Semaphore::new(1),
            next_producer_id: std::cell::Cell::new(first_producer_id(id)),
            groups,
        });
        shard.groups.attach(&shard);
        shard.groups.spawn_ticker();
        shard.apply_metadata(snapshot).await?;
        shard.retention.spawn(Duration::from_secs(30), 4);
        shard.retention.spawn_cleaner(shard.config.cleaner.clone());
        let checkpoint_interval =
            Duration::from_millis(shard.config.recovery_checkpoint_interval_ms.max(1));
        shard.retention.spawn_checkpointer(checkpoint_interval);
        Ok(shard)
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<MetadataSnapshot> {
        self.metadata.borrow().clone()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// The owning shard of a partition.
    pub fn owner(&self, partition: &TopicPartition) -> usize {
        owner_shard(&partition.topic, partition.partition, self.shard_count())
    }

    /// A fresh producer id: shards hand out disjoint residues modulo the shard count, and each
    /// start begins above every id a previous start could have used (wall clock x 1024), so ids
    /// are not reused across restarts unless a run averaged over 1024 ids per millisecond.
    pub fn allocate_producer_id(&self) -> i64 {
        let id = self.next_producer_id.get();
        self.next_producer_id.set(id + self.shard_count() as i64);
        id
    }

    /// Sends a message to shard `target`'s inbox (waiting if it is full).
    pub async fn send_to(&self, target: usize, message: ShardMessage) -> Result<(), String> {
        self.inboxes[target]
            .send_async(message)
            .await
            .map_err(|_| format!("shard {target} is gone"))
    }

    fn local_log(&self, partition: &TopicPartition) -> Result<PartitionLog, PartitionError> {
        debug_assert_eq!(self.owner(partition), self.id, "shard affinity");
        self.logs
            .borrow()
            .get(partition)
            .cloned()
            .ok_or(PartitionError::UnknownTopicOrPartition)
    }

    /// Sends a request to the owner shard `owner` and awaits its reply; a gone shard or a
    /// dropped reply is an error for that partition, never a hang.
    async fn ask_owner<T>(
        &self,
        owner: usize,
        message: impl FnOnce(flume::Sender<Result<T, PartitionError>>) -> ShardMessage,
    ) -> Result<T, PartitionError> {
        let (reply, answer) = flume::bounded(1);
        self.send_to(owner, message(reply))
            .await
            .map_err(|error| PartitionError::Log(LogError::Io(error.into())))?;
        answer
            .recv_async()
            .await
            .map_err(|_| PartitionError::Log(LogError::Closed))?
    }

    /// Appends on the owner shard (locally or across a channel).
    pub async fn append(&self, partition: TopicPartition, batch: Bytes) -> AppendReply {
        let owner = self.owner(&partition);
        if owner == self.id {
            let log = self.local_log(&partition)?;
            return Ok(log.append(BytesMut::from(&batch[..])).await?);
        }
        self.ask_owner(owner, |reply| ShardMessage::Append {
            partition,
            batch,
            reply,
        })
        .await
    }

    /// Plans a read on the owner shard.
    pub async fn read(
        &self,
        partition: TopicPartition,
        offset: i64,
        max_bytes: u64,
    ) -> Result<ReadPlan, PartitionError> {
        let owner = self.owner(&partition);
        if owner == self.id {
            return Ok(self.local_log(&partition)?.read(offset, max_bytes)?);
        }
        self.ask_owner(owner, |reply| ShardMessage::Read {
            partition,
            offset,
            max_bytes,
            reply,
        })
        .await
    }

    /// Offsets (and optionally a timestamp lookup) on the owner shard.
    pub async fn offsets(
        &self,
        partition: TopicPartition,
        timestamp: Option<i64>,
    ) -> Result<(PartitionOffsets, Option<TimestampMatch>), PartitionError> {
        let owner = self.owner(&partition);
        if owner == self.id {
            return self.local_offsets(&partition, timestamp);
        }
        self.ask_owner(owner, |reply| ShardMessage::Offsets {
            partition,
            timestamp,
            reply,
        })
        .await
    }

    fn local_offsets(
        &self,
        partition: &TopicPartition,
        timestamp: Option<i64>,
    ) -> Result<(PartitionOffsets, Option<TimestampMatch>), PartitionError> {
        let log = self.local_log(partition)?;
        let offsets = PartitionOffsets {
            log_start: log.log_start_offset(),
            high_watermark: log.durable_end_offset(),
        };
        let found = match timestamp {
            Some(target) => log.offset_for_timestamp(target)?,
            None => None,
        };
        Ok((offsets, found))
    }

    /// Waits (at most `timeout`) until the partition has data at or after `offset`.
    pub async fn watch(&self, partition: TopicPartition, offset: i64, timeout: Duration) {
        let owner = self.owner(&partition);
        if owner == self.id {
            let Ok(log) = self.local_log(&partition) else {
                return;
            };
            let timer = glommio::timer::sleep(timeout);
            futures_lite::future::or(log.wait_for_data(offset), timer).await;
            return;
        }
        let (reply, answer) = flume::bounded(1);
        let message = ShardMessage::Watch {
            partition,
            offset,
            timeout,
            reply,
        };
        if self.send_to(owner, message).await.is_ok() {
            let _ = answer.recv_async().await;
        }
    }

    /// Creates topics through shard 0.
    pub async fn create_topics(&self, topics: Vec<TopicSpec>) -> TopicResults {
        let count = topics.len();
        self.ask_controller(count, |reply| ShardMessage::CreateTopics { topics, reply })
            .await
    }

    /// Deletes topics through shard 0.
    pub async fn delete_topics(&self, names: Vec<String>) -> TopicResults {
        let count = names.len();
        self.ask_controller(count, |reply| ShardMessage::DeleteTopics { names, reply })
            .await
    }

    /// Changes topic configs through shard 0 (persisted, then applied to every live log).
    pub async fn alter_topic_configs(
        &self,
        edits: Vec<(String, ConfigEdit)>,
        validate_only: bool,
    ) -> TopicResults {
        let count = edits.len();
        self.ask_controller(count, |reply| ShardMessage::AlterTopicConfigs {
            edits,
            validate_only,
            reply,
        })
        .await
    }

    /// Raises partition counts through shard 0.
    pub async fn create_partitions(
        &self,
        counts: Vec<(String, i32)>,
        validate_only: bool,
    ) -> TopicResults {
        let count = counts.len();
        self.ask_controller(count, |reply| ShardMessage::CreatePartitions {
            counts,
            validate_only,
            reply,
        })
        .await
    }

    /// Sends one request to the controller (shard 0) and waits for its `count` results.
    async fn ask_controller(
        &self,
        count: usize,
        message: impl FnOnce(flume::Sender<TopicResults>) -> ShardMessage,
    ) -> TopicResults {
        let unavailable = || vec![Err((-1, "controller unavailable".to_string())); count];
        let (reply, answer) = flume::bounded(1);
        if self.send_to(0, message(reply)).await.is_err() {
            return unavailable();
        }
        answer.recv_async().await.unwrap_or_else(|_| unavailable())
    }

    /// DeleteRecords on the owner shard: moves the log start to `offset` (-1: the high
    /// watermark) and returns the new log start offset.
    pub async fn delete_records(
        &self,
        partition: TopicPartition,
        offset: i64,
    ) -> Result<i64, PartitionError> {
        let owner = self.owner(&partition);
        if owner == self.id {
            let log = self.local_log(&partition)?;
            let offset = if offset == -1 {
                log.durable_end_offset()
            } else {
                offset
            };
            return Ok(log.delete_before(offset).await?);
        }
        self.ask_owner(owner, |reply| ShardMessage::DeleteRecords {
            partition,
            offset,
            reply,
        })
        .await
    }

    /// Serves this shard's inbox until shutdown. Each message runs as its own task so a slow
    /// append never holds up the inbox.
    pub async fn serve_inbox(self: Rc<Self>, inbox: flume::Receiver<ShardMessage>) {
        while let Ok(message) = inbox.recv_async().await {
            if let ShardMessage::Shutdown { reply } = message {
                self.shutdown().await;
                let _ = reply.send(());
                return;
            }
            let shard = self.clone();
            glommio::spawn_local(async move { shard.handle_message(message).await }).detach();
        }
    }

    async fn handle_message(self: Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::Append {
                partition,
                batch,
                reply,
            } => {
                let _ = reply.send(self.append(partition, batch).await);
            }
            ShardMessage::Read {
                partition,
                offset,
                max_bytes,
                reply,
            } => {
                let _ = reply.send(self.read(partition, offset, max_bytes).await);
            }
            ShardMessage::Offsets {
                partition,
                timestamp,
                reply,
            } => {
                let _ = reply.send(self.local_offsets(&partition, timestamp));
            }
            ShardMessage::Watch {
                partition,
                offset,
                timeout,
                reply,
            } => {
                self.watch(partition, offset, timeout).await;
                let _ = reply.send(());
            }
            ShardMessage::DeleteRecords {
                partition,
                offset,
                reply,
            } => {
                let _ = reply.send(self.delete_records(partition, offset).await);
            }
            ShardMessage::AlterTopicConfigs {
                edits,
                validate_only,
                reply,
            } => {
                let _ = reply.send(self.controller_alter_configs(edits, validate_only).await);
            }
            ShardMessage::CreatePartitions {
                counts,
                validate_only,
                reply,
            } => {
                let _ = reply.send(
                    self.controller_create_partitions(counts, validate_only)
                        .await,
                );
            }
            ShardMessage::CreateTopics { topics, reply } => {
                let _ = reply.send(self.controller_create(topics).await);
            }
            ShardMessage::DeleteTopics { names, reply } => {
                let _ = reply.send(self.controller_delete(names).await);
            }
            ShardMessage::ApplyMetadata { snapshot, reply } => {
                if let Err(error) = self.apply_metadata(snapshot).await {
                    tracing::error!(shard = self.id, %error, "applying metadata failed");
                }
                let _ = reply.send(());
            }
            ShardMessage::Group { op } => op(self).await,
            ShardMessage::Shutdown { reply } => {
                self.shutdown().await;
                let _ = reply.send(());
            }
        }
    }

    /// Opens logs for owned partitions that are new in `snapshot`; closes and deletes those of
    /// topics that are gone.
    async fn apply_metadata(&self, snapshot: Arc<MetadataSnapshot>) -> Result<(), String> {
        let previous = self.metadata.replace(snapshot.clone());
        let mut group_loads = Vec::new();
        for (name, topic) in &snapshot.topics {
            for partition in 0..topic.partitions {
                let key = TopicPartition {
                    topic: Arc::from(name.as_str()),
                    partition,
                };
                if self.owner(&key) != self.id {
                    continue;
                }
                if let Some(log) = self.logs.borrow().get(&key) {
                    if previous
                        .topic(name)
                        .is_some_and(|old| old.configs != topic.configs)
                    {
                        let config =
                            crate::configs::log_config(&self.config.log_defaults, &topic.configs);
                        if let Err(error) = log.set_config(config) {
                            tracing::error!(topic = %name, partition, %error, "applying a topic config failed");
                        }
                    }
                    continue;
                }
                let config = crate::configs::log_config(&self.config.log_defaults, &topic.configs);
                let dir = self.partition_dir(&key);
                let log = PartitionLog::open(&dir, config, self.log_context.clone())
                    .await
                    .map_err(|error| format!("opening {}: {error}", dir.display()))?;
                self.retention.add(log.clone());
                if name == crate::group_service::OFFSETS_TOPIC {
                    group_loads.push((partition, log.clone()));
                }
                self.logs.borrow_mut().insert(key, log);
            }
        }
        // Groups are rebuilt in the background once every log is open (a long replay must not
        // slow the opening down); meanwhile their requests get COORDINATOR_LOAD_IN_PROGRESS.
        // The inbox is not served before this at start, and a partition created later is
        // empty, so nothing is answered from a partition not yet marked.
        for (partition, log) in group_loads {
            self.groups.spawn_load(partition, log);
        }
        let gone: Vec<TopicPartition> = self
            .logs
            .borrow()
            .keys()
            .filter(|key| {
                snapshot
                    .topic(&key.topic)
                    .is_none_or(|topic| key.partition >= topic.partitions)
                    || previous
                        .topic(&key.topic)
                        .zip(snapshot.topic(&key.topic))
                        .is_some_and(|(old, new)| old.id != new.id)
            })
            .cloned()
            .collect();
        for key in gone {
            let log = self.logs.borrow_mut().remove(&key);
            if let Some(log) = log {
                self.retention.remove(&log);
                let _ = log.close().await;
                if let Err(error) = std::fs::remove_dir_all(log.dir()) {
                    tracing::warn!(dir = %log.dir().display(), %error, "could not delete a partition directory");
                }
            }
        }
        Ok(())
    }

    /// Directory of a partition's log.
    pub fn partition_dir(&self, partition: &TopicPartition) -> PathBuf {
        self.config
            .data_dir
            .join(format!("{}-{}", partition.topic, partition.partition))
    }

    async fn controller_create(&self, topics: Vec<TopicSpec>) -> Vec<Result<(), (i16, String)>> {
        let Ok(_permit) = self.controller_lock.acquire_permit(1).await else {
            return vec![Err((-1, "controller stopped".into())); topics.len()];
        };
        let (results, snapshot) = self.create_in_store(topics);
        if let Some(snapshot) = snapshot {
            self.broadcast_metadata(snapshot).await;
        }
        results
    }

    /// Records new topics in the store; returns per-topic results and the new snapshot.
    fn create_in_store(&self, topics: Vec<TopicSpec>) -> ControllerOutcome {
        let mut store_guard = self.store.borrow_mut();
        let Some(store) = store_guard.as_mut() else {
            return (
                vec![Err((-1, "not the controller shard".into())); topics.len()],
                None,
            );
        };
        let mut results = Vec::with_capacity(topics.len());
        let mut to_create: Vec<TopicMeta> = Vec::new();
        for spec in topics {
            if store.file().topics.contains_key(&spec.name)
                || to_create.iter().any(|topic| topic.name == spec.name)
            {
                results.push(Err((36, format!("Topic '{}' already exists.", spec.name))));
                continue;
            }
            let internal = crate::group_service::is_internal_topic(&spec.name);
            to_create.push(TopicMeta {
                name: spec.name,
                id: uuid::Uuid::new_v4().to_string(),
                partitions: spec.partitions,
                configs: spec.configs,
                internal,
            });
            results.push(Ok(()));
        }
        if to_create.is_empty() {
            return (results, None);
        }
        let update = store.update(|file| {
            for topic in to_create {
                file.topics.insert(topic.name.clone(), topic);
            }
        });
        if let Err(error) = update {
            tracing::error!(%error, "persisting metadata failed");
            for result in &mut results {
                if result.is_ok() {
                    *result = Err((-1, format!("persisting metadata failed: {error}")));
                }
            }
            return (results, None);
        }
        let snapshot = Arc::new(MetadataSnapshot::from_file(store.file()));
        (results, Some(snapshot))
    }

    async fn controller_delete(&self, names: Vec<String>) -> Vec<Result<(), (i16, String)>> {
        let Ok(_permit) = self.controller_lock.acquire_permit(1).await else {
            return vec![Err((-1, "controller stopped".into())); names.len()];
        };
        let (results, snapshot) = self.delete_in_store(&names);
        if let Some(snapshot) = snapshot {
            self.broadcast_metadata(snapshot).await;
        }
        results
    }

    /// Removes topics from the store; returns per-topic results and the new snapshot.
    fn delete_in_store(&self, names: &[String]) -> ControllerOutcome {
        let mut store_guard = self.store.borrow_mut();
        let Some(store) = store_guard.as_mut() else {
            return (
                vec![Err((-1, "not the controller shard".into())); names.len()],
                None,
            );
        };
        let results: Vec<Result<(), (i16, String)>> = names
            .iter()
            .map(|name| {
                if store.file().topics.contains_key(name) {
                    Ok(())
                } else {
                    Err((3, "This server does not host this topic-partition.".into()))
                }
            })
            .collect();
        if results.iter().all(Result::is_err) {
            return (results, None);
        }
        if let Err(error) = store.update(|file| {
            for name in names {
                file.topics.remove(name);
            }
        }) {
            return (
                vec![Err((-1, format!("persisting metadata failed: {error}"))); names.len()],
                None,
            );
        }
        let snapshot = Arc::new(MetadataSnapshot::from_file(store.file()));
        (results, Some(snapshot))
    }

    /// Runs one controller change under the controller lock and publishes its snapshot.
    async fn run_controller(
        &self,
        count: usize,
        change: impl FnOnce(&mut MetadataStore) -> ControllerOutcome,
    ) -> TopicResults {
        let Ok(_permit) = self.controller_lock.acquire_permit(1).await else {
            return vec![Err((-1, "controller stopped".into())); count];
        };
        let (results, snapshot) = {
            let mut store_guard = self.store.borrow_mut();
            let Some(store) = store_guard.as_mut() else {
                return vec![Err((-1, "not the controller shard".into())); count];
            };
            change(store)
        };
        if let Some(snapshot) = snapshot {
            self.broadcast_metadata(snapshot).await;
        }
        results
    }

    async fn controller_alter_configs(
        &self,
        edits: Vec<(String, ConfigEdit)>,
        validate_only: bool,
    ) -> TopicResults {
        self.run_controller(edits.len(), |store| {
            let mut results = Vec::with_capacity(edits.len());
            let mut changed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for (name, edit) in edits {
                let Some(topic) = store.file().topics.get(&name) else {
                    results.push(Err((3, unknown_topic(&name))));
                    continue;
                };
                let current = changed.get(&name).unwrap_or(&topic.configs);
                let outcome = edit(current).and_then(|configs| {
                    for (config, value) in &configs {
                        crate::configs::validate(config, value).map_err(|message| (40, message))?;
                    }
                    Ok(configs)
                });
                match outcome {
                    Ok(configs) => {
                        if configs != *current {
                            changed.insert(name, configs);
                        }
                        results.push(Ok(()));
                    }
                    Err(error) => results.push(Err(error)),
                }
            }
            if validate_only || changed.is_empty() {
                return (results, None);
            }
            persist(store, results, |file| {
                for (name, configs) in changed {
                    if let Some(topic) = file.topics.get_mut(&name) {
                        topic.configs = configs;
                    }
                }
            })
        })
        .await
    }

    async fn controller_create_partitions(
        &self,
        counts: Vec<(String, i32)>,
        validate_only: bool,
    ) -> TopicResults {
        self.run_controller(counts.len(), |store| {
            let mut grown: BTreeMap<String, i32> = BTreeMap::new();
            let results: TopicResults = counts
                .into_iter()
                .map(|(name, count)| {
                    let Some(topic) = store.file().topics.get(&name) else {
                        return Err((3, unknown_topic(&name)));
                    };
                    let current = topic.partitions;
                    if count == current {
                        return Err((37, format!("Topic already has {current} partitions.")));
                    }
                    if count < current {
                        return Err((37, format!("Topic currently has {current} partitions, which is higher than the requested {count}.")));
                    }
                    if count > crate::metadata::PARTITIONS_MAX {
                        return Err((37, format!("Number of partitions must be at most {}, got {count}", crate::metadata::PARTITIONS_MAX)));
                    }
                    grown.insert(name, count);
                    Ok(())
                })
                .collect();
            if validate_only || grown.is_empty() {
                return (results, None);
            }
            persist(store, results, |file| {
                for (name, count) in grown {
                    if let Some(topic) = file.topics.get_mut(&name) {
                        topic.partitions = count;
                    }
                }
            })
        })
        .await
    }

    async fn broadcast_metadata(&self, snapshot: Arc<MetadataSnapshot>) {
        let mut answers = Vec::new();
        for target in 0..self.shard_count() {
            if target == self.id {
                if let Err(error) = self.apply_metadata(snapshot.clone()).await {
                    tracing::error!(shard = self.id, %error, "applying metadata failed");
                }
                continue;
            }
            let (reply, answer) = flume::bounded(1);
            let message = ShardMessage::ApplyMetadata {
                snapshot: snapshot.clone(),
                reply,
            };
            if self.send_to(target, message).await.is_ok() {
                answers.push(answer);
            }
        }
        for answer in answers {
            let _ = answer.recv_async().await;
        }
    }

    async fn shutdown(&self) {
        let logs: Vec<PartitionLog> = self.logs.borrow_mut().drain().map(|(_, log)| log).collect();
        for log in logs {
            if let Err(error) = log.close().await {
                tracing::error!(dir = %log.dir().display(), %error, "closing a log failed");
            }
        }
    }
}

fn unknown_topic(name: &str) -> String {
    format!("Topic '{name}' does not exist.")
}

/// Persists `change`; on failure every `Ok` result becomes an error and nothing is published.
fn persist(
    store: &mut MetadataStore,
    mut results: TopicResults,
    change: impl FnOnce(&mut crate::metadata::MetadataFile),
) -> ControllerOutcome {
    if let Err(error) = store.update(change) {
        tracing::error!(%error, "persisting metadata failed");
        for result in results.iter_mut().filter(|result| result.is_ok()) {
            *result = Err((-1, format!("persisting metadata failed: {error}")));
        }
        return (results, None);
    }
    let snapshot = Arc::new(MetadataSnapshot::from_file(store.file()));
    (results, Some(snapshot))
}
