//! The consumer-group coordinator wired into the shards.
//!
//! A group lives on the shard owning partition `hash(group id) % 50` of `__consumer_offsets`
//! ([`coordinator_shard`]). That shard holds a [`GroupService`]: the synchronous
//! [`GroupCoordinator`] plus the JoinGroup/SyncGroup requests it parked, keyed by token. A handler
//! on another shard runs its operation there through [`on_coordinator`] (one
//! `ShardMessage::Group` over the bounded inbox) and awaits the answer. A tick task per shard
//! expires sessions and rebalance deadlines and answers the requests those complete.
//!
//! Persistence: group metadata and committed offsets are records (see [`crate::group::records`])
//! in the internal compacted topic `__consumer_offsets`, created by [`ensure_offsets_topic`] at
//! start. A group's partition is owned by its coordinator shard, so records are appended locally
//! (through an [`OffsetsWriter`]) and count once durable (the topic syncs every commit).
//! Apply after append: a commit, offset delete, group delete, expiry or group metadata change is
//! validated by the coordinator, written, and only then applied to memory (see
//! [`crate::group`]); a failed write leaves memory as it was and the client gets a retriable
//! error. Writes go through one FIFO queue per `__consumer_offsets` partition, drained by one
//! task that appends what has queued up as one batch and completes the jobs in order, so memory
//! and the log agree on the order of changes to a group.
//!
//! Loading: when a shard opens one of its `__consumer_offsets` partitions it replays it in the
//! background ([`GroupService::spawn_load`]) into a separate coordinator, merged in at the end.
//! The shard serves meanwhile; requests for groups of a partition still loading get
//! COORDINATOR_LOAD_IN_PROGRESS (Heartbeat: no error, SyncGroup: REBALANCE_IN_PROGRESS, as
//! Kafka answers them), and FindCoordinator answers as usual. A partition that fails to load
//! answers COORDINATOR_NOT_AVAILABLE rather than serve groups it could not read.
//!
//! Retention: every `offsets.retention.check.interval.ms` each shard expires offsets and empty
//! groups (KIP-211 rules, see [`GroupCoordinator::prepare_expiry`]): tombstones first, then
//! memory.

use crate::client::records::decode_batches;
use crate::group::records::{self, RecordKey};
use crate::group::{
    CommitRequest, Effect, FetchedOffset, GroupCoordinator, GroupDescription, GroupError,
    GroupLimits, GroupListing, GroupState, HeartbeatRequest, JoinRequest, JoinResponse,
    LeaveMember, LeaveResponse, PendingRemoval, RequestToken, StorePurpose, SyncRequest,
    SyncResponse,
};
use crate::shard::{owner_shard, Shard, ShardMessage, TopicPartition, TopicSpec};
use bytes::Bytes;
use runnel_engine::batch::{build_batch, BuildRecord};
use runnel_engine::PartitionLog;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

/// `offsets.topic.num.partitions`.
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 50;
/// The internal topic whose partitions place the group coordinators.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often each shard's coordinator checks its deadlines.
const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Record bytes (keys + values) per batch appended to `__consumer_offsets`; a bigger commit is
/// split over several batches.
const PERSIST_BATCH_BYTES_MAX: usize = 1 << 20;
/// `max.message.bytes` of `__consumer_offsets`: one group metadata record (bounded by
/// `GroupLimits::group_bytes_max`, 32 MiB) must fit in one batch.
const OFFSETS_TOPIC_BATCH_BYTES_MAX: i64 = 40 << 20;
/// Bytes read per step while loading a partition (grown up to the batch limit for a big batch).
const LOAD_READ_BYTES: u64 = 1 << 20;
/// CPU shares of the loading task queue against the default queue's 1000: while a shard
/// loads, its requests (and the answers for groups already loaded) come first.
const LOAD_QUEUE_SHARES: usize = 100;
/// Records replayed between two chances to yield (a few ms of work even in a debug build).
const LOAD_YIELD_RECORDS: u64 = 256;
/// Record bytes of queued jobs one write takes from a partition's queue (at least one job).
const WRITE_DRAIN_BYTES_MAX: usize = PERSIST_BATCH_BYTES_MAX;
/// Kafka's `offsets.retention.minutes` default (7 days), in ms.
pub const OFFSETS_RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `offsets.retention.check.interval.ms` default.
pub const OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 600_000;

/// Settings of the group coordinators, the same on every shard.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// What clients can make a coordinator hold.
    pub limits: GroupLimits,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            limits: GroupLimits::default(),
            offsets_retention_ms: OFFSETS_RETENTION_MS_DEFAULT,
            offsets_retention_check_interval_ms: OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT,
        }
    }
}

/// A `__consumer_offsets` record: key and value (`None` is a tombstone).
pub type OffsetsRecord = (Bytes, Option<Bytes>);

/// Whether `name` is an internal topic (listed with `is_internal`).
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// The topic configs of `__consumer_offsets`: compacted, synced on every commit.
fn offsets_topic_configs() -> BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact".to_string()),
        ("flush.ms", "0".to_string()),
        (
            "max.message.bytes",
            OFFSETS_TOPIC_BATCH_BYTES_MAX.to_string(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}

/// Creates `__consumer_offsets` through the controller when it does not exist yet. Runs on
/// shard 0 at start, once its inbox is served.
pub async fn ensure_offsets_topic(shard: &Shard) -> Result<(), String> {
    if shard.metadata().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        partitions: OFFSETS_TOPIC_PARTITIONS,
        configs: offsets_topic_configs(),
    };
    match shard.create_topics(vec![spec]).await.pop() {
        Some(Ok(())) | Some(Err((36, _))) => Ok(()),
        Some(Err((code, message))) => {
            Err(format!("creating {OFFSETS_TOPIC}: error {code}: {message}"))
        }
        None => Err(format!("creating {OFFSETS_TOPIC}: no answer")),
    }
}

/// Where a shard's group records go: its `__consumer_offsets` partitions. A trait so tests can
/// make writes fail.
pub trait OffsetsWriter {
    /// Appends `batch` to partition `partition` of `__consumer_offsets`; resolves once durable.
    fn append(
        &self,
        partition: i32,
        batch: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>>;
}

/// The writer of a running shard: appends to its own `PartitionLog`s.
struct ShardWriter(Weak<Shard>);

impl OffsetsWriter for ShardWriter {
    fn append(
        &self,
        partition: i32,
        batch: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            let Some(shard) = self.0.upgrade() else {
                return Err("the shard is shutting down".to_string());
            };
            let partition = TopicPartition {
                topic: Arc::from(OFFSETS_TOPIC),
                partition,
            };
            shard
                .append(partition, batch)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        })
    }
}

/// Appends `records` to `partition` in batches of at most [`PERSIST_BATCH_BYTES_MAX`] record
/// bytes and returns once all are durable. Any failure is COORDINATOR_NOT_AVAILABLE for the
/// clients (retriable), logged here.
async fn write_records(
    writer: &dyn OffsetsWriter,
    partition: i32,
    records: &[&OffsetsRecord],
) -> Result<(), GroupError> {
    let timestamp_ms = now_ms();
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut batch_bytes = 0;
        while end < records.len() && (end == start || batch_bytes < PERSIST_BATCH_BYTES_MAX) {
            batch_bytes += record_bytes(records[end]);
            end += 1;
        }
        let batch: Vec<BuildRecord<'_>> = records[start..end]
            .iter()
            .map(|(key, value)| (Some(&key[..]), value.as_deref(), timestamp_ms))
            .collect();
        let bytes = Bytes::from(build_batch(&batch));
        if let Err(error) = writer.append(partition, bytes).await {
            tracing::error!(partition, %error, "writing to {OFFSETS_TOPIC} failed");
            return Err(GroupError::CoordinatorNotAvailable);
        }
        start = end;
    }
    Ok(())
}

fn record_bytes((key, value): &OffsetsRecord) -> usize {
    key.len() + value.as_ref().map_or(0, Bytes::len)
}

/// The offset commit record of `group_id` / `topic` / `partition` (`value` `None`: tombstone).
pub fn offset_record(
    group_id: &str,
    topic: &str,
    partition: i32,
    value: Option<&records::OffsetCommitValue>,
) -> Result<OffsetsRecord, GroupError> {
    let key = records::encode_key(&RecordKey::OffsetCommit {
        group: group_id.to_string(),
        topic: topic.to_string(),
        partition,
    });
    // Kafka writes v1 (the version with an expire timestamp) only for commits that carry one.
    let value = value
        .map(|value| {
            let version = if value.expire_timestamp_ms >= 0 {
                1
            } else {
                records::OFFSET_COMMIT_VALUE_VERSION
            };
            records::encode_offset_value(value, version)
        })
        .transpose();
    match (key, value) {
        (Ok(key), Ok(value)) => Ok((key, value)),
        // Lengths are bounded by GroupLimits well below the i16 string limit.
        _ => Err(GroupError::InvalidRequest),
    }
}

/// The group metadata record of `group_id` (`value` `None`: tombstone).
pub fn group_record(
    group_id: &str,
    value: Option<&records::GroupMetadataValue>,
) -> Result<OffsetsRecord, GroupError> {
    let key = records::encode_key(&RecordKey::GroupMetadata {
        group: group_id.to_string(),
    });
    let value = value
        .map(|value| records::encode_group_value(value, records::GROUP_METADATA_VALUE_VERSION))
        .transpose();
    match (key, value) {
        (Ok(key), Ok(value)) => Ok((key, value)),
        _ => Err(GroupError::InvalidRequest),
    }
}

/// Replays a `__consumer_offsets` partition from its start to its durable end into
/// `coordinator`; returns the number of records. Records it cannot parse are logged and skipped
/// (a later record for the same key still applies), so one bad record never stops a broker
/// from starting; a batch it cannot read or decode fails the load. Yields to the shard's other
/// tasks between reads, so the shard serves while it loads.
async fn replay(coordinator: &mut GroupCoordinator, log: &PartitionLog) -> Result<u64, String> {
    let end = log.durable_end_offset();
    let mut offset = log.log_start_offset();
    let mut read_bytes = LOAD_READ_BYTES;
    let mut loaded = 0u64;
    while offset < end {
        let plan = log
            .read(offset, read_bytes)
            .map_err(|error| format!("reading at {offset}: {error}"))?;
        // A plain read on the reactor: bounded by `read_bytes`, and the task yields below.
        let data = Bytes::from(
            plan.to_vec()
                .map_err(|error| format!("reading at {offset}: {error}"))?,
        );
        if data.is_empty() {
            break;
        }
        let batches = decode_batches(&data, OFFSETS_TOPIC_BATCH_BYTES_MAX as usize)
            .map_err(|error| format!("decoding at {offset}: {error}"))?;
        let Some(last) = batches.last() else {
            // The next batch is bigger than one read: read more at once.
            if read_bytes >= OFFSETS_TOPIC_BATCH_BYTES_MAX as u64 {
                return Err(format!("batch at {offset} is larger than the limit"));
            }
            read_bytes = (read_bytes * 2).min(OFFSETS_TOPIC_BATCH_BYTES_MAX as u64);
            continue;
        };
        let next = last.next_offset();
        let now_ms = now_ms();
        for batch in &batches {
            if batch.control {
                continue;
            }
            for record in batch.records() {
                let record = record.map_err(|error| format!("decoding at {offset}: {error}"))?;
                restore_record(
                    coordinator,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    now_ms,
                );
                loaded += 1;
                if loaded.is_multiple_of(LOAD_YIELD_RECORDS) {
                    glommio::yield_if_needed().await;
                }
            }
        }
        if next <= offset {
            return Err(format!("no progress at offset {offset}"));
        }
        offset = next;
    }
    Ok(loaded)
}

/// Applies one `__consumer_offsets` record while loading.
fn restore_record(
    coordinator: &mut GroupCoordinator,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    now_ms: i64,
) {
    let Some(key) = key else {
        tracing::warn!("skipping a {OFFSETS_TOPIC} record without a key");
        return;
    };
    let result = match records::decode_key(key) {
        Ok(RecordKey::OffsetCommit {
            group,
            topic,
            partition,
        }) => match value.map(records::decode_offset_value).transpose() {
            Ok(value) => coordinator
                .restore_offset(&group, &topic, partition, value.as_ref(), now_ms)
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        },
        Ok(RecordKey::GroupMetadata { group }) => {
            match value.map(records::decode_group_value).transpose() {
                Ok(Some(value)) => coordinator
                    .restore_group(&group, &value, now_ms)
                    .map_err(|error| error.to_string()),
                // A tombstone: the group was deleted or expired (its offsets' tombstones
                // precede it).
                Ok(None) => {
                    coordinator.restore_group_deleted(&group);
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            }
        }
        Ok(RecordKey::Unknown(_)) => Ok(()),
        Err(error) => Err(error.to_string()),
    };
    if let Err(error) = result {
        tracing::warn!(%error, "skipping a {OFFSETS_TOPIC} record");
    }
}

/// A group operation to run on the coordinator shard (it sends its own answer).
pub type GroupOp = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka uses for the partition.
fn java_hash_code(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(unit as i32)
    })
}

/// The `__consumer_offsets` partition of a group.
pub fn offsets_partition(group_id: &str) -> i32 {
    (java_hash_code(group_id) & 0x7fff_ffff) % OFFSETS_TOPIC_PARTITIONS
}

/// The shard coordinating a group.
pub fn coordinator_shard(group_id: &str, shard_count: usize) -> usize {
    owner_shard(OFFSETS_TOPIC, offsets_partition(group_id), shard_count)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `op` on the shard coordinating `group_id` and returns its result; `None` when that shard
/// is gone or dropped the request (callers answer COORDINATOR_NOT_AVAILABLE).
pub async fn on_coordinator<T, F, Fut>(shard: &Rc<Shard>, group_id: &str, op: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let target = coordinator_shard(group_id, shard.shard_count());
    on_shard(shard, target, op).await
}

/// Runs `op` on shard `target` (ListGroups asks every shard) and returns its result; `None`
/// when that shard is gone or dropped the request.
pub async fn on_shard<T, F, Fut>(shard: &Rc<Shard>, target: usize, op: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    if target == shard.id {
        return Some(op(shard.clone()).await);
    }
    let (reply, answer) = flume::bounded(1);
    let op: GroupOp = Box::new(move |shard| {
        Box::pin(async move {
            let _ = reply.send(op(shard).await);
        })
    });
    shard
        .send_to(target, ShardMessage::Group { op })
        .await
        .ok()?;
    answer.recv_async().await.ok()
}

/// Where one `__consumer_offsets` partition of this shard stands, when it is not serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadState {
    /// Being replayed: its groups' requests get COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    /// The replay failed: its groups' requests get COORDINATOR_NOT_AVAILABLE.
    Failed,
}

/// Runs once a job's records are durable (`Ok`) or failed, in queue order.
type WriteDone = Box<dyn FnOnce(&Rc<GroupService>, Result<(), GroupError>)>;

/// Records to append for one change, and what completes it.
struct WriteJob {
    /// `Err` when the records could not be encoded: the job completes with that error.
    records: Result<Vec<OffsetsRecord>, GroupError>,
    done: WriteDone,
}

impl WriteJob {
    fn bytes(&self) -> usize {
        self.records
            .as_ref()
            .map_or(0, |records| records.iter().map(record_bytes).sum())
    }
}

/// One shard's coordinator, its parked requests and its write queues.
///
/// Lives on one shard (inside its `Shard`); used by that shard's tasks only. Every method runs
/// to completion without awaiting while it holds the coordinator, so calls never interleave
/// inside the state machine. The write queues hold at most one job per request in flight on
/// this shard (connections are bounded) plus one per group the tick or a retention pass
/// touched.
pub struct GroupService {
    config: GroupConfig,
    coordinator: RefCell<GroupCoordinator>,
    joins: RefCell<HashMap<RequestToken, flume::Sender<JoinResponse>>>,
    syncs: RefCell<HashMap<RequestToken, flume::Sender<SyncResponse>>>,
    next_token: Cell<RequestToken>,
    /// Appends to `__consumer_offsets`; set by [`GroupService::attach`].
    writer: RefCell<Option<Rc<dyn OffsetsWriter>>>,
    /// Per `__consumer_offsets` partition: jobs not yet written. A partition has an entry
    /// exactly while its writer task runs.
    writes: RefCell<HashMap<i32, VecDeque<WriteJob>>>,
    /// Partitions loading or failed to load (absent: serving, or not ours).
    loads: RefCell<HashMap<i32, LoadState>>,
    /// The low-share task queue loads run in (made on first use, on this shard's executor).
    load_queue: Cell<Option<glommio::TaskQueueHandle>>,
}

impl Default for GroupService {
    fn default() -> Self {
        Self::new(GroupConfig::default())
    }
}

impl GroupService {
    /// An empty coordinator.
    pub fn new(config: GroupConfig) -> Self {
        Self {
            coordinator: RefCell::new(GroupCoordinator::new(config.limits.clone())),
            config,
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            writer: RefCell::new(None),
            writes: RefCell::new(HashMap::new()),
            loads: RefCell::new(HashMap::new()),
            load_queue: Cell::new(None),
        }
    }

    /// Gives the service its shard: records are appended to the shard's own partitions.
    pub fn attach(&self, shard: &Rc<Shard>) {
        self.set_writer(Rc::new(ShardWriter(Rc::downgrade(shard))));
    }

    /// Where records go (tests give a writer that can fail).
    pub fn set_writer(&self, writer: Rc<dyn OffsetsWriter>) {
        *self.writer.borrow_mut() = Some(writer);
    }

    /// Starts the tick task (sessions, deadlines) and the offset retention task on the current
    /// executor; both stop once the service is dropped.
    pub fn spawn_ticker(self: &Rc<Self>) {
        let service: Weak<Self> = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(TICK_INTERVAL).await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                let effects = service.coordinator.borrow_mut().tick(now_ms());
                service.apply(effects);
            }
        })
        .detach();
        let service: Weak<Self> = Rc::downgrade(self);
        let interval =
            Duration::from_millis(self.config.offsets_retention_check_interval_ms.max(1));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                service.expire_offsets().await;
            }
        })
        .detach();
    }

    /// Marks `partition` loading and replays `log` (its log) in the background; its groups
    /// are served once the whole partition is in. The shard calls this once it has opened all
    /// its logs, so a long replay never delays its start.
    pub fn spawn_load(self: &Rc<Self>, partition: i32, log: PartitionLog) {
        self.loads
            .borrow_mut()
            .insert(partition, LoadState::Loading);
        // A load yields at every preemption point, but in the shard's own task queue it would
        // be first in line again each time and starve the connections: it runs in a queue of
        // its own with fewer shares.
        let queue = self.load_queue.get().unwrap_or_else(|| {
            let queue = glommio::executor().create_task_queue(
                glommio::Shares::Static(LOAD_QUEUE_SHARES),
                glommio::Latency::NotImportant,
                "group-load",
            );
            self.load_queue.set(Some(queue));
            queue
        });
        let service = self.clone();
        let load = async move { service.load(partition, log).await };
        match glommio::spawn_local_into(load, queue) {
            Ok(task) => {
                task.detach();
            }
            Err(error) => {
                tracing::error!(partition, %error, "could not start loading consumer groups");
                self.loads.borrow_mut().insert(partition, LoadState::Failed);
            }
        }
    }

    async fn load(&self, partition: i32, log: PartitionLog) {
        let started = std::time::Instant::now();
        let mut loaded = GroupCoordinator::new(self.config.limits.clone());
        match replay(&mut loaded, &log).await {
            Ok(records) => {
                self.coordinator.borrow_mut().absorb(loaded, now_ms());
                self.loads.borrow_mut().remove(&partition);
                tracing::debug!(
                    partition,
                    records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "loaded consumer groups"
                );
            }
            Err(error) => {
                tracing::error!(
                    partition,
                    %error,
                    "loading consumer groups failed; their requests get COORDINATOR_NOT_AVAILABLE"
                );
                self.loads.borrow_mut().insert(partition, LoadState::Failed);
            }
        }
    }

    /// Whether `partition` of `__consumer_offsets` is still being loaded here.
    pub fn is_loading(&self, partition: i32) -> bool {
        self.loads.borrow().get(&partition) == Some(&LoadState::Loading)
    }

    /// `Ok` when `group_id`'s partition is served; the error its requests get otherwise.
    fn check_loaded(&self, group_id: &str) -> Result<(), GroupError> {
        match self.loads.borrow().get(&offsets_partition(group_id)) {
            None => Ok(()),
            Some(LoadState::Loading) => Err(GroupError::CoordinatorLoadInProgress),
            Some(LoadState::Failed) => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    fn token(&self) -> RequestToken {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        token
    }

    /// Carries out `effects` in order: answers parked requests, and queues the group records
    /// `StoreGroup` asks for (whose completion may answer more).
    fn apply(self: &Rc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Join { token, response } => {
                    if let Some(sender) = self.joins.borrow_mut().remove(&token) {
                        let _ = sender.try_send(response);
                    }
                }
                Effect::Sync { token, response } => {
                    if let Some(sender) = self.syncs.borrow_mut().remove(&token) {
                        let _ = sender.try_send(response);
                    }
                }
                Effect::StoreGroup {
                    group_id,
                    record,
                    purpose,
                } => {
                    let records = group_record(&group_id, Some(&record)).map(|record| vec![record]);
                    let partition = offsets_partition(&group_id);
                    let done: WriteDone = Box::new(move |service, result| {
                        if let (Err(error), StorePurpose::Update) = (result, &purpose) {
                            tracing::warn!(group = %group_id, %error, "storing an emptied group failed");
                        }
                        let effects = service.coordinator.borrow_mut().store_completed(
                            &group_id,
                            &purpose,
                            result,
                            now_ms(),
                        );
                        service.apply(effects);
                    });
                    self.enqueue(partition, WriteJob { records, done });
                }
            }
        }
    }

    /// Queues a write on `partition`, starting its writer task if none runs.
    fn enqueue(self: &Rc<Self>, partition: i32, job: WriteJob) {
        let start = {
            let mut writes = self.writes.borrow_mut();
            match writes.get_mut(&partition) {
                Some(queue) => {
                    queue.push_back(job);
                    false
                }
                None => {
                    writes.insert(partition, VecDeque::from([job]));
                    true
                }
            }
        };
        if start {
            let service = self.clone();
            glommio::spawn_local(async move { service.run_writes(partition).await }).detach();
        }
    }

    /// The writer task of `partition`: appends whatever has queued up as one write, then
    /// completes those jobs in order; ends when the queue is empty.
    async fn run_writes(self: Rc<Self>, partition: i32) {
        loop {
            let jobs = self.take_jobs(partition);
            if jobs.is_empty() {
                return;
            }
            let records: Vec<&OffsetsRecord> = jobs
                .iter()
                .filter_map(|job| job.records.as_ref().ok())
                .flatten()
                .collect();
            let writer = self.writer.borrow().clone();
            let written = match (&writer, records.is_empty()) {
                (_, true) => Ok(()),
                (Some(writer), false) => write_records(writer.as_ref(), partition, &records).await,
                (None, false) => Err(GroupError::CoordinatorNotAvailable),
            };
            drop(records);
            for job in jobs {
                let result = match &job.records {
                    Ok(_) => written,
                    Err(error) => Err(*error),
                };
                (job.done)(&self, result);
            }
        }
    }

    /// The next jobs of `partition`'s queue, up to [`WRITE_DRAIN_BYTES_MAX`] (at least one);
    /// none (and the queue removed, so the task ends) when it is empty.
    fn take_jobs(&self, partition: i32) -> Vec<WriteJob> {
        let mut writes = self.writes.borrow_mut();
        let Some(queue) = writes.get_mut(&partition) else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        let mut bytes = 0;
        while let Some(job) = queue.front() {
            let job_bytes = job.bytes();
            if !jobs.is_empty() && bytes + job_bytes > WRITE_DRAIN_BYTES_MAX {
                break;
            }
            bytes += job_bytes;
            if let Some(job) = queue.pop_front() {
                jobs.push(job);
            }
        }
        if jobs.is_empty() {
            writes.remove(&partition);
        }
        jobs
    }

    /// Queues `records` for `group_id`'s partition and waits for the job's completion, which
    /// `complete` turns into the answer (after applying the change).
    /// Always awaited directly after the `prepare_*` it writes for, so the job is queued in
    /// the same synchronous step (queue order = prepare order).
    async fn write_and<T: 'static>(
        self: &Rc<Self>,
        group_id: &str,
        records: Result<Vec<OffsetsRecord>, GroupError>,
        complete: impl FnOnce(&GroupService, Result<(), GroupError>) -> Result<T, GroupError> + 'static,
    ) -> Result<T, GroupError> {
        let answer = self.submit(group_id, records, complete);
        answer
            .recv_async()
            .await
            .unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    /// Queues `records` for `group_id`'s partition now; the receiver gets what `complete` makes
    /// of the write's result (after applying the change).
    fn submit<T: 'static>(
        self: &Rc<Self>,
        group_id: &str,
        records: Result<Vec<OffsetsRecord>, GroupError>,
        complete: impl FnOnce(&GroupService, Result<(), GroupError>) -> Result<T, GroupError> + 'static,
    ) -> flume::Receiver<Result<T, GroupError>> {
        let (sender, answer) = flume::bounded(1);
        let done: WriteDone = Box::new(move |service, result| {
            let _ = sender.try_send(complete(service, result));
        });
        self.enqueue(offsets_partition(group_id), WriteJob { records, done });
        answer
    }

    /// JoinGroup: parks until the coordinator answers.
    pub async fn join(self: &Rc<Self>, request: JoinRequest) -> JoinResponse {
        if let Err(error) = self.check_loaded(&request.group_id) {
            return JoinResponse::error(error, &request.member_id);
        }
        let token = self.token();
        let member_id = request.member_id.clone();
        let (sender, answer) = flume::bounded(1);
        self.joins.borrow_mut().insert(token, sender);
        let effects = self.coordinator.borrow_mut().join(token, request, now_ms());
        self.apply(effects);
        let response = answer.recv_async().await;
        self.joins.borrow_mut().remove(&token);
        response.unwrap_or_else(|_| {
            JoinResponse::error(GroupError::CoordinatorNotAvailable, &member_id)
        })
    }

    /// SyncGroup: parks until the leader's assignment is durable (or an error).
    pub async fn sync(self: &Rc<Self>, request: SyncRequest) -> SyncResponse {
        if self.check_loaded(&request.group_id).is_err() {
            // Kafka: the rebalance's state is lost while loading; REBALANCE_IN_PROGRESS makes
            // the member rejoin (older clients do not know COORDINATOR_LOAD_IN_PROGRESS here).
            return SyncResponse::error(GroupError::RebalanceInProgress);
        }
        let token = self.token();
        let (sender, answer) = flume::bounded(1);
        self.syncs.borrow_mut().insert(token, sender);
        let effects = self.coordinator.borrow_mut().sync(token, request, now_ms());
        self.apply(effects);
        let response = answer.recv_async().await;
        self.syncs.borrow_mut().remove(&token);
        response.unwrap_or_else(|_| SyncResponse::error(GroupError::CoordinatorNotAvailable))
    }

    /// Heartbeat: answered at once. While the group's partition loads Kafka answers without
    /// an error (the member's state is not known yet).
    pub fn heartbeat(&self, request: &HeartbeatRequest) -> Result<(), GroupError> {
        match self.check_loaded(&request.group_id) {
            Err(GroupError::CoordinatorLoadInProgress) => Ok(()),
            Err(error) => Err(error),
            Ok(()) => self.coordinator.borrow_mut().heartbeat(request, now_ms()),
        }
    }

    /// LeaveGroup (batched).
    pub fn leave(self: &Rc<Self>, group_id: &str, members: &[LeaveMember]) -> LeaveResponse {
        if let Err(error) = self.check_loaded(group_id) {
            return LeaveResponse {
                error: Some(error),
                members: Vec::new(),
            };
        }
        let (response, effects) = self
            .coordinator
            .borrow_mut()
            .leave(group_id, members, now_ms());
        self.apply(effects);
        response
    }

    /// OffsetCommit: validated, written, then visible; answered once durable. `Err` is a
    /// group-level error; `Ok` has one result per partition in request order.
    pub async fn commit(
        self: &Rc<Self>,
        request: CommitRequest,
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        self.check_loaded(&request.group_id)?;
        let pending = self
            .coordinator
            .borrow_mut()
            .prepare_commit(&request, now_ms())?;
        if pending.accepted.is_empty() {
            return Ok(pending.results);
        }
        let records = pending
            .accepted
            .iter()
            .map(|((topic, partition), committed)| {
                offset_record(
                    &pending.group_id,
                    topic,
                    *partition,
                    Some(&committed.record()),
                )
            })
            .collect();
        let group_id = pending.group_id.clone();
        self.write_and(&group_id, records, move |service, result| {
            service
                .coordinator
                .borrow_mut()
                .complete_commit(&pending, result);
            result.map(|()| pending.results)
        })
        .await
    }

    /// OffsetFetch: durable commits only.
    pub fn fetch(
        &self,
        group_id: &str,
        wanted: Option<&[(String, i32)]>,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        self.check_loaded(group_id)?;
        Ok(self.coordinator.borrow().fetch_offsets(group_id, wanted))
    }

    /// OffsetDelete: tombstones durable before the offsets go.
    pub async fn delete_offsets(
        self: &Rc<Self>,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        self.check_loaded(group_id)?;
        let pending = self
            .coordinator
            .borrow()
            .prepare_delete_offsets(group_id, partitions)?;
        if pending.deleted.is_empty() {
            return Ok(pending.results);
        }
        let records = pending
            .deleted
            .iter()
            .map(|(topic, partition)| offset_record(group_id, topic, *partition, None))
            .collect();
        self.write_and(group_id, records, move |service, result| {
            service
                .coordinator
                .borrow_mut()
                .complete_delete_offsets(&pending, result);
            result.map(|()| pending.results)
        })
        .await
    }

    /// DeleteGroups for one group: offset and group tombstones durable before it goes.
    pub async fn delete_group(self: &Rc<Self>, group_id: &str) -> Result<(), GroupError> {
        self.check_loaded(group_id)?;
        let pending = self
            .coordinator
            .borrow_mut()
            .prepare_delete_group(group_id)?;
        self.write_removal(pending).await
    }

    /// Writes the tombstones of `pending` and completes it.
    async fn write_removal(self: &Rc<Self>, pending: PendingRemoval) -> Result<(), GroupError> {
        self.submit_removal(pending)
            .recv_async()
            .await
            .unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    /// Queues the tombstones of `pending` now.
    fn submit_removal(
        self: &Rc<Self>,
        pending: PendingRemoval,
    ) -> flume::Receiver<Result<(), GroupError>> {
        let group_id = pending.group_id.clone();
        let mut records: Result<Vec<OffsetsRecord>, GroupError> = pending
            .offsets
            .iter()
            .map(|(topic, partition)| offset_record(&group_id, topic, *partition, None))
            .collect();
        if pending.remove_group {
            // Offsets first, then the group: a replay never sees offsets of a deleted group.
            if let (Ok(records), Ok(tombstone)) = (&mut records, group_record(&group_id, None)) {
                records.push(tombstone);
            }
        }
        self.submit(&group_id, records, move |service, result| {
            service
                .coordinator
                .borrow_mut()
                .complete_removal(&pending, result);
            result
        })
    }

    /// One retention pass (`offsets.retention.minutes`): writes the tombstones of what
    /// expired, then drops it. Returns (offsets, groups) removed.
    pub async fn expire_offsets(self: &Rc<Self>) -> (usize, usize) {
        let retention_ms = self.config.offsets_retention_ms;
        let removals = self
            .coordinator
            .borrow_mut()
            .prepare_expiry(now_ms(), retention_ms);
        // Queued in one go, in the order they were prepared (a commit prepared later must be
        // written after these tombstones); the queue writes them together.
        let waits: Vec<_> = removals
            .into_iter()
            .map(|pending| {
                let counts = (pending.offsets.len(), usize::from(pending.remove_group));
                (counts, self.submit_removal(pending))
            })
            .collect();
        let (mut offsets, mut groups) = (0, 0);
        for ((removed_offsets, removed_groups), wait) in waits {
            if let Ok(Ok(())) = wait.recv_async().await {
                offsets += removed_offsets;
                groups += removed_groups;
            }
        }
        if offsets + groups > 0 {
            tracing::info!(
                offsets,
                groups,
                "expired committed offsets and empty groups"
            );
        }
        (offsets, groups)
    }

    /// DescribeGroups for one group (`None`: unknown).
    pub fn describe(&self, group_id: &str) -> Result<Option<GroupDescription>, GroupError> {
        self.check_loaded(group_id)?;
        Ok(self.coordinator.borrow().describe(group_id))
    }

    /// ListGroups on this shard; `states` empty means all. While a partition loads the error
    /// is COORDINATOR_LOAD_IN_PROGRESS with the groups already served, as Kafka answers.
    pub fn list(&self, states: &[GroupState]) -> (Option<GroupError>, Vec<GroupListing>) {
        let loads = self.loads.borrow();
        let error = if loads.values().any(|state| *state == LoadState::Loading) {
            Some(GroupError::CoordinatorLoadInProgress)
        } else if loads.is_empty() {
            None
        } else {
            Some(GroupError::CoordinatorNotAvailable)
        };
        (error, self.coordinator.borrow().list(states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{CommitPartition, Protocol, RETENTION_TIME_DEFAULT};
    use bytes::BytesMut;
    use runnel_engine::{LogConfig, LogContext};

    fn run<T>(future: impl Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("make executor")
            .run(future)
    }

    /// Appends to real logs under `dir`, one per `__consumer_offsets` partition; can be told to
    /// fail every append.
    struct LogWriter {
        dir: std::path::PathBuf,
        logs: RefCell<HashMap<i32, PartitionLog>>,
        fail: Cell<bool>,
    }

    impl LogWriter {
        fn new(dir: &std::path::Path) -> Rc<Self> {
            Rc::new(Self {
                dir: dir.to_path_buf(),
                logs: RefCell::new(HashMap::new()),
                fail: Cell::new(false),
            })
        }

        async fn log(&self, partition: i32) -> PartitionLog {
            if let Some(log) = self.logs.borrow().get(&partition) {
                return log.clone();
            }
            let dir = self.dir.join(format!("{OFFSETS_TOPIC}-{partition}"));
            let log = PartitionLog::open(&dir, LogConfig::default(), LogContext::direct(1 << 20))
                .await
                .expect("open log");
            self.logs.borrow_mut().insert(partition, log.clone());
            log
        }

        async fn close(&self) {
            let logs: Vec<PartitionLog> =
                self.logs.borrow_mut().drain().map(|(_, log)| log).collect();
            for log in logs {
                log.close().await.expect("close");
            }
        }
    }

    impl OffsetsWriter for LogWriter {
        fn append(
            &self,
            partition: i32,
            batch: Bytes,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
            Box::pin(async move {
                if self.fail.get() {
                    return Err("injected write failure".to_string());
                }
                let log = self.log(partition).await;
                log.append(BytesMut::from(&batch[..]))
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            })
        }
    }

    fn commit(group_id: &str, generation_id: i32, offsets: &[(i32, i64)]) -> CommitRequest {
        CommitRequest {
            group_id: group_id.into(),
            generation_id,
            member_id: String::new(),
            group_instance_id: None,
            retention_time_ms: RETENTION_TIME_DEFAULT,
            partitions: offsets
                .iter()
                .map(|(partition, offset)| CommitPartition {
                    topic: "t".into(),
                    partition: *partition,
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: Some(format!("m{offset}")),
                })
                .collect(),
        }
    }

    fn offsets_of(service: &GroupService, group_id: &str) -> Result<Vec<(i32, i64)>, GroupError> {
        let fetched = service.fetch(group_id, None)?;
        Ok(fetched
            .into_iter()
            .map(|offset| (offset.partition, offset.offset))
            .collect())
    }

    fn join_request(group_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: group_id.into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: Bytes::new(),
            }],
            require_known_member_id: true,
        }
    }

    /// Waits (bounded) until no partition of `service` is loading.
    async fn wait_loaded(service: &GroupService) {
        for _ in 0..1000 {
            if (0..OFFSETS_TOPIC_PARTITIONS).all(|partition| !service.is_loading(partition)) {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        panic!("the load did not finish");
    }

    #[test]
    fn a_failed_commit_write_leaves_memory_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let writer = LogWriter::new(dir.path());
            let service = Rc::new(GroupService::default());
            service.set_writer(writer.clone());
            assert_eq!(
                service.commit(commit("g", -1, &[(0, 5)])).await,
                Ok(vec![None])
            );
            writer.fail.set(true);
            assert_eq!(
                service.commit(commit("g", -1, &[(0, 9), (1, 9)])).await,
                Err(GroupError::CoordinatorNotAvailable)
            );
            assert_eq!(offsets_of(&service, "g"), Ok(vec![(0, 5)]));
            // Nor do deletes happen in memory when their tombstones are not durable.
            assert_eq!(
                service.delete_group("g").await,
                Err(GroupError::CoordinatorNotAvailable)
            );
            assert_eq!(offsets_of(&service, "g"), Ok(vec![(0, 5)]));
            let partitions = [("t".to_string(), 0)];
            assert_eq!(
                service.delete_offsets("g", &partitions).await,
                Err(GroupError::CoordinatorNotAvailable)
            );
            assert_eq!(offsets_of(&service, "g"), Ok(vec![(0, 5)]));
            writer.fail.set(false);
            writer.close().await;
        });
    }

    #[test]
    fn a_failed_assignment_write_fails_the_sync_and_the_group_rebalances() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let writer = LogWriter::new(dir.path());
            let service = Rc::new(GroupService::new(GroupConfig {
                limits: GroupLimits {
                    initial_rebalance_delay_ms: 0,
                    ..GroupLimits::default()
                },
                ..GroupConfig::default()
            }));
            service.set_writer(writer.clone());
            let joined = service
                .join(JoinRequest {
                    require_known_member_id: false,
                    ..join_request("g")
                })
                .await;
            assert_eq!((joined.error, joined.generation_id), (None, 1));
            let sync = SyncRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: joined.member_id.clone(),
                group_instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"a"))],
            };
            writer.fail.set(true);
            let synced = service.sync(sync.clone()).await;
            assert_eq!(synced.error, Some(GroupError::CoordinatorNotAvailable));
            let description = service.describe("g").unwrap().unwrap();
            assert_eq!(description.state, GroupState::PreparingRebalance);
            assert!(description.members[0].assignment.is_empty());
            // Rejoin and sync once writes work: the assignment is served and durable.
            writer.fail.set(false);
            let rejoined = service
                .join(JoinRequest {
                    member_id: joined.member_id.clone(),
                    ..join_request("g")
                })
                .await;
            assert_eq!((rejoined.error, rejoined.generation_id), (None, 2));
            let synced = service
                .sync(SyncRequest {
                    generation_id: 2,
                    ..sync
                })
                .await;
            assert_eq!((synced.error, &synced.assignment[..]), (None, &b"a"[..]));
            let partition = offsets_partition("g");
            let reloaded = Rc::new(GroupService::default());
            reloaded.spawn_load(partition, writer.log(partition).await);
            wait_loaded(&reloaded).await;
            let description = reloaded.describe("g").unwrap().unwrap();
            assert_eq!(description.state, GroupState::Stable);
            assert_eq!(&description.members[0].assignment[..], b"a");
            writer.close().await;
        });
    }

    #[test]
    fn concurrent_commits_keep_their_order_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let writer = LogWriter::new(dir.path());
            let service = Rc::new(GroupService::default());
            service.set_writer(writer.clone());
            let tasks: Vec<_> = (0..50)
                .map(|offset| {
                    let service = service.clone();
                    glommio::spawn_local(async move {
                        service.commit(commit("g", -1, &[(0, offset)])).await
                    })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await, Ok(vec![None]));
            }
            assert_eq!(offsets_of(&service, "g"), Ok(vec![(0, 49)]));
            // The log agrees: a reload sees the last commit.
            let partition = offsets_partition("g");
            let log = writer.log(partition).await;
            let reloaded = Rc::new(GroupService::default());
            reloaded.spawn_load(partition, log);
            wait_loaded(&reloaded).await;
            assert_eq!(offsets_of(&reloaded, "g"), Ok(vec![(0, 49)]));
            writer.close().await;
        });
    }

    #[test]
    fn groups_of_a_loading_partition_answer_load_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let writer = LogWriter::new(dir.path());
            let service = Rc::new(GroupService::default());
            service.set_writer(writer.clone());
            // Enough commits for a load of several reads.
            for round in 0..40 {
                let offsets: Vec<(i32, i64)> = (0..2000).map(|index| (index % 4, round)).collect();
                let result = service.commit(commit("g", -1, &offsets)).await;
                assert!(result.is_ok());
            }
            let expected = Ok((0..4).map(|partition| (partition, 39)).collect::<Vec<_>>());
            assert_eq!(offsets_of(&service, "g"), expected);

            let partition = offsets_partition("g");
            let log = writer.log(partition).await;
            let reloaded = Rc::new(GroupService::default());
            reloaded.set_writer(writer.clone());
            reloaded.spawn_load(partition, log);
            let loading = Err(GroupError::CoordinatorLoadInProgress);
            assert_eq!(offsets_of(&reloaded, "g"), loading);
            assert_eq!(
                reloaded.commit(commit("g", -1, &[(0, 1)])).await,
                loading.clone().map(|_: Vec<(i32, i64)>| Vec::new())
            );
            assert_eq!(
                reloaded.describe("g"),
                Err(GroupError::CoordinatorLoadInProgress)
            );
            assert_eq!(
                reloaded.join(join_request("g")).await.error,
                Some(GroupError::CoordinatorLoadInProgress)
            );
            let (error, _) = reloaded.list(&[]);
            assert_eq!(error, Some(GroupError::CoordinatorLoadInProgress));
            assert_eq!(
                reloaded.delete_group("g").await,
                Err(GroupError::CoordinatorLoadInProgress)
            );
            // As Kafka: heartbeats pass, syncs are told to rejoin.
            let heartbeat = HeartbeatRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: "m".into(),
                group_instance_id: None,
            };
            assert_eq!(reloaded.heartbeat(&heartbeat), Ok(()));
            let sync = SyncRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: "m".into(),
                group_instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments: Vec::new(),
            };
            assert_eq!(
                reloaded.sync(sync).await.error,
                Some(GroupError::RebalanceInProgress)
            );
            // Another partition's group is served meanwhile.
            let other = (0..)
                .map(|index| format!("other-{index}"))
                .find(|group| offsets_partition(group) != partition)
                .unwrap();
            assert_eq!(
                reloaded.commit(commit(&other, -1, &[(0, 3)])).await,
                Ok(vec![None])
            );
            wait_loaded(&reloaded).await;
            assert_eq!(offsets_of(&reloaded, "g"), expected);
            assert_eq!(reloaded.list(&[]).0, None);
            writer.close().await;
        });
    }

    #[test]
    fn retention_writes_tombstones_before_forgetting() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let writer = LogWriter::new(dir.path());
            let config = GroupConfig {
                offsets_retention_ms: 1,
                ..GroupConfig::default()
            };
            let service = Rc::new(GroupService::new(config.clone()));
            service.set_writer(writer.clone());
            service.commit(commit("g", -1, &[(0, 5)])).await.unwrap();
            glommio::timer::sleep(Duration::from_millis(5)).await;
            writer.fail.set(true);
            assert_eq!(service.expire_offsets().await, (0, 0));
            assert_eq!(offsets_of(&service, "g"), Ok(vec![(0, 5)]));
            writer.fail.set(false);
            assert_eq!(service.expire_offsets().await, (1, 1));
            assert_eq!(offsets_of(&service, "g"), Ok(vec![]));
            assert!(service.describe("g").unwrap().is_none());
            // The tombstones are durable: a reload does not bring the offset back.
            let partition = offsets_partition("g");
            let reloaded = Rc::new(GroupService::new(config));
            reloaded.spawn_load(partition, writer.log(partition).await);
            wait_loaded(&reloaded).await;
            assert_eq!(offsets_of(&reloaded, "g"), Ok(vec![]));
            assert!(reloaded.describe("g").unwrap().is_none());
            writer.close().await;
        });
    }

    #[test]
    fn partition_matches_kafka() {
        assert_eq!(java_hash_code(""), 0);
        assert_eq!(java_hash_code("ab"), 97 * 31 + 98);
        // Java: "my-group".hashCode() == -1906497762 (overflowing, negative).
        assert_eq!(java_hash_code("my-group"), -1_906_497_762);
        assert_eq!(offsets_partition("my-group"), 36);
    }
}
