//! [`PartitionLog`]: one partition's append-only log.
//!
//! **Shard:** created, used and closed on one glommio executor (it is `!Send`); read plans it
//! returns are `Send`.
//!
//! **Appends** validate the batch, take the next offsets, stamp the base offset and queue the
//! batch; the log's flusher task writes everything queued in one direct write (group commit) and,
//! under [`FlushPolicy::EveryCommit`], one `fdatasync`, then publishes the new durable end and
//! wakes the appenders. Readers never see past the durable end.
//!
//! **Concurrency:** any number of `append`s and `read`s may run at once. Writes to the active
//! segment, rolls, truncation and close are serialized by an I/O lock; no `RefCell` borrow is
//! held across an `.await`.
//!
//! **Failure:** the first failed write or sync poisons the log: it is logged once, every waiting
//! and later append gets [`LogError::Poisoned`], and a sync is never retried.

use crate::batch::{self, BatchInfo, ValidationLimits};
use crate::cache::{CacheBudget, CachedBatch, TailCache};
use crate::checkpoint::{DurablePoint, Journal, RecoveryStats};
use crate::index::{self, SegmentIndex};
use crate::io::{align_down, Storage};
use crate::notify::Notify;
use crate::plan::{FileRange, ReadChunk, ReadPlan};
use crate::producer_state::{
    Admission, BatchMetadata, ProducerBatch, ProducerLimits, ProducerStateTable, SequenceError,
};
use crate::segment::{self, Segment, SegmentPaths};
use crate::writer::SegmentWriter;
use bytes::BytesMut;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
const LOG_START_CHECKPOINT: &str = "log-start-offset";
/// Sealed-segment indexes kept loaded at once (the active segment's is always loaded).
const LOADED_INDEXES_MAX: usize = 8;

/// When written data is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `fdatasync` before acknowledging (group-committed). The default.
    EveryCommit,
    /// Acknowledge after the write; `fdatasync` at most this often.
    IntervalMs(u64),
    /// Acknowledge after the write; sync only when sealing a segment or closing (Kafka's default).
    Never,
}

/// Which timestamp the log records in batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Overwrite max timestamp with the append time and set the LogAppendTime attribute.
    LogAppendTime,
}

/// `cleanup.policy`: what removes old data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// `delete`: `retention.ms` and `retention.bytes` delete old segments.
    pub delete: bool,
    /// `compact`: the cleaner keeps the latest record of each key (`compact.rs`).
    pub compact: bool,
}

impl CleanupPolicy {
    /// Kafka's default, `delete`.
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
    /// `compact`.
    pub const COMPACT: CleanupPolicy = CleanupPolicy {
        delete: false,
        compact: true,
    };
}

/// Per-log settings (Kafka topic configs where they exist).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when a batch would take the active segment past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older than this.
    pub segment_ms: u64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms` (negative: keep forever).
    pub retention_ms: i64,
    /// `retention.bytes` (negative: no size limit).
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: usize,
    /// Flush policy.
    pub flush: FlushPolicy,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// Space preallocated ahead of the writer at a time.
    pub preallocate_bytes: u64,
    /// Bytes of batches that may wait for the flusher before appends wait for room.
    pub pending_bytes_max: u64,
    /// Largest single direct write.
    pub write_bytes_max: usize,
    /// `producer.id.expiration.ms`: an idempotent producer's state is dropped this long after its
    /// last append to the partition.
    pub producer_id_expiration_ms: i64,
    /// Idempotent producers remembered per partition; beyond it the least recently appending
    /// one is forgotten (and its next batch accepted at any sequence, as a new producer's).
    pub producers_max: usize,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: a tombstone stays at least this long after the cleaner first
    /// passed over it, so a consumer reading from the start sees it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean once the uncleaned share of the log reaches this.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment is cleaned only once its newest record is this old.
    pub min_compaction_lag_ms: i64,
}

impl LogConfig {
    /// Checks the bounds the on-disk format and the writer rely on.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |reason: &str| Err(LogError::InvalidConfig(reason.into()));
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return invalid("segment.bytes must be between 1 KiB and 2^31-1");
        }
        if self.index_interval_bytes == 0 {
            return invalid("index.interval.bytes must be positive");
        }
        if self.max_batch_bytes < crate::batch::BATCH_HEADER_LEN
            || self.max_batch_bytes > crate::segment::STORED_BATCH_BYTES_MAX
        {
            return invalid("max.message.bytes must be between 61 bytes and 256 MiB");
        }
        if self.write_bytes_max < crate::io::BLOCK_BYTES as usize || self.pending_bytes_max == 0 {
            return invalid("write and queue bounds must be positive");
        }
        if self.producer_id_expiration_ms < 1 || self.producers_max == 0 {
            return invalid("producer expiration and producer bounds must be positive");
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return invalid("min.cleanable.dirty.ratio must be between 0 and 1");
        }
        if self.delete_retention_ms < 0 || self.min_compaction_lag_ms < 0 {
            return invalid("delete.retention.ms and min.compaction.lag.ms must not be negative");
        }
        Ok(())
    }

    pub(crate) fn producer_limits(&self) -> ProducerLimits {
        ProducerLimits {
            producers_max: self.producers_max,
            expiration_ms: self.producer_id_expiration_ms,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::EveryCommit,
            timestamp_type: TimestampType::CreateTime,
            preallocate_bytes: 8 << 20,
            pending_bytes_max: 64 << 20,
            write_bytes_max: 1 << 20,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            producers_max: 10_000,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
        }
    }
}

/// What every log of a shard shares.
#[derive(Clone)]
pub struct LogContext {
    /// Where I/O goes.
    pub storage: Rc<dyn Storage>,
    /// The shard's tail cache budget.
    pub cache: CacheBudget,
}

impl LogContext {
    /// Direct I/O and a tail cache of `cache_bytes`.
    pub fn direct(cache_bytes: u64) -> Self {
        Self {
            storage: crate::io::DirectStorage::shared(),
            cache: CacheBudget::new(cache_bytes),
        }
    }
}

/// Errors of log operations. Each maps to the Kafka error code a client should see.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LogError {
    /// The batch failed validation; nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] batch::BatchError),
    /// An earlier write or sync failed; the log accepts no more writes.
    #[error("log poisoned by an earlier I/O failure: {0}")]
    Poisoned(Arc<str>),
    /// An I/O error outside the append path (open, read, retention).
    #[error("I/O error: {0}")]
    Io(Arc<str>),
    /// The offset is below the log start or above the log end.
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// What was asked for.
        requested: i64,
        /// Current log start offset.
        log_start: i64,
        /// Current durable end offset.
        log_end: i64,
    },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// A configuration value is out of bounds.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(Arc<str>),
    /// An idempotent producer's batch does not continue its sequence (or a new epoch does not
    /// start at 0); nothing was written.
    #[error("{0}")]
    OutOfOrderSequence(SequenceError),
    /// An idempotent producer's epoch is older than one already appended (a fenced producer);
    /// nothing was written.
    #[error("{0}")]
    InvalidProducerEpoch(SequenceError),
}

impl From<SequenceError> for LogError {
    fn from(error: SequenceError) -> Self {
        match error {
            SequenceError::OutOfOrder { .. } => LogError::OutOfOrderSequence(error),
            SequenceError::InvalidEpoch { .. } => LogError::InvalidProducerEpoch(error),
        }
    }
}

impl LogError {
    /// The Kafka error code for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            LogError::InvalidBatch(error) => error.kafka_error_code(),
            LogError::Poisoned(_) | LogError::Io(_) => 56, // KAFKA_STORAGE_ERROR
            LogError::OffsetOutOfRange { .. } => 1,        // OFFSET_OUT_OF_RANGE
            LogError::Closed => 6,                         // NOT_LEADER_OR_FOLLOWER
            LogError::InvalidConfig(_) => 40,              // INVALID_CONFIG
            LogError::OutOfOrderSequence(_) => 45,         // OUT_OF_ORDER_SEQUENCE_NUMBER
            LogError::InvalidProducerEpoch(_) => 47,       // INVALID_PRODUCER_EPOCH
        }
    }

    fn io(context: &str, error: io::Error) -> Self {
        LogError::Io(format!("{context}: {error}").into())
    }
}

/// What an append returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset given to the batch's first record.
    pub base_offset: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
    /// The append time written into the batch under LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// The log start offset after the append.
    pub log_start_offset: i64,
}

/// What a timestamp lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampMatch {
    /// The first offset whose record timestamp is `>=` the target (batch base offset for
    /// compressed batches).
    pub offset: i64,
    /// The max timestamp of the batch holding it.
    pub batch_max_timestamp: i64,
    /// The timestamp of the record at `offset` (the batch's max timestamp for compressed or
    /// LogAppendTime batches, where the search is batch-granular).
    pub timestamp: i64,
}

struct PendingBatch {
    bytes: bytes::Bytes,
    info: BatchInfo,
    base_offset: i64,
    arrived_ms: u64,
}

impl PendingBatch {
    fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.info.last_offset_delta)
    }
}

struct LogState {
    segments: BTreeMap<i64, Segment>,
    writer: Option<SegmentWriter>,
    next_offset: i64,
    durable_end: i64,
    log_start: i64,
    pending: VecDeque<PendingBatch>,
    pending_bytes: u64,
    poisoned: Option<Arc<str>>,
    closing: bool,
    closed: bool,
    truncating: bool,
    flusher_running: bool,
    last_sync: Instant,
    loaded_indexes: VecDeque<i64>,
    cache: TailCache,
    /// Idempotent producers: checked when a batch is queued, made durable in `publish`.
    producers: ProducerStateTable,
    /// How much of the active segment is known synced (what a recovery checkpoint may record).
    durable_point: Option<DurablePoint>,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if let Some(reason) = &self.poisoned {
            return Err(LogError::Poisoned(reason.clone()));
        }
        if self.closing || self.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }
}

struct LogInner {
    dir: PathBuf,
    config: RefCell<LogConfig>,
    context: LogContext,
    state: RefCell<LogState>,
    notify: Rc<Notify>,
    io_lock: glommio::sync::Semaphore,
    /// Serializes changes to the set of sealed segments: retention, DeleteRecords, truncation,
    /// the cleaner's segment swap and close. Taken after `io_lock` where both are held.
    segments_lock: glommio::sync::Semaphore,
    /// The cleaner's progress (`compact.rs`).
    compact: RefCell<crate::compact::CompactState>,
    /// The open recovery checkpoint journal (`checkpoint.rs`); used under `segments_lock`.
    journal: RefCell<Option<Journal>>,
    /// What the open read.
    recovery_stats: RecoveryStats,
}

impl Drop for LogInner {
    fn drop(&mut self) {
        // Wake the flusher so it sees the log is gone and exits.
        self.notify.notify_all();
    }
}

/// See the module doc. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<LogInner>,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering it if it was not shut down cleanly, and
    /// starts its flusher task. Must be called inside a glommio executor.
    pub async fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
        context: LogContext,
    ) -> Result<PartitionLog, LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = crate::recovery::recover(&dir, &config, &context).await?;
        let cache = TailCache::new(context.cache.clone());
        let state = LogState {
            segments: recovered.segments,
            writer: Some(recovered.writer),
            next_offset: recovered.next_offset,
            durable_end: recovered.next_offset,
            log_start: recovered.log_start,
            pending: VecDeque::new(),
            pending_bytes: 0,
            poisoned: None,
            closing: false,
            closed: false,
            truncating: false,
            flusher_running: true,
            last_sync: Instant::now(),
            loaded_indexes: VecDeque::new(),
            cache,
            producers: recovered.producers,
            durable_point: recovered.durable_point,
        };
        let notify = Rc::new(Notify::default());
        let compact = crate::compact::CompactState::load(&dir, state.log_start, state.next_offset);
        let inner = Rc::new(LogInner {
            dir,
            config: RefCell::new(config),
            context,
            state: RefCell::new(state),
            notify: notify.clone(),
            io_lock: glommio::sync::Semaphore::new(1),
            segments_lock: glommio::sync::Semaphore::new(1),
            compact: RefCell::new(compact),
            journal: RefCell::new(None),
            recovery_stats: recovered.stats,
        });
        glommio::spawn_local(flusher(Rc::downgrade(&inner), notify)).detach();
        Ok(PartitionLog { inner })
    }

    /// The directory holding this log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().next_offset
    }

    /// The offset after the last durable batch: readers see everything below it.
    pub fn durable_end_offset(&self) -> i64 {
        self.inner.state.borrow().durable_end
    }

    /// The first offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start
    }

    /// What opening this log read (how its newest segment was recovered).
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.inner.recovery_stats
    }

    /// Writes a recovery checkpoint (`checkpoint.rs`) if the synced part of the active segment
    /// grew since the last one, so an unclean open scans only what follows it. Returns whether
    /// one was written; a poisoned or closed log writes none. A failed checkpoint write or sync
    /// poisons the log. The shard calls this every `log.flush.offset.checkpoint.interval.ms`.
    pub async fn checkpoint(&self) -> Result<bool, LogError> {
        crate::checkpoint::write_checkpoint(self).await
    }

    /// Why the log is poisoned, if it is.
    pub fn poisoned(&self) -> Option<Arc<str>> {
        self.inner.state.borrow().poisoned.clone()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.inner.state.borrow().segments.keys().copied().collect()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        let state = self.inner.state.borrow();
        state
            .segments
            .values()
            .map(|segment| segment.size_bytes)
            .sum()
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// Replaces the configuration (topic config changes); applies to later appends and rolls.
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        let limits = config.producer_limits();
        self.inner.state.borrow_mut().producers.set_limits(limits);
        *self.inner.config.borrow_mut() = config;
        self.inner.notify.notify_all();
        Ok(())
    }

    /// Validates and appends one record batch, returning once it is durable under the flush
    /// policy. The batch's base offset (and, under LogAppendTime, its timestamp and CRC) are
    /// rewritten in place.
    pub async fn append(&self, mut batch: BytesMut) -> Result<AppendResult, LogError> {
        let (max_batch_bytes, timestamp_type, pending_bytes_max) = {
            let config = self.inner.config.borrow();
            (
                config.max_batch_bytes,
                config.timestamp_type,
                config.pending_bytes_max,
            )
        };
        let limits = ValidationLimits {
            max_batch_bytes,
            allow_control: false,
        };
        let mut info = batch::validate_batch(&batch, &limits)?;
        let size = batch.len() as u64;
        // Bounded queue: wait for room (a single batch larger than the bound may always enter
        // an empty queue).
        self.inner
            .notify
            .wait_until(|| {
                let state = self.inner.state.borrow();
                if let Err(error) = state.check_writable() {
                    return Some(Err(error));
                }
                let room =
                    state.pending_bytes + size <= pending_bytes_max || state.pending.is_empty();
                (room && !state.truncating).then_some(Ok(()))
            })
            .await?;
        let now_ms = wall_clock_ms();
        let log_append_time_ms = match timestamp_type {
            TimestampType::LogAppendTime => {
                batch::set_log_append_time(&mut batch, now_ms as i64);
                info.max_timestamp = now_ms as i64;
                info.log_append_time = true;
                now_ms as i64
            }
            TimestampType::CreateTime => -1,
        };
        // Idempotent producers are checked as the batch is queued: no await lies between the
        // check (which records the batch as pending at the next offset) and the queueing.
        if let Some(producer_batch) = ProducerBatch::from_info(&info) {
            let admission = {
                let mut state = self.inner.state.borrow_mut();
                let base_offset = state.next_offset;
                state
                    .producers
                    .admit(&producer_batch, base_offset, now_ms as i64)?
            };
            if let Admission::Duplicate(original) = admission {
                return self.answer_duplicate(original, timestamp_type).await;
            }
        }
        let (base_offset, last_offset) = {
            let mut state = self.inner.state.borrow_mut();
            let base_offset = state.next_offset;
            batch::stamp_base_offset(&mut batch, base_offset);
            let pending = PendingBatch {
                bytes: batch.freeze(),
                info,
                base_offset,
                arrived_ms: now_ms,
            };
            let last_offset = pending.last_offset();
            state.next_offset = last_offset + 1;
            state.pending_bytes += size;
            state.pending.push_back(pending);
            (base_offset, last_offset)
        };
        self.inner.notify.notify_all();
        self.wait_durable(last_offset)
            .await
            .map(|log_start_offset| AppendResult {
                base_offset,
                last_offset,
                log_append_time_ms,
                log_start_offset,
            })
    }

    /// Waits until the batch ending at `last_offset` is durable; returns the log start then.
    async fn wait_durable(&self, last_offset: i64) -> Result<i64, LogError> {
        self.inner
            .notify
            .wait_until(|| {
                let state = self.inner.state.borrow();
                if state.durable_end > last_offset {
                    return Some(Ok(state.log_start));
                }
                if let Some(reason) = &state.poisoned {
                    return Some(Err(LogError::Poisoned(reason.clone())));
                }
                state.closed.then_some(Err(LogError::Closed))
            })
            .await
    }

    /// A producer's retry of a batch already appended: the original's offsets, once the
    /// original is durable (it may still be queued; if it never becomes durable the retry gets
    /// the same error the original does).
    async fn answer_duplicate(
        &self,
        original: BatchMetadata,
        timestamp_type: TimestampType,
    ) -> Result<AppendResult, LogError> {
        let log_start_offset = self.wait_durable(original.last_offset).await?;
        Ok(AppendResult {
            base_offset: original.base_offset,
            last_offset: original.last_offset,
            log_append_time_ms: match timestamp_type {
                TimestampType::LogAppendTime => original.max_timestamp,
                TimestampType::CreateTime => -1,
            },
            log_start_offset,
        })
    }

    /// Waits until data at or after `offset` is durable (for long-polling fetches), or the log
    /// is poisoned or closed. Callers race this against their own timeout.
    pub async fn wait_for_data(&self, offset: i64) {
        self.inner
            .notify
            .wait_until(|| {
                let state = self.inner.state.borrow();
                (state.durable_end > offset || state.poisoned.is_some() || state.closed)
                    .then_some(())
            })
            .await
    }

    /// Plans a read of whole batches starting with the one containing `offset`, up to about
    /// `max_bytes` (at least one whole batch when any data is there). Reading at the durable end
    /// returns an empty plan. Reads one segment at most; call again from the next offset.
    pub fn read(&self, offset: i64, max_bytes: u64) -> Result<ReadPlan, LogError> {
        let (durable_end, log_end, log_start) = {
            let state = self.inner.state.borrow();
            (state.durable_end, state.next_offset, state.log_start)
        };
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        let mut plan = ReadPlan {
            chunks: Vec::new(),
            durable_end_offset: durable_end,
            log_start_offset: log_start,
        };
        if offset >= durable_end {
            return Ok(plan);
        }
        if let Some(batches) = self.inner.state.borrow().cache.read(offset, max_bytes) {
            plan.chunks = batches.into_iter().map(ReadChunk::Memory).collect();
            return Ok(plan);
        }
        if let Some(range) = self.plan_file_read(offset, max_bytes)? {
            plan.chunks.push(ReadChunk::File(range));
        }
        Ok(plan)
    }

    /// The file range to read from `offset`. A cleaned segment may hold no batch at or after
    /// `offset` (its last records were compacted away): the read then continues in the next
    /// segment, so a reader is never stuck on an empty answer below the end.
    fn plan_file_read(&self, offset: i64, max_bytes: u64) -> Result<Option<FileRange>, LogError> {
        let mut offset = offset;
        let segments = self.segment_count();
        for _ in 0..segments {
            match self.plan_segment_read(offset, max_bytes)? {
                SegmentRead::Found(range) => return Ok(Some(range)),
                SegmentRead::Nothing => return Ok(None),
                SegmentRead::ContinueAt(next_offset) => offset = next_offset,
            }
        }
        Ok(None)
    }

    fn plan_segment_read(&self, offset: i64, max_bytes: u64) -> Result<SegmentRead, LogError> {
        let (segment_base, file, end, next_offset) = {
            let state = self.inner.state.borrow();
            let Some(segment) = state
                .segments
                .range(..=offset)
                .next_back()
                .map(|(_, segment)| segment)
                .filter(|segment| offset < segment.next_offset)
                .or_else(|| state.segments.range(offset + 1..).next().map(|(_, s)| s))
            else {
                return Ok(SegmentRead::Nothing);
            };
            (
                segment.base_offset,
                segment.read_file.clone(),
                segment.size_bytes,
                segment.next_offset,
            )
        };
        let index = self.segment_index(segment_base)?;
        let offset = offset.max(segment_base);
        if offset >= next_offset {
            return Ok(SegmentRead::Nothing);
        }
        let relative = u32::try_from(offset - segment_base).unwrap_or(u32::MAX);
        let start = u64::from(index.lookup_offset(relative).position);
        let read_error = |error| LogError::io("reading batch headers", error);
        let Some(first) = segment::find_batch(&file, start, end, offset).map_err(read_error)?
        else {
            let is_active = self.inner.state.borrow().active().base_offset == segment_base;
            return Ok(if is_active {
                SegmentRead::Nothing
            } else {
                SegmentRead::ContinueAt(next_offset)
            });
        };
        let target_end = first.position.saturating_add(max_bytes);
        let mut range_end = first.position + first.total_bytes;
        if target_end >= end {
            range_end = end;
        } else if target_end > range_end {
            // Jump to the last indexed batch before the target, then walk headers up to it.
            let target_position = u32::try_from(target_end).unwrap_or(u32::MAX);
            let mut position =
                u64::from(index.lookup_position(target_position).position).max(range_end);
            while position < end {
                let stored =
                    segment::read_batch_header(&file, position, end).map_err(read_error)?;
                if position + stored.total_bytes > target_end {
                    break;
                }
                position += stored.total_bytes;
            }
            range_end = position;
        }
        Ok(SegmentRead::Found(FileRange {
            file,
            position: first.position,
            length: range_end - first.position,
        }))
    }

    /// The indexes of a segment, loading (or rebuilding) a sealed segment's on demand.
    pub(crate) fn segment_index(&self, base_offset: i64) -> Result<Rc<SegmentIndex>, LogError> {
        if let Some(index) = self
            .inner
            .state
            .borrow()
            .segments
            .get(&base_offset)
            .and_then(|segment| segment.index.clone())
        {
            return Ok(index);
        }
        let interval = self.inner.config.borrow().index_interval_bytes;
        let mut state = self.inner.state.borrow_mut();
        let segment = state
            .segments
            .get_mut(&base_offset)
            .ok_or_else(|| LogError::Io("segment vanished".into()))?;
        let index = Rc::new(crate::recovery::load_sealed_index(segment, interval)?);
        segment.index = Some(index.clone());
        let state = &mut *state;
        remember_loaded_index(&mut state.segments, &mut state.loaded_indexes, base_offset);
        Ok(index)
    }

    /// The first offset whose record timestamp is at least `target_ms`, or `None` when every
    /// record is older (ListOffsets by timestamp).
    pub fn offset_for_timestamp(&self, target_ms: i64) -> Result<Option<TimestampMatch>, LogError> {
        let bases = self.segment_base_offsets();
        let log_start = self.log_start_offset();
        for base in bases {
            let (file, end, max_timestamp) = {
                let state = self.inner.state.borrow();
                let Some(segment) = state.segments.get(&base) else {
                    continue;
                };
                (
                    segment.read_file.clone(),
                    segment.size_bytes,
                    segment.max_timestamp,
                )
            };
            let max_timestamp = match max_timestamp {
                Some(known) => known,
                None => self.segment_index(base)?.max_timestamp(),
            };
            if max_timestamp < target_ms {
                continue;
            }
            let index = self.segment_index(base)?;
            let start_relative = index.lookup_time(target_ms);
            let mut position = u64::from(index.lookup_offset(start_relative).position);
            let read_error = |error| LogError::io("reading batches for a timestamp lookup", error);
            while position < end {
                let stored =
                    segment::read_batch_header(&file, position, end).map_err(read_error)?;
                if stored.max_timestamp >= target_ms && stored.last_offset >= log_start {
                    let mut bytes = vec![0u8; stored.total_bytes as usize];
                    file.read_exact_at(&mut bytes, position)
                        .map_err(read_error)?;
                    let (found, timestamp) =
                        batch::first_record_with_timestamp(&bytes, stored.base_offset, target_ms)
                            .ok()
                            .flatten()
                            .unwrap_or((stored.base_offset, stored.max_timestamp));
                    return Ok(Some(TimestampMatch {
                        offset: found.max(log_start),
                        timestamp,
                        batch_max_timestamp: stored.max_timestamp,
                    }));
                }
                position += stored.total_bytes;
            }
        }
        Ok(None)
    }

    /// Advances the log start offset to `offset` (DeleteRecords) and deletes whole segments
    /// below it (never the active one). Returns the new log start offset.
    pub async fn delete_before(&self, offset: i64) -> Result<i64, LogError> {
        let (log_start, durable_end) = {
            let state = self.inner.state.borrow();
            // A closed log's directory may already belong to a reopened log: hands off.
            if state.closing || state.closed {
                return Err(LogError::Closed);
            }
            (state.log_start, state.durable_end)
        };
        if offset > durable_end || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end: durable_end,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        let _permit = self.segments_permit().await?;
        let checkpoint = encode_checkpoint(offset);
        let path = self.inner.dir.join(LOG_START_CHECKPOINT);
        self.inner
            .context
            .storage
            .write_file_atomic(&path, &checkpoint)
            .await
            .map_err(|error| LogError::io("writing the log start checkpoint", error))?;
        self.inner.state.borrow_mut().log_start = offset;
        let doomed =
            self.take_segments_where(|segment, _| segment.next_offset <= offset, usize::MAX);
        self.delete_segment_files(doomed).await?;
        Ok(offset)
    }

    /// Deletes sealed segments wholly below the log start, past `retention.ms` (by their newest
    /// timestamp) or beyond `retention.bytes` (both only under `cleanup.policy` `delete`), oldest
    /// first, at most `segments_max` of them. Returns how many.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        segments_max: usize,
    ) -> Result<usize, LogError> {
        {
            let state = self.inner.state.borrow();
            if state.closing || state.closed {
                return Err(LogError::Closed);
            }
        }
        let _permit = self.segments_permit().await?;
        let (retention_ms, retention_bytes) = {
            let config = self.inner.config.borrow();
            // Compact-only topics are never trimmed by time or size (Kafka's rule).
            if config.cleanup_policy.delete {
                (config.retention_ms, config.retention_bytes)
            } else {
                (-1, -1)
            }
        };
        // Learn the newest timestamp of the oldest sealed segments (cheap: the index footer).
        if retention_ms >= 0 {
            let unknown: Vec<i64> = {
                let state = self.inner.state.borrow();
                let active_base = state.active().base_offset;
                state
                    .segments
                    .values()
                    .filter(|segment| {
                        segment.base_offset != active_base && segment.max_timestamp.is_none()
                    })
                    .map(|segment| segment.base_offset)
                    .take(segments_max)
                    .collect()
            };
            for base in unknown {
                let max_timestamp = self.sealed_max_timestamp(base)?;
                if let Some(segment) = self.inner.state.borrow_mut().segments.get_mut(&base) {
                    segment.max_timestamp = Some(max_timestamp);
                }
            }
        }
        let mut remaining_bytes = self.size_bytes();
        // Segments wholly below the log start (left by a DeleteRecords interrupted between its
        // checkpoint and its unlinks) go whatever the retention settings, as in Kafka.
        let log_start = self.log_start_offset();
        let doomed = self.take_segments_where(
            |segment, _| {
                let below_log_start = segment.next_offset <= log_start;
                let expired = retention_ms >= 0
                    && segment
                        .max_timestamp
                        .is_some_and(|newest| now_ms.saturating_sub(newest) > retention_ms);
                let oversized = retention_bytes >= 0
                    && remaining_bytes.saturating_sub(segment.size_bytes) >= retention_bytes as u64;
                if below_log_start || expired || oversized {
                    remaining_bytes -= segment.size_bytes;
                    return true;
                }
                false
            },
            segments_max,
        );
        let deleted = doomed.len();
        self.delete_segment_files(doomed).await?;
        Ok(deleted)
    }

    pub(crate) fn sealed_max_timestamp(&self, base: i64) -> Result<i64, LogError> {
        let index_path = SegmentPaths::new(&self.inner.dir, base).index;
        if let Ok(bytes) = std::fs::read(&index_path) {
            if let Ok(footer) = index::decode_footer(&bytes) {
                return Ok(footer.max_timestamp);
            }
        }
        Ok(self.segment_index(base)?.max_timestamp())
    }

    /// Removes from the map the oldest sealed segments matching `doomed` (stopping at the first
    /// that does not), and advances the log start past them.
    fn take_segments_where(
        &self,
        mut doomed: impl FnMut(&Segment, usize) -> bool,
        segments_max: usize,
    ) -> Vec<Segment> {
        let mut state = self.inner.state.borrow_mut();
        let active_base = state.active().base_offset;
        let mut taken = Vec::new();
        while taken.len() < segments_max {
            let Some((&base, segment)) = state.segments.iter().next() else {
                break;
            };
            if base == active_base || !doomed(segment, taken.len()) {
                break;
            }
            let segment = state.segments.remove(&base).expect("present");
            state.loaded_indexes.retain(|loaded| *loaded != base);
            taken.push(segment);
        }
        if let Some(first) = state.segments.keys().next().copied() {
            state.log_start = state.log_start.max(first);
        }
        taken
    }

    async fn delete_segment_files(&self, segments: Vec<Segment>) -> Result<(), LogError> {
        if segments.is_empty() {
            return Ok(());
        }
        let storage = &self.inner.context.storage;
        for segment in &segments {
            segment
                .paths
                .remove_all(storage.as_ref())
                .await
                .map_err(|error| LogError::io("deleting a segment", error))?;
        }
        storage
            .sync_dir(&self.inner.dir)
            .await
            .map_err(|error| LogError::io("syncing the log directory", error))
    }

    /// Removes every record at or after `offset` (a replica truncating to its leader). When
    /// `offset` falls inside a batch the whole batch goes, so the new end may be below `offset`.
    /// Waits for queued appends to finish first and blocks new ones meanwhile.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        self.inner.state.borrow().check_writable()?;
        self.inner.state.borrow_mut().truncating = true;
        let result = self.truncate_locked(offset).await;
        self.inner.state.borrow_mut().truncating = false;
        self.inner.notify.notify_all();
        result
    }

    async fn truncate_locked(&self, offset: i64) -> Result<i64, LogError> {
        self.inner
            .notify
            .wait_until(|| {
                let state = self.inner.state.borrow();
                (state.pending.is_empty() || state.poisoned.is_some()).then_some(())
            })
            .await;
        let _permit = self
            .inner
            .io_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let _segments_permit = self.segments_permit().await?;
        self.inner.state.borrow().check_writable()?;
        let (log_start, next_offset) = {
            let state = self.inner.state.borrow();
            (state.log_start, state.next_offset)
        };
        if offset >= next_offset {
            return Ok(next_offset);
        }
        if offset < log_start {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end: next_offset,
            });
        }
        let result = crate::recovery::truncate_tail(self, offset).await;
        match &result {
            Err(LogError::Io(reason)) => self.poison(reason.clone()),
            Err(_) => {}
            Ok(new_end) => self.inner.compact.borrow_mut().truncated_to(*new_end),
        }
        result
    }

    /// Truncation may cut the batch holding the log start, leaving the end below it: the start
    /// follows the end down, durably and before the cut. A crash in between re-exposes at most
    /// records of that one batch; the other order would leave a checkpoint above the end that
    /// hides records appended after the truncation once the log reopens.
    pub(crate) async fn lower_log_start_to(&self, new_end: i64) -> Result<(), LogError> {
        if new_end >= self.log_start_offset() {
            return Ok(());
        }
        self.inner
            .context
            .storage
            .write_file_atomic(
                &self.inner.dir.join(LOG_START_CHECKPOINT),
                &encode_checkpoint(new_end),
            )
            .await
            .map_err(|error| LogError::io("writing the log start checkpoint", error))?;
        self.inner.state.borrow_mut().log_start = new_end;
        Ok(())
    }

    pub(crate) fn inner_dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn context(&self) -> &LogContext {
        &self.inner.context
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut LogStateView<'_>) -> T) -> T {
        let mut state = self.inner.state.borrow_mut();
        let state = &mut *state;
        let mut view = LogStateView {
            segments: &mut state.segments,
            writer: &mut state.writer,
            next_offset: &mut state.next_offset,
            durable_end: &mut state.durable_end,
            cache: &mut state.cache,
            loaded_indexes: &mut state.loaded_indexes,
            producers: &mut state.producers,
            log_start: &mut state.log_start,
            durable_point: &mut state.durable_point,
        };
        f(&mut view)
    }

    pub(crate) fn index_interval_bytes(&self) -> u64 {
        self.inner.config.borrow().index_interval_bytes
    }

    /// Holds the sealed-segment set still (see `LogInner::segments_lock`).
    pub(crate) async fn segments_permit(&self) -> Result<glommio::sync::Permit<'_>, LogError> {
        self.inner
            .segments_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)
    }

    /// Whether the log still accepts maintenance: not poisoned, closing or closed.
    pub(crate) fn check_maintainable(&self) -> Result<(), LogError> {
        self.inner.state.borrow().check_writable()
    }

    pub(crate) fn compact_state(&self) -> &RefCell<crate::compact::CompactState> {
        &self.inner.compact
    }

    pub(crate) fn journal(&self) -> &RefCell<Option<Journal>> {
        &self.inner.journal
    }

    pub(crate) fn poison(&self, reason: Arc<str>) {
        let mut state = self.inner.state.borrow_mut();
        if state.poisoned.is_none() {
            tracing::error!(
                dir = %self.inner.dir.display(),
                %reason,
                "partition log poisoned: no further writes will be accepted"
            );
            state.poisoned = Some(reason);
        }
        // Queued batches will never be durable: only a reopen (rebuilding from disk) brings
        // the producer state back, and nothing is appended before that.
        state.producers.clear_pending();
        drop(state);
        self.inner.notify.notify_all();
    }

    /// Finishes queued appends, syncs, writes the active segment's indexes and the clean-shutdown
    /// marker, and stops the flusher. Later appends get [`LogError::Closed`].
    pub async fn close(&self) -> Result<(), LogError> {
        self.inner.state.borrow_mut().closing = true;
        self.inner.notify.notify_all();
        self.inner
            .notify
            .wait_until(|| (!self.inner.state.borrow().flusher_running).then_some(()))
            .await;
        let _permit = self
            .inner
            .io_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        // Wait for a segment swap in progress: once closed, the directory may be reopened.
        let _segments_permit = self.segments_permit().await?;
        let journal = self.inner.journal.borrow_mut().take();
        if let Some(journal) = journal {
            if let Err(error) = journal.close().await {
                tracing::warn!(dir = %self.inner.dir.display(), %error, "closing the recovery checkpoint");
            }
        }
        let poisoned = self.inner.state.borrow().poisoned.clone();
        let writer = self.inner.state.borrow_mut().writer.take();
        let result = match (writer, poisoned) {
            (Some(writer), None) => self.seal_for_shutdown(writer).await,
            (Some(writer), Some(reason)) => {
                let _ = writer.close().await;
                Err(LogError::Poisoned(reason))
            }
            // A truncation that failed part way leaves no writer: still report the poison.
            (None, Some(reason)) => Err(LogError::Poisoned(reason)),
            (None, None) => Ok(()),
        };
        self.inner.state.borrow_mut().closed = true;
        self.inner.notify.notify_all();
        result
    }

    async fn seal_for_shutdown(&self, mut writer: SegmentWriter) -> Result<(), LogError> {
        let shutdown_error = |error| LogError::io("clean shutdown", error);
        writer.trim_and_sync().await.map_err(shutdown_error)?;
        writer.close().await.map_err(shutdown_error)?;
        crate::recovery::write_segment_indexes(self, None).await?;
        let end_offset = self.log_end_offset();
        crate::recovery::write_producer_snapshot(self, end_offset).await?;
        let marker = self.inner.dir.join(CLEAN_SHUTDOWN_MARKER);
        self.inner
            .context
            .storage
            .write_file_atomic(&marker, b"clean\n")
            .await
            .map_err(shutdown_error)
    }
}

/// What one segment has for a read (see `plan_file_read`).
enum SegmentRead {
    Found(FileRange),
    /// No data at or after the offset anywhere.
    Nothing,
    /// This segment's batches end before the offset; the next segment starts here.
    ContinueAt(i64),
}

/// Mutable pieces of the log state, for the recovery module's truncation and sealing.
pub(crate) struct LogStateView<'a> {
    pub segments: &'a mut BTreeMap<i64, Segment>,
    pub writer: &'a mut Option<SegmentWriter>,
    pub next_offset: &'a mut i64,
    pub durable_end: &'a mut i64,
    pub cache: &'a mut TailCache,
    pub loaded_indexes: &'a mut VecDeque<i64>,
    pub producers: &'a mut ProducerStateTable,
    pub log_start: &'a mut i64,
    pub durable_point: &'a mut Option<DurablePoint>,
}

/// Records that a sealed segment's indexes are loaded, unloading the least recently loaded ones
/// beyond [`LOADED_INDEXES_MAX`] (never the active segment's).
pub(crate) fn remember_loaded_index(
    segments: &mut BTreeMap<i64, Segment>,
    loaded_indexes: &mut VecDeque<i64>,
    base_offset: i64,
) {
    loaded_indexes.retain(|loaded| *loaded != base_offset);
    loaded_indexes.push_back(base_offset);
    let active_base = segments.keys().next_back().copied();
    while loaded_indexes.len() > LOADED_INDEXES_MAX {
        let evicted = loaded_indexes.pop_front().expect("non-empty");
        if Some(evicted) != active_base {
            if let Some(segment) = segments.get_mut(&evicted) {
                segment.index = None;
            }
        }
    }
}

pub(crate) fn clean_shutdown_marker(dir: &Path) -> PathBuf {
    dir.join(CLEAN_SHUTDOWN_MARKER)
}

pub(crate) fn log_start_checkpoint(dir: &Path) -> PathBuf {
    dir.join(LOG_START_CHECKPOINT)
}

pub(crate) fn encode_checkpoint(offset: i64) -> Vec<u8> {
    let mut out = offset.to_be_bytes().to_vec();
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Option<i64> {
    if bytes.len() != 12 || crc32c::crc32c(&bytes[..8]).to_be_bytes() != bytes[8..12] {
        return None;
    }
    Some(i64::from_be_bytes(bytes[..8].try_into().ok()?))
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// What the flusher should do next.
enum FlushWork {
    Commit,
    SyncAt(Instant),
    Idle,
    Exit,
}

/// The log's background writer: one per log, holding only a weak reference so dropping every
/// handle (a simulated crash in tests) stops it after the round in progress.
async fn flusher(weak: Weak<LogInner>, notify: Rc<Notify>) {
    loop {
        let work = {
            let Some(inner) = weak.upgrade() else { return };
            next_flush_work(&inner)
        };
        let due = match work {
            FlushWork::Exit => break,
            FlushWork::Commit => true,
            FlushWork::SyncAt(at) => at <= Instant::now(),
            FlushWork::Idle => false,
        };
        if due {
            let Some(inner) = weak.upgrade() else { return };
            let log = PartitionLog { inner };
            if let Err(error) = commit_round(&log).await {
                log.poison(format!("{error}").into());
            }
            continue;
        }
        // Sleep until there is something to commit, the log closes or goes away, or (with a
        // sync pending under IntervalMs) the sync is due.
        let weak_for_wait = weak.clone();
        let woken = notify.wait_until(move || {
            let Some(inner) = weak_for_wait.upgrade() else {
                return Some(());
            };
            matches!(next_flush_work(&inner), FlushWork::Commit | FlushWork::Exit).then_some(())
        });
        match work {
            FlushWork::SyncAt(at) => {
                let timer = glommio::timer::sleep(at.saturating_duration_since(Instant::now()));
                futures_lite::future::or(woken, timer).await;
            }
            _ => woken.await,
        }
    }
    if let Some(inner) = weak.upgrade() {
        inner.state.borrow_mut().flusher_running = false;
        inner.notify.notify_all();
    }
}

fn next_flush_work(inner: &LogInner) -> FlushWork {
    let state = inner.state.borrow();
    if state.poisoned.is_some() {
        return FlushWork::Exit;
    }
    if !state.pending.is_empty() {
        return FlushWork::Commit;
    }
    if state.closing {
        return FlushWork::Exit;
    }
    if let FlushPolicy::IntervalMs(interval_ms) = inner.config.borrow().flush {
        if state.writer.as_ref().is_some_and(|writer| writer.unsynced) {
            return FlushWork::SyncAt(state.last_sync + Duration::from_millis(interval_ms));
        }
    }
    FlushWork::Idle
}

/// One group commit: everything queued is written (rolling segments as needed), synced under
/// the policy, then published to readers and acknowledged.
async fn commit_round(log: &PartitionLog) -> io::Result<()> {
    let inner = &log.inner;
    let _permit = inner
        .io_lock
        .acquire_permit(1)
        .await
        .map_err(|_| io::Error::other("I/O lock closed"))?;
    let group: Vec<PendingBatch> = {
        let mut state = inner.state.borrow_mut();
        state.pending_bytes = 0;
        state.pending.drain(..).collect()
    };
    if group.is_empty() {
        // A sync that came due under IntervalMs with nothing new to write.
        let writer = inner.state.borrow_mut().writer.take();
        let Some(mut writer) = writer else {
            return Ok(());
        };
        let result = if writer.unsynced {
            writer.sync().await
        } else {
            Ok(())
        };
        if result.is_ok() {
            // Everything published is synced now.
            let mut state = inner.state.borrow_mut();
            let point = DurablePoint::of_segment(state.active());
            state.durable_point = Some(point);
        }
        inner.state.borrow_mut().last_sync = Instant::now();
        inner.state.borrow_mut().writer = Some(writer);
        return result;
    }
    inner.notify.notify_all(); // room in the queue again
    let config = inner.config.borrow().clone();
    let mut writer = inner
        .state
        .borrow_mut()
        .writer
        .take()
        .ok_or_else(|| io::Error::other("log has no writer"))?;
    let result = write_group(log, &mut writer, &group, &config).await;
    let mut state = inner.state.borrow_mut();
    if state.writer.is_none() {
        state.writer = Some(writer);
    }
    result
}

async fn write_group(
    log: &PartitionLog,
    writer: &mut SegmentWriter,
    group: &[PendingBatch],
    config: &LogConfig,
) -> io::Result<()> {
    let mut start = 0;
    while start < group.len() {
        // Take batches up to the next roll point.
        let mut end = start;
        let mut segment_bytes = writer.written_bytes();
        while end < group.len() {
            let batch_bytes = group[end].bytes.len() as u64;
            if segment_bytes > 0 && needs_roll(log, segment_bytes, batch_bytes, &group[end], config)
            {
                break;
            }
            segment_bytes += batch_bytes;
            end += 1;
        }
        if end > start {
            let chunk = &group[start..end];
            let bytes: Vec<&[u8]> = chunk.iter().map(|pending| pending.bytes.as_ref()).collect();
            writer
                .append(
                    &bytes,
                    config.write_bytes_max,
                    config.preallocate_bytes,
                    config.segment_bytes,
                )
                .await?;
            let sync_now = match config.flush {
                FlushPolicy::EveryCommit => true,
                FlushPolicy::IntervalMs(interval_ms) => {
                    log.inner.state.borrow().last_sync.elapsed()
                        >= Duration::from_millis(interval_ms)
                }
                FlushPolicy::Never => false,
            };
            let synced = sync_now || end < group.len();
            if synced {
                writer.sync().await?;
                log.inner.state.borrow_mut().last_sync = Instant::now();
            }
            publish(
                log,
                chunk,
                writer.written_bytes(),
                config.index_interval_bytes,
                synced,
            );
        }
        if end < group.len() {
            crate::recovery::roll(log, writer).await?;
        }
        start = end;
    }
    Ok(())
}

fn needs_roll(
    log: &PartitionLog,
    segment_bytes: u64,
    batch_bytes: u64,
    batch: &PendingBatch,
    config: &LogConfig,
) -> bool {
    if segment_bytes + batch_bytes > config.segment_bytes {
        return true;
    }
    let state = log.inner.state.borrow();
    let first_append_ms = state.active().first_append_ms;
    first_append_ms.is_some_and(|first| batch.arrived_ms.saturating_sub(first) >= config.segment_ms)
        || u32::try_from(batch.last_offset() - state.active().base_offset).is_err()
}

/// Makes written batches visible: index entries, segment size, tail cache, durable end; and, if
/// they were `synced`, the durable point (every byte written so far is then synced).
fn publish(
    log: &PartitionLog,
    chunk: &[PendingBatch],
    written_bytes: u64,
    interval: u64,
    synced: bool,
) {
    let mut guard = log.inner.state.borrow_mut();
    let state = &mut *guard;
    let segment = state
        .segments
        .values_mut()
        .next_back()
        .expect("active segment");
    let mut position = segment.size_bytes;
    let mut index = segment
        .index
        .take()
        .map(Rc::unwrap_or_clone)
        .unwrap_or_default();
    for pending in chunk {
        let relative_offset = (pending.base_offset - segment.base_offset) as u32;
        index.record_batch(
            relative_offset,
            position as u32,
            pending.bytes.len() as u32,
            pending.info.max_timestamp,
            interval,
        );
        position += pending.bytes.len() as u64;
        segment.first_append_ms.get_or_insert(pending.arrived_ms);
        if let Some(producer_batch) = ProducerBatch::from_info(&pending.info) {
            let arrived_ms = pending.arrived_ms as i64;
            state
                .producers
                .commit(&producer_batch, pending.base_offset, arrived_ms);
        }
        state.cache.insert(CachedBatch {
            base_offset: pending.base_offset,
            last_offset: pending.last_offset(),
            bytes: pending.bytes.clone(),
        });
    }
    debug_assert_eq!(position, written_bytes);
    segment.max_timestamp = Some(index.max_timestamp());
    segment.index = Some(Rc::new(index));
    segment.size_bytes = written_bytes;
    let last = chunk.last().expect("non-empty chunk");
    segment.next_offset = last.last_offset() + 1;
    state.durable_end = last.last_offset() + 1;
    if synced {
        state.durable_point = Some(DurablePoint::of_segment(segment));
    }
    drop(guard);
    log.inner.notify.notify_all();
}

/// Rounds down to the block holding `position` (re-exported for recovery).
pub(crate) fn block_start(position: u64) -> u64 {
    align_down(position)
}
