//! Idempotent producer state of one partition (Kafka's `ProducerStateManager`): for every producer
//! id, its epoch and the sequence ranges and offsets of its last [`BATCHES_RETAINED`] batches.
//!
//! **Shard:** owned by one [`crate::PartitionLog`] on its shard; plain synchronous data, no I/O
//! except the snapshot and replay helpers at the bottom, which the log calls at open, roll,
//! truncation and close.
//!
//! **Two layers.** Sequence checks run when a batch is queued (that is when its offsets are
//! assigned), so they must see queued batches too; yet only durable batches may reach a snapshot
//! or survive a failure. The table therefore keeps:
//! - the *durable* entries: what the log's durable batches imply (what snapshots hold);
//! - a *pending* overlay per producer with queued batches: its durable entry with the queued
//!   batches applied, and how many are queued. Checks read the overlay first.
//!
//! [`ProducerStateTable::admit`] checks a batch and records it as pending;
//! [`ProducerStateTable::commit`] moves it into the durable entries once it is durable (in offset
//! order). A poisoned log never commits its queued batches and accepts nothing more; it is reopened
//! and the state rebuilt from disk. Truncation waits for the queue to drain and rebuilds the state.
//!
//! **The checks** follow Kafka 4's `ProducerAppendInfo` and `ProducerStateEntry`:
//! 1. a batch with the producer's current epoch and the exact sequence range of one of its last
//!    five batches is a duplicate: answered with the original offsets, not appended again;
//! 2. an epoch older than the producer's is fenced: `INVALID_PRODUCER_EPOCH` (47);
//! 3. a newer epoch must start at sequence 0, else `OUT_OF_ORDER_SEQUENCE_NUMBER` (45);
//! 4. the same epoch must continue at last sequence + 1 (wrapping after `i32::MAX` to 0), else 45;
//! 5. an unknown producer id (never seen, expired, or evicted) is accepted at any sequence: Kafka
//!    dropped `UNKNOWN_PRODUCER_ID` (KIP-360) because a producer whose state was lost (retention,
//!    DeleteRecords) cannot be told apart from a new one.
//!
//! Kafka's `DUPLICATE_SEQUENCE_NUMBER` (46) is not produced: Kafka answers duplicates it still
//! remembers with success and anything else out of range with 45, and so does this table.
//!
//! **Bounds.** At most `producers_max` durable entries (the least recently appending one is
//! forgotten first) and each expires `expiration_ms` after its last append (Kafka's
//! `producer.id.expiration.ms`). The pending overlay holds only producers with queued batches.
//!
//! **Snapshot file** `BASE.snapshot`, `BASE` the 20-digit offset it covers up to (exclusive),
//! written atomically at every roll and clean close; big-endian:
//! `{version u16 = 1, offset i64, producer_count u32}`, then per producer
//! `{producer_id i64, epoch i16, last_append_ms i64, batch_count u8}` and `batch_count` times
//! `{first_sequence i32, last_sequence i32, base_offset i64, last_offset_delta i32,
//! max_timestamp i64}`, oldest first; then `crc32c u32` of everything before it.

use crate::batch::{BatchHeader, BatchInfo, BATCH_HEADER_LEN, BATCH_OVERHEAD};
use crate::segment::Segment;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Batches remembered per producer for duplicate detection (Kafka's `NUM_BATCHES_TO_RETAIN`; a
/// producer has at most five requests in flight per partition).
pub const BATCHES_RETAINED: usize = 5;

const SNAPSHOT_SUFFIX: &str = ".snapshot";
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 2 + 8 + 4;
const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 2 + 8 + 1;
const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 4 + 8;
const SNAPSHOT_CRC_BYTES: usize = 4;
/// Snapshots kept: the newest, and one older in case the newest is unreadable.
pub(crate) const SNAPSHOTS_KEPT: usize = 2;
/// Sequences wrap from `i32::MAX` to 0.
const SEQUENCE_MODULUS: i64 = 1 << 31;
const ATTR_CONTROL: i16 = 0x20;

/// The producer fields of a batch with a producer id (an idempotent or transactional batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Producer id, `>= 0`.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence of the first record.
    pub base_sequence: i32,
    /// Offset delta of the last record (`records - 1`).
    pub last_offset_delta: i32,
    /// The batch's max timestamp (the append time under LogAppendTime).
    pub max_timestamp: i64,
}

impl ProducerBatch {
    /// The producer fields of a validated batch, or `None` for a batch without a producer id.
    pub fn from_info(info: &BatchInfo) -> Option<ProducerBatch> {
        (info.producer_id >= 0 && !info.control).then_some(ProducerBatch {
            producer_id: info.producer_id,
            epoch: info.producer_epoch,
            base_sequence: info.base_sequence,
            last_offset_delta: info.last_offset_delta,
            max_timestamp: info.max_timestamp,
        })
    }

    /// Sequence of the last record, wrapping after `i32::MAX` as Kafka's `incrementSequence`.
    pub fn last_sequence(&self) -> i32 {
        wrap_sequence(i64::from(self.base_sequence) + i64::from(self.last_offset_delta))
    }
}

fn wrap_sequence(sequence: i64) -> i32 {
    sequence.rem_euclid(SEQUENCE_MODULUS) as i32
}

/// `next` directly follows `last` (Kafka's `inSequence`).
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// One remembered batch of a producer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence of its first record.
    pub first_sequence: i32,
    /// Sequence of its last record.
    pub last_sequence: i32,
    /// Offset given to its first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its max timestamp (the append time under LogAppendTime).
    pub max_timestamp: i64,
}

/// What the table knows about one producer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The newest epoch seen.
    pub epoch: i16,
    /// Wall-clock ms of its last append (for expiration and eviction).
    pub last_append_ms: i64,
    /// Its last batches of `epoch`, oldest first; only `batches[..batch_count]` are meaningful.
    batches: [BatchMetadata; BATCHES_RETAINED],
    batch_count: usize,
}

impl ProducerEntry {
    fn new(epoch: i16, last_append_ms: i64) -> Self {
        Self {
            epoch,
            last_append_ms,
            batches: [BatchMetadata::default(); BATCHES_RETAINED],
            batch_count: 0,
        }
    }

    /// The remembered batches, oldest first.
    pub fn batches(&self) -> &[BatchMetadata] {
        &self.batches[..self.batch_count]
    }

    /// The last sequence of the newest remembered batch.
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches().last().map(|batch| batch.last_sequence)
    }

    fn find_duplicate(&self, first_sequence: i32, last_sequence: i32) -> Option<BatchMetadata> {
        self.batches()
            .iter()
            .find(|batch| {
                batch.first_sequence == first_sequence && batch.last_sequence == last_sequence
            })
            .copied()
    }

    /// Records a batch (Kafka's `addBatch`): a new epoch forgets the old epoch's batches.
    fn apply(&mut self, batch: &ProducerBatch, base_offset: i64, append_ms: i64) {
        if batch.epoch != self.epoch {
            self.epoch = batch.epoch;
            self.batch_count = 0;
        }
        let metadata = BatchMetadata {
            first_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence(),
            base_offset,
            last_offset: base_offset + i64::from(batch.last_offset_delta),
            max_timestamp: batch.max_timestamp,
        };
        self.push(metadata);
        self.last_append_ms = self.last_append_ms.max(append_ms);
    }

    fn push(&mut self, metadata: BatchMetadata) {
        if self.batch_count == BATCHES_RETAINED {
            self.batches.rotate_left(1);
            self.batches[BATCHES_RETAINED - 1] = metadata;
        } else {
            self.batches[self.batch_count] = metadata;
            self.batch_count += 1;
        }
    }
}

/// How [`ProducerStateTable::admit`] answered a batch it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Append it at the offset given to `admit`; it is now pending.
    Append,
    /// A retry of a batch already appended (maybe still queued): answer with these offsets.
    Duplicate(BatchMetadata),
}

/// Why a producer's batch is refused. Each maps to a Kafka error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// A gap or a reordering within an epoch, or a new epoch not starting at sequence 0.
    #[error(
        "out of order sequence number for producer {producer_id} epoch {epoch}: {sequence} \
         (incoming), {last_sequence} (last appended; -1: new epoch must start at 0)"
    )]
    OutOfOrder {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The batch's first sequence.
        sequence: i32,
        /// The producer's last sequence in that epoch, or -1 for a new epoch.
        last_sequence: i32,
    },
    /// The batch's epoch is older than the producer's current epoch: a fenced zombie.
    #[error(
        "producer {producer_id} epoch {epoch} is older than its current epoch {current_epoch}"
    )]
    InvalidEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The newest epoch appended for the producer.
        current_epoch: i16,
    },
}

impl SequenceError {
    /// The Kafka error code a Produce response carries.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            SequenceError::OutOfOrder { .. } => 45, // OUT_OF_ORDER_SEQUENCE_NUMBER
            SequenceError::InvalidEpoch { .. } => 47, // INVALID_PRODUCER_EPOCH
        }
    }
}

/// The table's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Durable entries kept; beyond it the least recently appending producer is forgotten.
    pub producers_max: usize,
    /// An entry is forgotten this long after its last append (`producer.id.expiration.ms`).
    pub expiration_ms: i64,
}

struct PendingProducer {
    /// The durable entry with every queued batch applied.
    entry: ProducerEntry,
    /// Queued batches not yet committed.
    queued_batches: usize,
}

/// See the module doc.
pub struct ProducerStateTable {
    limits: ProducerLimits,
    durable: HashMap<i64, ProducerEntry>,
    /// `(last_append_ms, producer_id)` of every durable entry: expiration and eviction order.
    by_last_append: BTreeSet<(i64, i64)>,
    pending: HashMap<i64, PendingProducer>,
}

impl ProducerStateTable {
    /// An empty table.
    pub fn new(limits: ProducerLimits) -> Self {
        Self {
            limits,
            durable: HashMap::new(),
            by_last_append: BTreeSet::new(),
            pending: HashMap::new(),
        }
    }

    /// Replaces the bounds; they apply from the next append.
    pub fn set_limits(&mut self, limits: ProducerLimits) {
        self.limits = limits;
    }

    /// Durable entries.
    pub fn len(&self) -> usize {
        self.durable.len()
    }

    /// No durable entries.
    pub fn is_empty(&self) -> bool {
        self.durable.is_empty()
    }

    /// The durable entry of `producer_id`.
    pub fn durable_entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.durable.get(&producer_id)
    }

    /// Producers with queued (not yet durable) batches.
    pub fn pending_producers(&self) -> usize {
        self.pending.len()
    }

    /// Checks a batch about to be queued at `base_offset`. An accepted batch is recorded as
    /// pending and must later be [`commit`](Self::commit)ted in offset order (or the log dies).
    pub fn admit(
        &mut self,
        batch: &ProducerBatch,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Admission, SequenceError> {
        debug_assert!(batch.producer_id >= 0 && batch.base_sequence >= 0);
        self.expire(now_ms);
        let current = match self.pending.get(&batch.producer_id) {
            Some(pending) => Some(pending.entry),
            None => self.durable.get(&batch.producer_id).copied(),
        };
        let admission = check(current.as_ref(), batch)?;
        if admission == Admission::Append {
            let mut entry = current.unwrap_or_else(|| ProducerEntry::new(batch.epoch, now_ms));
            entry.apply(batch, base_offset, now_ms);
            let pending = self
                .pending
                .entry(batch.producer_id)
                .or_insert(PendingProducer {
                    entry,
                    queued_batches: 0,
                });
            pending.entry = entry;
            pending.queued_batches += 1;
        }
        Ok(admission)
    }

    /// A batch [`admit`](Self::admit)ted at `base_offset` is durable: record it in the durable
    /// entries. Called in offset order.
    pub fn commit(&mut self, batch: &ProducerBatch, base_offset: i64, append_ms: i64) {
        self.replay(batch, base_offset, append_ms);
        if let Some(pending) = self.pending.get_mut(&batch.producer_id) {
            pending.queued_batches -= 1;
            if pending.queued_batches == 0 {
                self.pending.remove(&batch.producer_id);
            }
        } else {
            debug_assert!(false, "commit of a batch that was never admitted");
        }
    }

    /// Records a durable batch without checks: rebuilding the state from the log.
    pub fn replay(&mut self, batch: &ProducerBatch, base_offset: i64, append_ms: i64) {
        let mut entry = match self.durable.get(&batch.producer_id) {
            Some(entry) => *entry,
            None => ProducerEntry::new(batch.epoch, append_ms),
        };
        entry.apply(batch, base_offset, append_ms);
        self.put_durable(batch.producer_id, entry);
    }

    /// Forgets every queued batch (the log gave up on them).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    fn put_durable(&mut self, producer_id: i64, entry: ProducerEntry) {
        match self.durable.insert(producer_id, entry) {
            Some(old) => {
                self.by_last_append
                    .remove(&(old.last_append_ms, producer_id));
            }
            None => {
                while self.durable.len() > self.limits.producers_max.max(1) {
                    let Some((_, evicted)) = self.by_last_append.pop_first() else {
                        break;
                    };
                    self.durable.remove(&evicted);
                }
            }
        }
        self.by_last_append
            .insert((entry.last_append_ms, producer_id));
        debug_assert_eq!(self.by_last_append.len(), self.durable.len());
    }

    /// Forgets durable entries whose last append is `expiration_ms` or more before `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some(&(last_append_ms, producer_id)) = self.by_last_append.first() {
            if now_ms.saturating_sub(last_append_ms) < self.limits.expiration_ms {
                break;
            }
            self.by_last_append.pop_first();
            self.durable.remove(&producer_id);
        }
    }

    /// The snapshot file bytes for the durable entries, which cover the log below `offset`.
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let batches: usize = self.durable.values().map(|entry| entry.batch_count).sum();
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES
                + self.durable.len() * SNAPSHOT_PRODUCER_BYTES
                + batches * SNAPSHOT_BATCH_BYTES
                + SNAPSHOT_CRC_BYTES,
        );
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.durable.len() as u32).to_be_bytes());
        // Oldest first, so a decode that evicts (a lowered bound) keeps the most recent.
        for &(_, producer_id) in &self.by_last_append {
            let entry = &self.durable[&producer_id];
            out.extend_from_slice(&producer_id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_append_ms.to_be_bytes());
            out.push(entry.batch_count as u8);
            for batch in entry.batches() {
                out.extend_from_slice(&batch.first_sequence.to_be_bytes());
                out.extend_from_slice(&batch.last_sequence.to_be_bytes());
                out.extend_from_slice(&batch.base_offset.to_be_bytes());
                let delta = (batch.last_offset - batch.base_offset) as i32;
                out.extend_from_slice(&delta.to_be_bytes());
                out.extend_from_slice(&batch.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot: the offset it covers up to and its table. Rejects a file with a bad
    /// CRC, length, version or impossible contents.
    pub fn decode_snapshot(
        bytes: &[u8],
        limits: ProducerLimits,
    ) -> Result<(i64, ProducerStateTable), SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_CRC_BYTES {
            return Err(SnapshotError::BadLength(bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - SNAPSHOT_CRC_BYTES);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(SnapshotError::BadChecksum);
        }
        let mut reader = Reader { bytes: body };
        let version = u16::from_be_bytes(reader.take()?);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion(version));
        }
        let offset = i64::from_be_bytes(reader.take()?);
        let count = u32::from_be_bytes(reader.take()?) as usize;
        // Bound the count by the bytes there before trusting it.
        if count > reader.bytes.len() / SNAPSHOT_PRODUCER_BYTES {
            return Err(SnapshotError::BadLength(bytes.len()));
        }
        let mut table = ProducerStateTable::new(limits);
        for _ in 0..count {
            let (producer_id, entry) = decode_entry(&mut reader, offset)?;
            if table.durable.contains_key(&producer_id) {
                return Err(SnapshotError::BadContents("a producer id appears twice"));
            }
            table.put_durable(producer_id, entry);
        }
        if !reader.bytes.is_empty() {
            return Err(SnapshotError::BadLength(bytes.len()));
        }
        Ok((offset, table))
    }
}

/// The checks of the module doc, on the producer's current entry (pending or durable).
fn check(
    current: Option<&ProducerEntry>,
    batch: &ProducerBatch,
) -> Result<Admission, SequenceError> {
    let Some(entry) = current else {
        return Ok(Admission::Append);
    };
    if batch.epoch == entry.epoch {
        if let Some(original) = entry.find_duplicate(batch.base_sequence, batch.last_sequence()) {
            return Ok(Admission::Duplicate(original));
        }
    }
    if batch.epoch < entry.epoch {
        return Err(SequenceError::InvalidEpoch {
            producer_id: batch.producer_id,
            epoch: batch.epoch,
            current_epoch: entry.epoch,
        });
    }
    let last_sequence = if batch.epoch > entry.epoch {
        -1
    } else {
        entry.last_sequence().unwrap_or(-1)
    };
    if in_sequence(last_sequence, batch.base_sequence) {
        Ok(Admission::Append)
    } else {
        Err(SequenceError::OutOfOrder {
            producer_id: batch.producer_id,
            epoch: batch.epoch,
            sequence: batch.base_sequence,
            last_sequence,
        })
    }
}

/// Why a snapshot file was not used (the state is then rebuilt from an older one or the log).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Too short, too long, or a count the bytes cannot hold.
    #[error("producer snapshot has an impossible length {0}")]
    BadLength(usize),
    /// The CRC does not match.
    #[error("producer snapshot checksum mismatch")]
    BadChecksum,
    /// Written by a format this build does not know.
    #[error("producer snapshot version {0} is unknown")]
    UnknownVersion(u16),
    /// Fields out of range.
    #[error("producer snapshot is inconsistent: {0}")]
    BadContents(&'static str),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(SnapshotError::BadLength(self.bytes.len()));
        };
        self.bytes = rest;
        Ok(*head)
    }
}

fn decode_entry(
    reader: &mut Reader<'_>,
    snapshot_offset: i64,
) -> Result<(i64, ProducerEntry), SnapshotError> {
    let producer_id = i64::from_be_bytes(reader.take()?);
    let epoch = i16::from_be_bytes(reader.take()?);
    let last_append_ms = i64::from_be_bytes(reader.take()?);
    let [batch_count] = reader.take()?;
    let batch_count = usize::from(batch_count);
    if producer_id < 0 || epoch < 0 || batch_count == 0 || batch_count > BATCHES_RETAINED {
        return Err(SnapshotError::BadContents("producer fields out of range"));
    }
    let mut entry = ProducerEntry::new(epoch, last_append_ms);
    for _ in 0..batch_count {
        let first_sequence = i32::from_be_bytes(reader.take()?);
        let last_sequence = i32::from_be_bytes(reader.take()?);
        let base_offset = i64::from_be_bytes(reader.take()?);
        let delta = i32::from_be_bytes(reader.take()?);
        let max_timestamp = i64::from_be_bytes(reader.take()?);
        let last_offset = base_offset.saturating_add(i64::from(delta));
        if first_sequence < 0
            || last_sequence < 0
            || base_offset < 0
            || delta < 0
            || last_offset >= snapshot_offset
        {
            return Err(SnapshotError::BadContents("batch fields out of range"));
        }
        entry.push(BatchMetadata {
            first_sequence,
            last_sequence,
            base_offset,
            last_offset,
            max_timestamp,
        });
    }
    Ok((producer_id, entry))
}

// ---------------------------------------------------------------------------------------------
// Files: snapshot names, and rebuilding the table from a snapshot plus the batches after it.

/// The snapshot file covering the log below `offset`.
pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX)) else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|byte| byte.is_ascii_digit()) {
            if let Ok(offset) = stem.parse() {
                offsets.push(offset);
            }
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Rebuilds the durable state of a log whose batches are `segments` and whose end is
/// `end_offset`: the newest valid snapshot at or below the end (and not below the oldest
/// segment, whose predecessors' batches are gone) plus the batches from its offset on; with no
/// usable snapshot, every segment is read. Reads batch headers only: the batches were checked
/// when recovery scanned the newest segment, and older segments are trusted.
///
/// `preloaded` is a snapshot recovery already holds (from a recovery checkpoint): it is used
/// when no snapshot file is newer. Returns the table and the bytes read to replay batches.
pub(crate) fn rebuild(
    dir: &Path,
    segments: &BTreeMap<i64, Segment>,
    end_offset: i64,
    limits: ProducerLimits,
    now_ms: i64,
    preloaded: Option<(i64, ProducerStateTable)>,
) -> io::Result<(ProducerStateTable, u64)> {
    let first_base = segments.keys().next().copied().unwrap_or(end_offset);
    let preloaded = preloaded.filter(|(offset, _)| (first_base..=end_offset).contains(offset));
    let preloaded_offset = preloaded.as_ref().map(|(offset, _)| *offset);
    let mut loaded = None;
    for offset in list_snapshots(dir)?.into_iter().rev() {
        if offset > end_offset || offset < first_base {
            continue;
        }
        if preloaded_offset.is_some_and(|preloaded_offset| preloaded_offset >= offset) {
            break;
        }
        let path = snapshot_path(dir, offset);
        let decoded = std::fs::read(&path)
            .map_err(|error| error.to_string())
            .and_then(|bytes| {
                ProducerStateTable::decode_snapshot(&bytes, limits)
                    .map_err(|error| error.to_string())
            })
            .and_then(|(stored_offset, table)| {
                if stored_offset == offset {
                    Ok(table)
                } else {
                    Err(format!("names offset {offset} but holds {stored_offset}"))
                }
            });
        match decoded {
            Ok(table) => {
                loaded = Some((offset, table));
                break;
            }
            Err(reason) => tracing::warn!(
                snapshot = %path.display(),
                %reason,
                "producer state snapshot unusable; trying an older one"
            ),
        }
    }
    let (from_offset, mut table) = match loaded.or(preloaded) {
        Some(found) => found,
        None => {
            if end_offset > first_base {
                tracing::info!(
                    dir = %dir.display(),
                    "no usable producer state snapshot: reading every segment's batch headers"
                );
            }
            (first_base, ProducerStateTable::new(limits))
        }
    };
    let mut replayed_bytes = 0u64;
    for segment in segments.values() {
        if segment.next_offset <= from_offset {
            continue;
        }
        let start_position = match &segment.index {
            Some(index) if from_offset > segment.base_offset => {
                let relative = u32::try_from(from_offset - segment.base_offset).unwrap_or(u32::MAX);
                u64::from(index.lookup_offset(relative).position)
            }
            _ => 0,
        };
        let replayed = replay_segment(
            &segment.read_file,
            start_position,
            segment.size_bytes,
            from_offset,
            now_ms,
            &mut table,
            &mut replayed_bytes,
        )?;
        if let Err(reason) = replayed {
            tracing::warn!(
                segment = %segment.paths.log.display(),
                %reason,
                "producer state replay stopped early in this segment"
            );
        }
    }
    Ok((table, replayed_bytes))
}

/// Replays the producer batches of one segment file from `position` to `end` (bytes) whose last
/// offset is at least `from_offset`. Replayed batches count as appended at `now_ms`: the log does
/// not record arrival times and producer timestamps are not to be trusted for expiry. The outer
/// error is an I/O error; the inner one a header that cannot be walked past. Adds the bytes it
/// reads to `read_bytes`.
fn replay_segment(
    file: &File,
    mut position: u64,
    end: u64,
    from_offset: i64,
    now_ms: i64,
    table: &mut ProducerStateTable,
    read_bytes: &mut u64,
) -> io::Result<Result<(), String>> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let mut buffer = Vec::new();
    let mut buffer_position = 0u64; // file position of buffer[0]
    while position < end {
        if position + BATCH_HEADER_LEN as u64 > end {
            return Ok(Err(format!("a partial batch header at {position}")));
        }
        let header_end = position + BATCH_HEADER_LEN as u64;
        if position < buffer_position || header_end > buffer_position + buffer.len() as u64 {
            let length = CHUNK_BYTES.min(end - position) as usize;
            buffer.resize(length, 0);
            file.read_exact_at(&mut buffer, position)?;
            *read_bytes += length as u64;
            buffer_position = position;
        }
        let start = (position - buffer_position) as usize;
        let header = BatchHeader::parse(&buffer[start..]).expect("a whole header is buffered");
        let batch_length = header.batch_length.get();
        let total_bytes = u64::try_from(batch_length).unwrap_or(0) + BATCH_OVERHEAD as u64;
        if total_bytes < BATCH_HEADER_LEN as u64 || position + total_bytes > end {
            return Ok(Err(format!(
                "batch at {position} has impossible length {batch_length}"
            )));
        }
        let base_offset = header.base_offset.get();
        let delta = header.last_offset_delta.get();
        let control = header.attributes.get() & ATTR_CONTROL != 0;
        let producer_id = header.producer_id.get();
        let last_offset = base_offset.saturating_add(i64::from(delta));
        if producer_id >= 0 && !control && delta >= 0 && last_offset >= from_offset {
            let batch = ProducerBatch {
                producer_id,
                epoch: header.producer_epoch.get(),
                base_sequence: header.base_sequence.get(),
                last_offset_delta: delta,
                max_timestamp: header.max_timestamp.get(),
            };
            table.replay(&batch, base_offset, now_ms);
        }
        position += total_bytes;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ProducerLimits = ProducerLimits {
        producers_max: 100,
        expiration_ms: 86_400_000,
    };
    const NOW: i64 = 1_700_000_000_000;

    fn batch(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id,
            epoch,
            base_sequence,
            last_offset_delta: records - 1,
            max_timestamp: NOW,
        }
    }

    /// Admits and commits at once, as when every batch is durable before the next arrives.
    fn append(table: &mut ProducerStateTable, batch: &ProducerBatch, base_offset: i64) {
        assert_eq!(
            table.admit(batch, base_offset, NOW),
            Ok(Admission::Append),
            "{batch:?}"
        );
        table.commit(batch, base_offset, NOW);
    }

    fn out_of_order(table: &mut ProducerStateTable, batch: &ProducerBatch, last: i32) {
        assert_eq!(
            table.admit(batch, 1 << 40, NOW),
            Err(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                sequence: batch.base_sequence,
                last_sequence: last,
            })
        );
    }

    #[test]
    fn in_sequence_batches_append_and_gaps_are_out_of_order() {
        let mut table = ProducerStateTable::new(LIMITS);
        append(&mut table, &batch(7, 0, 0, 3), 0);
        append(&mut table, &batch(7, 0, 3, 2), 3);
        out_of_order(&mut table, &batch(7, 0, 6, 1), 4); // a gap
        out_of_order(&mut table, &batch(7, 0, 4, 1), 4); // overlaps the last batch
        out_of_order(&mut table, &batch(7, 0, 1, 2), 4); // inside an old batch, not its range
        append(&mut table, &batch(7, 0, 5, 1), 5);
        assert_eq!(table.durable_entry(7).unwrap().last_sequence(), Some(5));
        assert_eq!(
            SequenceError::OutOfOrder {
                producer_id: 0,
                epoch: 0,
                sequence: 0,
                last_sequence: 0
            }
            .kafka_error_code(),
            45
        );
    }

    #[test]
    fn duplicates_of_the_last_five_batches_get_their_original_offsets() {
        let mut table = ProducerStateTable::new(LIMITS);
        let mut offset = 100;
        for index in 0..6 {
            append(&mut table, &batch(7, 2, index * 2, 2), offset);
            offset += 2;
        }
        // The newest five (sequences 2..=11) are remembered; the first (0..=1) is forgotten.
        for index in 1..6 {
            let retry = batch(7, 2, index * 2, 2);
            let expected = BatchMetadata {
                first_sequence: index * 2,
                last_sequence: index * 2 + 1,
                base_offset: 100 + i64::from(index) * 2,
                last_offset: 101 + i64::from(index) * 2,
                max_timestamp: NOW,
            };
            assert_eq!(
                table.admit(&retry, 9999, NOW),
                Ok(Admission::Duplicate(expected))
            );
        }
        out_of_order(&mut table, &batch(7, 2, 0, 2), 11);
        // A duplicate is not recorded again: the next sequence still follows 11.
        append(&mut table, &batch(7, 2, 12, 1), offset);
    }

    #[test]
    fn older_epochs_are_fenced_and_new_epochs_start_at_zero() {
        let mut table = ProducerStateTable::new(LIMITS);
        append(&mut table, &batch(7, 3, 0, 5), 0);
        let stale = batch(7, 2, 5, 1);
        let fenced = table.admit(&stale, 5, NOW);
        assert_eq!(
            fenced,
            Err(SequenceError::InvalidEpoch {
                producer_id: 7,
                epoch: 2,
                current_epoch: 3
            })
        );
        assert_eq!(fenced.unwrap_err().kafka_error_code(), 47);
        // Even a retry of an old epoch's batch is fenced, not a duplicate.
        assert!(table.admit(&batch(7, 2, 0, 5), 5, NOW).is_err());
        out_of_order(&mut table, &batch(7, 4, 5, 1), -1);
        append(&mut table, &batch(7, 4, 0, 1), 5);
        // The new epoch forgot the old epoch's batches.
        assert_eq!(table.durable_entry(7).unwrap().batches().len(), 1);
        assert!(table.admit(&batch(7, 3, 0, 5), 6, NOW).is_err());
    }

    #[test]
    fn unknown_producers_are_accepted_at_any_sequence() {
        let mut table = ProducerStateTable::new(LIMITS);
        append(&mut table, &batch(8, 0, 4242, 2), 0);
        append(&mut table, &batch(8, 0, 4244, 1), 2);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut table = ProducerStateTable::new(LIMITS);
        let spanning = batch(9, 0, i32::MAX - 1, 4);
        assert_eq!(spanning.last_sequence(), 1);
        append(&mut table, &spanning, 0);
        append(&mut table, &batch(9, 0, 2, 1), 4);
        let mut table = ProducerStateTable::new(LIMITS);
        append(&mut table, &batch(9, 0, i32::MAX, 1), 0);
        out_of_order(&mut table, &batch(9, 0, 1, 1), i32::MAX);
        append(&mut table, &batch(9, 0, 0, 1), 1);
    }

    #[test]
    fn pending_batches_are_checked_against_but_only_committed_ones_are_durable() {
        let mut table = ProducerStateTable::new(LIMITS);
        let first = batch(7, 0, 0, 2);
        let second = batch(7, 0, 2, 2);
        assert_eq!(table.admit(&first, 0, NOW), Ok(Admission::Append));
        assert_eq!(table.admit(&second, 2, NOW), Ok(Admission::Append));
        out_of_order(&mut table, &batch(7, 0, 5, 1), 3);
        assert!(matches!(
            table.admit(&second, 99, NOW),
            Ok(Admission::Duplicate(BatchMetadata { base_offset: 2, .. }))
        ));
        assert!(table.durable_entry(7).is_none(), "nothing durable yet");
        assert!(table.encode_snapshot(0).len() < 30, "an empty snapshot");
        table.commit(&first, 0, NOW);
        assert_eq!(table.durable_entry(7).unwrap().last_sequence(), Some(1));
        assert_eq!(table.pending_producers(), 1);
        table.commit(&second, 2, NOW);
        assert_eq!(table.durable_entry(7).unwrap().last_sequence(), Some(3));
        assert_eq!(table.pending_producers(), 0);
        // Queued batches that never become durable (a poisoned log) are forgotten.
        assert_eq!(
            table.admit(&batch(7, 0, 4, 1), 4, NOW),
            Ok(Admission::Append)
        );
        table.clear_pending();
        assert_eq!(
            table.admit(&batch(7, 0, 4, 1), 4, NOW),
            Ok(Admission::Append)
        );
    }

    #[test]
    fn producers_expire_after_their_last_append() {
        let limits = ProducerLimits {
            producers_max: 100,
            expiration_ms: 1000,
        };
        let mut table = ProducerStateTable::new(limits);
        let first = batch(7, 0, 0, 1);
        assert_eq!(table.admit(&first, 0, NOW), Ok(Admission::Append));
        table.commit(&first, 0, NOW);
        let gap = batch(7, 0, 50, 1);
        assert!(table.admit(&gap, 1, NOW + 999).is_err());
        assert_eq!(table.admit(&gap, 1, NOW + 1000), Ok(Admission::Append));
        assert!(table.durable_entry(7).is_none(), "expired");
    }

    #[test]
    fn the_least_recently_appending_producer_is_evicted_at_the_bound() {
        let limits = ProducerLimits {
            producers_max: 2,
            expiration_ms: i64::MAX,
        };
        let mut table = ProducerStateTable::new(limits);
        for (producer_id, at) in [(1, NOW), (2, NOW + 1), (1, NOW + 2), (3, NOW + 3)] {
            let sequence = if producer_id == 1 && at > NOW { 1 } else { 0 };
            let next = batch(producer_id, 0, sequence, 1);
            assert_eq!(table.admit(&next, 0, at), Ok(Admission::Append));
            table.commit(&next, 0, at);
        }
        assert_eq!(table.len(), 2);
        assert!(
            table.durable_entry(2).is_none(),
            "2 appended least recently"
        );
        assert!(table.durable_entry(1).is_some() && table.durable_entry(3).is_some());
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let mut table = ProducerStateTable::new(LIMITS);
        for producer_id in 0..20 {
            for index in 0..(producer_id as i32 % 7 + 1) {
                let offset = producer_id * 100 + i64::from(index) * 3;
                append(&mut table, &batch(producer_id, 1, index * 3, 3), offset);
            }
        }
        let bytes = table.encode_snapshot(5000);
        let (offset, decoded) = ProducerStateTable::decode_snapshot(&bytes, LIMITS).unwrap();
        assert_eq!(offset, 5000);
        assert_eq!(decoded.len(), 20);
        for producer_id in 0..20 {
            assert_eq!(
                decoded.durable_entry(producer_id),
                table.durable_entry(producer_id)
            );
        }
        for position in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x10;
            assert_eq!(
                ProducerStateTable::decode_snapshot(&damaged, LIMITS).err(),
                Some(SnapshotError::BadChecksum),
                "flipped byte {position}"
            );
        }
        for length in [0, 3, 17, bytes.len() - 1] {
            assert!(ProducerStateTable::decode_snapshot(&bytes[..length], LIMITS).is_err());
        }
        // A snapshot holding a batch at or past its own offset is inconsistent.
        let bytes = table.encode_snapshot(1000);
        assert!(matches!(
            ProducerStateTable::decode_snapshot(&bytes, LIMITS),
            Err(SnapshotError::BadContents(_))
        ));
        // A lowered bound keeps the most recently appending producers.
        let small = ProducerLimits {
            producers_max: 3,
            ..LIMITS
        };
        let (_, decoded) =
            ProducerStateTable::decode_snapshot(&table.encode_snapshot(5000), small).unwrap();
        assert_eq!(decoded.len(), 3);
    }

    #[test]
    fn a_huge_producer_count_is_rejected_without_allocating() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&0i64.to_be_bytes());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            ProducerStateTable::decode_snapshot(&bytes, LIMITS),
            Err(SnapshotError::BadLength(_))
        ));
    }

    #[test]
    fn replay_reads_producer_batches_from_a_segment_file() {
        use crate::batch::{build_batch, build_batch_with_producer, stamp_base_offset};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut contents = Vec::new();
        let record: &[crate::batch::BuildRecord<'_>] = &[(None, Some(b"v".as_slice()), NOW)];
        for sequence in 0..10 {
            let mut bytes = if sequence == 4 {
                build_batch(record) // a plain batch in between
            } else {
                build_batch_with_producer(record, 7, 0, sequence)
            };
            stamp_base_offset(&mut bytes, i64::from(sequence));
            contents.extend_from_slice(&bytes);
        }
        std::fs::write(&path, &contents).unwrap();
        let file = File::open(&path).unwrap();
        let mut table = ProducerStateTable::new(LIMITS);
        let end = contents.len() as u64;
        assert_eq!(
            replay_segment(&file, 0, end, 6, NOW, &mut table, &mut 0).unwrap(),
            Ok(())
        );
        let entry = table.durable_entry(7).unwrap();
        let offsets: Vec<i64> = entry.batches().iter().map(|b| b.base_offset).collect();
        assert_eq!(offsets, vec![6, 7, 8, 9], "only batches from offset 6");
        // A cut inside the last batch is reported, the batches before it replayed.
        let mut table = ProducerStateTable::new(LIMITS);
        let outcome = replay_segment(&file, 0, end - 5, 0, NOW, &mut table, &mut 0).unwrap();
        assert!(outcome.is_err());
        assert_eq!(table.durable_entry(7).unwrap().last_sequence(), Some(8));
    }
}
