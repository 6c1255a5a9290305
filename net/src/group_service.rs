//! The consumer-group coordinator wired into the shards (in memory for now).
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
//! start. A group's partition is owned by its coordinator shard, so [`persist`] appends locally
//! and returns once the batch is durable (the topic syncs every commit). `Effect::StoreGroup` is
//! written before the effects after it are answered (one store task at a time, in order). When a
//! shard opens one of its `__consumer_offsets` partitions it replays it with [`load_partition`]
//! before it serves its inbox, so group requests routed to it wait until its groups are loaded.

use crate::client::records::decode_batches;
use crate::group::records::{self, RecordKey};
use crate::group::{
    CommittedOffset, Effect, GroupCoordinator, GroupError, GroupLimits, JoinRequest, JoinResponse,
    RequestToken, SyncRequest, SyncResponse,
};
use crate::shard::{owner_shard, Shard, ShardMessage, TopicPartition, TopicSpec};
use bytes::Bytes;
use runnel_engine::batch::{build_batch, BuildRecord};
use runnel_engine::PartitionLog;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
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

/// Appends `records` to the `__consumer_offsets` partition of `group_id` and returns once they
/// are durable. Runs on the group's coordinator shard (the partition's owner). Any failure is
/// COORDINATOR_NOT_AVAILABLE for the client (retriable), logged once here.
pub async fn persist(
    shard: &Shard,
    group_id: &str,
    records: &[OffsetsRecord],
) -> Result<(), GroupError> {
    let partition = TopicPartition {
        topic: Arc::from(OFFSETS_TOPIC),
        partition: offsets_partition(group_id),
    };
    let timestamp_ms = now_ms();
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut batch_bytes = 0;
        while end < records.len() && (end == start || batch_bytes < PERSIST_BATCH_BYTES_MAX) {
            let (key, value) = &records[end];
            batch_bytes += key.len() + value.as_ref().map_or(0, Bytes::len);
            end += 1;
        }
        let batch: Vec<BuildRecord<'_>> = records[start..end]
            .iter()
            .map(|(key, value)| (Some(&key[..]), value.as_deref(), timestamp_ms))
            .collect();
        let bytes = Bytes::from(build_batch(&batch));
        if let Err(error) = shard.append(partition.clone(), bytes).await {
            tracing::error!(group = group_id, %error, "writing to {OFFSETS_TOPIC} failed");
            return Err(GroupError::CoordinatorNotAvailable);
        }
        start = end;
    }
    Ok(())
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
    let value = value
        .map(|value| records::encode_offset_value(value, records::OFFSET_COMMIT_VALUE_VERSION))
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

/// Replays a `__consumer_offsets` partition from its start to its durable end into this
/// shard's coordinator. Runs on the owner shard when it opens the partition, before it serves
/// group requests. Records it cannot parse are logged and skipped (a later record for the same
/// key still applies), so one bad record never stops a broker from starting.
pub async fn load_partition(groups: &GroupService, log: &PartitionLog) -> Result<(), String> {
    let end = log.durable_end_offset();
    let mut offset = log.log_start_offset();
    let mut read_bytes = LOAD_READ_BYTES;
    let mut loaded = 0u64;
    while offset < end {
        let plan = log
            .read(offset, read_bytes)
            .map_err(|error| format!("reading at {offset}: {error}"))?;
        // A plain read on the reactor: this runs while the shard starts, before it serves.
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
        for batch in &batches {
            if batch.control {
                continue;
            }
            for record in batch.records() {
                let record = record.map_err(|error| format!("decoding at {offset}: {error}"))?;
                groups.restore_record(record.key.as_deref(), record.value.as_deref());
                loaded += 1;
            }
        }
        if next <= offset {
            return Err(format!("no progress at offset {offset}"));
        }
        offset = next;
    }
    tracing::debug!(dir = %log.dir().display(), records = loaded, "loaded consumer groups");
    Ok(())
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

/// One shard's coordinator and its parked requests.
///
/// Lives on one shard (inside its `Shard`); used by that shard's tasks only.
pub struct GroupService {
    coordinator: RefCell<GroupCoordinator>,
    joins: RefCell<HashMap<RequestToken, flume::Sender<JoinResponse>>>,
    syncs: RefCell<HashMap<RequestToken, flume::Sender<SyncResponse>>>,
    next_token: Cell<RequestToken>,
    /// The owning shard (for appends to `__consumer_offsets`); set by [`GroupService::attach`].
    shard: RefCell<Weak<Shard>>,
    /// One effects-with-store task at a time, in the order the coordinator emitted them.
    store_lock: glommio::sync::Semaphore,
    /// Effect lists waiting for or running in a store task; while any is, later effects queue
    /// behind them so answers never overtake the writes they follow.
    stores_pending: Cell<usize>,
}

impl Default for GroupService {
    fn default() -> Self {
        Self::new(GroupLimits::default())
    }
}

impl GroupService {
    /// An empty coordinator.
    pub fn new(limits: GroupLimits) -> Self {
        Self {
            coordinator: RefCell::new(GroupCoordinator::new(limits)),
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            shard: RefCell::new(Weak::new()),
            store_lock: glommio::sync::Semaphore::new(1),
            stores_pending: Cell::new(0),
        }
    }

    /// Gives the service its shard, for the writes effects need.
    pub fn attach(&self, shard: &Rc<Shard>) {
        *self.shard.borrow_mut() = Rc::downgrade(shard);
    }

    /// Applies one `__consumer_offsets` record while loading (see [`load_partition`]).
    pub fn restore_record(&self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key else {
            tracing::warn!("skipping a {OFFSETS_TOPIC} record without a key");
            return;
        };
        let now_ms = now_ms();
        let mut coordinator = self.coordinator.borrow_mut();
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
                    // A tombstone: the group was deleted (its offsets' tombstones precede it).
                    Ok(None) => {
                        let _ = coordinator.delete_group(&group);
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

    /// Starts the tick task on the current executor; it stops once the service is dropped.
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
    }

    fn token(&self) -> RequestToken {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        token
    }

    /// Carries out `effects` in order: writes the group records `StoreGroup` asks for before
    /// answering the parked requests after them. Effects without a write are answered at once
    /// unless a store task is pending (then they queue behind it).
    fn apply(&self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        let stores = effects
            .iter()
            .any(|effect| matches!(effect, Effect::StoreGroup { .. }));
        if !stores && self.stores_pending.get() == 0 {
            self.answer(effects, None);
            return;
        }
        let Some(shard) = self.shard.borrow().upgrade() else {
            self.answer(effects, Some(GroupError::CoordinatorNotAvailable));
            return;
        };
        self.stores_pending.set(self.stores_pending.get() + 1);
        glommio::spawn_local(async move {
            let service = shard.groups.clone();
            let permit = service.store_lock.acquire_permit(1).await;
            let mut failed = None;
            let mut answers = Vec::new();
            for effect in effects {
                let Effect::StoreGroup { group_id } = effect else {
                    answers.push(effect);
                    continue;
                };
                service.answer(std::mem::take(&mut answers), failed);
                let value = service.coordinator.borrow().group_record(&group_id);
                let Some(value) = value else { continue };
                let stored = match group_record(&group_id, Some(&value)) {
                    Ok(record) => persist(&shard, &group_id, &[record]).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = stored {
                    failed = Some(error);
                }
            }
            service.answer(answers, failed);
            drop(permit);
            service
                .stores_pending
                .set(service.stores_pending.get().saturating_sub(1));
        })
        .detach();
    }

    /// Answers the parked requests named in `effects`; after a failed group write
    /// (`store_error`) successful SyncGroup answers become that error, as in Kafka.
    fn answer(&self, effects: Vec<Effect>, store_error: Option<GroupError>) {
        for effect in effects {
            match effect {
                Effect::Join { token, response } => {
                    if let Some(sender) = self.joins.borrow_mut().remove(&token) {
                        let _ = sender.try_send(response);
                    }
                }
                Effect::Sync {
                    token,
                    mut response,
                } => {
                    if let (Some(error), None) = (store_error, response.error) {
                        response = SyncResponse::error(error);
                    }
                    if let Some(sender) = self.syncs.borrow_mut().remove(&token) {
                        let _ = sender.try_send(response);
                    }
                }
                Effect::StoreGroup { .. } => {}
            }
        }
    }

    /// JoinGroup: parks until the coordinator answers.
    pub async fn join(&self, request: JoinRequest) -> JoinResponse {
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

    /// SyncGroup: parks until the leader's assignment (or an error).
    pub async fn sync(&self, request: SyncRequest) -> SyncResponse {
        let token = self.token();
        let (sender, answer) = flume::bounded(1);
        self.syncs.borrow_mut().insert(token, sender);
        let effects = self.coordinator.borrow_mut().sync(token, request, now_ms());
        self.apply(effects);
        let response = answer.recv_async().await;
        self.syncs.borrow_mut().remove(&token);
        response.unwrap_or_else(|_| SyncResponse::error(GroupError::CoordinatorNotAvailable))
    }

    /// The offset records of `partitions` of `group_id` as the coordinator holds them now: the
    /// committed value, or a tombstone where there is none (deleted). Used after a call that
    /// changed them, to persist the change.
    pub fn offset_records<'a>(
        &self,
        group_id: &str,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> Result<Vec<OffsetsRecord>, GroupError> {
        let coordinator = self.coordinator.borrow();
        partitions
            .into_iter()
            .map(|(topic, partition)| {
                let value = coordinator
                    .committed(group_id, topic, partition)
                    .map(CommittedOffset::record);
                offset_record(group_id, topic, partition, value.as_ref())
            })
            .collect()
    }

    /// Runs a synchronous call on the coordinator (given the time), then answers whatever
    /// parked requests it completed.
    pub fn with<T>(&self, call: impl FnOnce(&mut GroupCoordinator, i64) -> (T, Vec<Effect>)) -> T {
        let (result, effects) = call(&mut self.coordinator.borrow_mut(), now_ms());
        self.apply(effects);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        assert_eq!(java_hash_code(""), 0);
        assert_eq!(java_hash_code("ab"), 97 * 31 + 98);
        // Java: "my-group".hashCode() == -1906497762 (overflowing, negative).
        assert_eq!(java_hash_code("my-group"), -1_906_497_762);
        assert_eq!(offsets_partition("my-group"), 36);
    }
}
