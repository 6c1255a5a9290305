//! Log compaction for `cleanup.policy=compact`: the cleaner keeps the latest record of every key
//! and, after `delete.retention.ms`, drops tombstones, without ever changing an offset.
//!
//! **Shard:** runs on the shard that owns the log, one partition at a time per shard
//! ([`run_cleaner`], spawned next to the retention task). Source segments are read on glommio's
//! blocking pool; filtering yields to the reactor between batches.
//!
//! **One clean** ([`PartitionLog::clean`]):
//! 1. The *dirty section* runs from the checkpointed first dirty offset to the first uncleanable
//!    offset: the active segment's base, or the first segment younger than
//!    `min.compaction.lag.ms`. The active segment is never cleaned.
//! 2. An offset map (key → newest offset) is built over the dirty section within
//!    [`CleanerConfig::dedupe_buffer_bytes`]; if the keys do not all fit, the map covers a prefix
//!    and the clean ends there (the *clean end*; the rest is cleaned next time).
//! 3. Every sealed segment below the clean end is rewritten with [`filter::filter_batch`], in
//!    groups of consecutive segments whose sizes sum to at most `segment.bytes` (small cleaned
//!    segments merge). A group whose batches all stay as they are is not rewritten.
//! 4. The clean end is checkpointed (`cleaner-offset-checkpoint`, offset + CRC-32C).
//!
//! **The swap** of one group (segments `b0..bk`, the next segment starting at `N`):
//! write `b0.log.cleaned` through the [`Storage`] trait and fsync it; under the log's segments
//! lock, check the group is still what was read (retention, DeleteRecords or truncation may have
//! changed it: then the output is discarded); rename it to `b0-N.log.swap` and fsync the
//! directory: **the commit point**. Then the log switches its in-memory segments (the new
//! segment's index stays loaded, so no stale index file is ever read for it), deletes `b1..bk` and
//! `b0`'s old index files, fsyncs the directory, renames the swap file over `b0.log`, fsyncs the
//! directory and writes the new index files. Recovery ([`finish_interrupted_clean`]) deletes
//! `*.cleaned` files (the old segments are intact) and completes any `*.swap` (it names the range
//! it replaces), so a crash at any point leaves the old or the new segment set, never a hole and
//! never two copies of an offset. Readers holding a read plan keep the old file's descriptor:
//! an unlinked or renamed-over inode stays readable.
//!
//! **Failure:** a failed write, sync, rename or unlink poisons the log (never retried); a source
//! segment that cannot be read or parsed stops cleaning that log until it is reopened.

mod filter;

pub use filter::has_keyless_record;

use crate::batch;
use crate::index::SegmentIndex;
use crate::io::Storage;
use crate::log::{self, LogConfig, LogError, PartitionLog};
use crate::segment::{Segment, SegmentPaths, STORED_BATCH_BYTES_MAX};
use crate::writer::SegmentWriter;
use filter::{FilterRules, MapOutcome, OffsetMap, Verdict};
use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const CLEANED_SUFFIX: &str = ".log.cleaned";
const SWAP_SUFFIX: &str = ".log.swap";

/// Per-shard cleaner settings (Kafka's `log.cleaner.*` broker configs).
#[derive(Clone, Debug)]
pub struct CleanerConfig {
    /// `log.cleaner.backoff.ms`: sleep between passes when no log needs cleaning.
    pub backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size` (this shard's share): memory for the key → offset map.
    pub dedupe_buffer_bytes: u64,
    /// Largest records section decompressed for one batch; a larger batch is kept unread.
    pub decompressed_batch_bytes_max: usize,
    /// Bytes read from a source segment at a time.
    pub read_chunk_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            backoff_ms: 15_000,
            dedupe_buffer_bytes: 128 << 20,
            decompressed_batch_bytes_max: 32 << 20,
            read_chunk_bytes: 1 << 20,
        }
    }
}

/// What one clean did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanSummary {
    /// The first dirty offset before the clean.
    pub first_dirty_before: i64,
    /// The clean end: the first dirty offset now (when `completed`).
    pub cleaned_end: i64,
    /// Keys in the offset map.
    pub keys_mapped: usize,
    /// Source segments rewritten, and the segments that replaced them.
    pub segments_replaced: usize,
    /// Segments written.
    pub segments_written: usize,
    /// Bytes of the replaced segments, and of their replacements.
    pub bytes_before: u64,
    /// Bytes written.
    pub bytes_after: u64,
    /// Records removed because a newer record with the same key exists.
    pub records_removed: u64,
    /// Tombstones removed because their delete horizon passed.
    pub tombstones_removed: u64,
    /// Batches kept unread (undecodable or over the decompression bound).
    pub unreadable_batches: u64,
    /// False when a concurrent change (retention, truncation, close) stopped the clean early;
    /// the checkpoint is then not advanced.
    pub completed: bool,
}

impl CleanSummary {
    fn progressed(&self) -> bool {
        self.segments_replaced > 0 || (self.completed && self.cleaned_end > self.first_dirty_before)
    }
}

/// How much of a log is clean, dirty, and cleanable now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cleanability {
    /// Where the uncleaned part starts.
    pub first_dirty: i64,
    /// Where the part the cleaner may touch ends (the active segment or a too-young segment).
    pub first_uncleanable: i64,
    /// Bytes of segments below `first_dirty`.
    pub clean_bytes: u64,
    /// Bytes of segments between the two.
    pub dirty_bytes: u64,
    /// Some tombstone's delete horizon has passed.
    pub tombstones_due: bool,
}

impl Cleanability {
    /// `dirty / (clean + dirty)`, Kafka's cleanable ratio.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            return 0.0;
        }
        self.dirty_bytes as f64 / total as f64
    }
}

/// The cleaner's state of one log (lives in the log, on its shard).
#[derive(Debug)]
pub(crate) struct CompactState {
    /// Offsets below this have been cleaned (checkpointed in `cleaner-offset-checkpoint`).
    first_dirty: i64,
    /// The earliest delete horizon of a tombstone the last clean kept (memory only; Kafka's
    /// `latestDeleteHorizon`): once it passes, the log is cleaned even if it is not dirty.
    next_tombstone_expiry_ms: Option<i64>,
    /// A source segment could not be read: not cleaned again until the log is reopened.
    uncleanable: Option<Arc<str>>,
    /// A clean is running (one at a time: two would write the same `.cleaned` file).
    running: bool,
}

impl CompactState {
    /// The checkpointed state of the log in `dir` (the log start when there is none).
    pub(crate) fn load(dir: &Path, log_start: i64, log_end: i64) -> Self {
        let checkpoint = std::fs::read(dir.join(CHECKPOINT_FILE))
            .ok()
            .and_then(|bytes| log::decode_checkpoint(&bytes));
        Self {
            first_dirty: checkpoint.unwrap_or(log_start).clamp(log_start, log_end),
            next_tombstone_expiry_ms: None,
            uncleanable: None,
            running: false,
        }
    }

    /// The log was truncated to `new_end`: anything appended from there on is dirty.
    pub(crate) fn truncated_to(&mut self, new_end: i64) {
        self.first_dirty = self.first_dirty.min(new_end);
    }
}

/// One sealed segment as the cleaner read it.
#[derive(Clone, Debug)]
struct SourceSegment {
    base_offset: i64,
    next_offset: i64,
    size_bytes: u64,
    file: Arc<File>,
}

/// Consecutive sealed segments rewritten into one.
#[derive(Debug)]
struct Group {
    segments: Vec<SourceSegment>,
}

impl Group {
    fn base_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    fn next_offset(&self) -> i64 {
        self.segments
            .last()
            .expect("a group is never empty")
            .next_offset
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }
}

/// How a failure in a clean is handled.
enum Failure {
    /// Reading or parsing a source segment: stop cleaning this log until it is reopened.
    Source(String),
    /// Writing, syncing, renaming or unlinking: poison the log (never retried).
    Write(String),
    /// The log closed or was poisoned meanwhile.
    Log(LogError),
}

/// What happened to one group.
enum GroupOutcome {
    /// Rewritten and swapped in.
    Swapped,
    /// Every batch stays as it is: nothing written.
    Unchanged,
    /// The segments changed under the clean (retention, truncation): output discarded.
    Conflict,
}

fn write_failure(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |error| Failure::Write(format!("{what}: {error}"))
}

fn cleaned_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}{CLEANED_SUFFIX}"))
}

fn swap_path(dir: &Path, base_offset: i64, next_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}-{next_offset:020}{SWAP_SUFFIX}"))
}

/// `(base, next)` from a swap file name.
fn parse_swap_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(SWAP_SUFFIX)?;
    let (base, next) = stem.split_once('-')?;
    let digits = |part: &str| part.len() == 20 && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(base) || !digits(next) {
        return None;
    }
    Some((base.parse().ok()?, next.parse().ok()?))
}

/// At open, before segments are listed: removes the output of a clean that never reached its
/// commit point, and finishes the swap of one that did (see the module doc).
pub(crate) async fn finish_interrupted_clean(
    dir: &Path,
    storage: &dyn Storage,
) -> Result<(), LogError> {
    let fail = |what: &str| {
        let what = format!("{}: {what}", dir.display());
        move |error: std::io::Error| LogError::Io(format!("{what}: {error}").into())
    };
    let mut swaps = Vec::new();
    let mut segment_bases = Vec::new();
    let mut removed_cleaned = false;
    for entry in std::fs::read_dir(dir).map_err(fail("listing the log directory"))? {
        let entry = entry.map_err(fail("listing the log directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(CLEANED_SUFFIX) {
            tracing::info!(file = %entry.path().display(), "removing an unfinished cleaned segment");
            storage
                .remove_file(&entry.path())
                .await
                .map_err(fail("removing an unfinished cleaned segment"))?;
            removed_cleaned = true;
        } else if let Some((base, next)) = parse_swap_name(name) {
            swaps.push((base, next, entry.path()));
        } else if let Some(base) = SegmentPaths::parse_log_name(name) {
            segment_bases.push(base);
        }
    }
    if removed_cleaned {
        storage
            .sync_dir(dir)
            .await
            .map_err(fail("syncing the directory"))?;
    }
    swaps.sort();
    for (base, next, swap) in swaps {
        tracing::warn!(dir = %dir.display(), base, next, "finishing an interrupted segment swap");
        for replaced in segment_bases.iter().filter(|b| **b > base && **b < next) {
            SegmentPaths::new(dir, *replaced)
                .remove_all(storage)
                .await
                .map_err(fail("removing a replaced segment"))?;
        }
        let paths = SegmentPaths::new(dir, base);
        for path in [&paths.index, &paths.time_index] {
            storage
                .remove_file(path)
                .await
                .map_err(fail("removing a stale index"))?;
        }
        storage
            .sync_dir(dir)
            .await
            .map_err(fail("syncing the directory"))?;
        storage
            .rename(&swap, &paths.log)
            .await
            .map_err(fail("renaming a swap file"))?;
        storage
            .sync_dir(dir)
            .await
            .map_err(fail("syncing the directory"))?;
    }
    Ok(())
}

/// The cleaner task of one shard: cleans the filthiest compacted log that needs it, one at a
/// time, and sleeps `backoff_ms` when none does. Ends when the set of logs is dropped.
pub(crate) async fn run_cleaner(logs: Weak<RefCell<Vec<PartitionLog>>>, config: CleanerConfig) {
    let backoff = Duration::from_millis(config.backoff_ms.max(1));
    loop {
        let snapshot = match logs.upgrade() {
            Some(logs) => logs.borrow().clone(),
            None => return,
        };
        let progressed = clean_filthiest(&snapshot, &config).await;
        drop(snapshot);
        if progressed {
            glommio::yield_if_needed().await;
        } else {
            glommio::timer::sleep(backoff).await;
        }
    }
}

/// One round: picks the log most in need and cleans it. Returns whether it made progress.
async fn clean_filthiest(logs: &[PartitionLog], config: &CleanerConfig) -> bool {
    let now = now_ms();
    let mut best: Option<(f64, &PartitionLog)> = None;
    for log in logs {
        let Some(priority) = log.cleaning_priority(now) else {
            continue;
        };
        if best.is_none_or(|(highest, _)| priority > highest) {
            best = Some((priority, log));
        }
    }
    let Some((_, log)) = best else { return false };
    match log.clean(now, config).await {
        Ok(summary) if summary.segments_replaced == 0 => {
            tracing::debug!(dir = %log.dir().display(), cleaned_end = summary.cleaned_end, "nothing to rewrite in a compacted log");
            summary.progressed()
        }
        Ok(summary) => {
            tracing::info!(
                dir = %log.dir().display(),
                cleaned_end = summary.cleaned_end,
                segments_replaced = summary.segments_replaced,
                segments_written = summary.segments_written,
                bytes_before = summary.bytes_before,
                bytes_after = summary.bytes_after,
                records_removed = summary.records_removed,
                tombstones_removed = summary.tombstones_removed,
                "cleaned a compacted log"
            );
            summary.progressed()
        }
        Err(error) => {
            tracing::warn!(dir = %log.dir().display(), %error, "cleaning a compacted log failed");
            false
        }
    }
}

impl PartitionLog {
    /// Offsets below this have been cleaned.
    pub fn first_dirty_offset(&self) -> i64 {
        self.compact_state().borrow().first_dirty
    }

    /// The clean and dirty parts of the log now (see [`Cleanability`]).
    pub fn cleanability(&self, now_ms: i64) -> Result<Cleanability, LogError> {
        let config = self.config();
        // (base, next offset, size, max timestamp) of every sealed segment.
        type Sealed = Vec<(i64, i64, u64, Option<i64>)>;
        let (log_start, active_base, sealed) = self.with_state(|state| {
            let active_base = *state.segments.keys().next_back().expect("active segment");
            let sealed: Sealed = state
                .segments
                .range(..active_base)
                .map(|(base, segment)| {
                    let Segment {
                        next_offset,
                        size_bytes,
                        max_timestamp,
                        ..
                    } = segment;
                    (*base, *next_offset, *size_bytes, *max_timestamp)
                })
                .collect();
            (*state.log_start, active_base, sealed)
        });
        let first_dirty = self
            .first_dirty_offset()
            .clamp(log_start, active_base.max(log_start));
        let mut first_uncleanable = active_base;
        if config.min_compaction_lag_ms > 0 {
            let newest_allowed = now_ms.saturating_sub(config.min_compaction_lag_ms);
            for (base, next_offset, _, max_timestamp) in &sealed {
                if *next_offset <= first_dirty {
                    continue;
                }
                let max_timestamp = match max_timestamp {
                    Some(known) => *known,
                    None => self.sealed_max_timestamp(*base)?,
                };
                if max_timestamp > newest_allowed {
                    first_uncleanable = (*base).max(first_dirty);
                    break;
                }
            }
        }
        let (mut clean_bytes, mut dirty_bytes) = (0, 0);
        for (base, next_offset, size_bytes, _) in &sealed {
            if *next_offset <= log_start {
                continue;
            }
            if *next_offset <= first_dirty {
                clean_bytes += size_bytes;
            } else if *base < first_uncleanable {
                dirty_bytes += size_bytes;
            }
        }
        let tombstones_due = self
            .compact_state()
            .borrow()
            .next_tombstone_expiry_ms
            .is_some_and(|horizon| horizon <= now_ms);
        Ok(Cleanability {
            first_dirty,
            first_uncleanable,
            clean_bytes,
            dirty_bytes,
            tombstones_due,
        })
    }

    /// How urgently this log needs cleaning (its dirty ratio, above 1 when tombstones are due),
    /// or `None` when it does not: not compacted, not writable, marked uncleanable, or below
    /// `min.cleanable.dirty.ratio`.
    pub fn cleaning_priority(&self, now_ms: i64) -> Option<f64> {
        let config = self.config();
        if !config.cleanup_policy.compact
            || self.check_maintainable().is_err()
            || self.compact_state().borrow().uncleanable.is_some()
        {
            return None;
        }
        let cleanability = match self.cleanability(now_ms) {
            Ok(cleanability) => cleanability,
            Err(error) => {
                tracing::warn!(dir = %self.dir().display(), %error, "cannot tell how dirty a log is");
                return None;
            }
        };
        let ratio = cleanability.dirty_ratio();
        if cleanability.dirty_bytes > 0 && ratio >= config.min_cleanable_dirty_ratio {
            return Some(ratio);
        }
        cleanability.tombstones_due.then_some(1.5)
    }

    /// Cleans the log now, whatever its dirty ratio (see the module doc). `now_ms` is the wall
    /// clock for `min.compaction.lag.ms` and tombstone horizons. Fails with
    /// [`LogError::InvalidConfig`] on a log whose policy is not `compact`.
    pub async fn clean(
        &self,
        now_ms: i64,
        config: &CleanerConfig,
    ) -> Result<CleanSummary, LogError> {
        let log_config = self.config();
        if !log_config.cleanup_policy.compact {
            return Err(LogError::InvalidConfig(
                "cleanup.policy does not include compact".into(),
            ));
        }
        self.check_maintainable()?;
        if let Some(reason) = self.compact_state().borrow().uncleanable.clone() {
            return Err(LogError::Io(reason));
        }
        let _running = RunningClean::start(self.compact_state())?;
        match self.clean_inner(now_ms, config, &log_config).await {
            Ok(summary) => Ok(summary),
            Err(Failure::Log(error)) => Err(error),
            Err(Failure::Source(reason)) => {
                let reason: Arc<str> = format!("cleaning stopped: {reason}").into();
                tracing::error!(dir = %self.dir().display(), %reason, "log cleaner gives up on this log until it is reopened");
                self.compact_state().borrow_mut().uncleanable = Some(reason.clone());
                Err(LogError::Io(reason))
            }
            Err(Failure::Write(reason)) => {
                let reason: Arc<str> = format!("log cleaner: {reason}").into();
                self.poison(reason.clone());
                Err(LogError::Poisoned(reason))
            }
        }
    }

    async fn clean_inner(
        &self,
        now_ms: i64,
        config: &CleanerConfig,
        log_config: &LogConfig,
    ) -> Result<CleanSummary, Failure> {
        let cleanability = self.cleanability(now_ms).map_err(Failure::Log)?;
        let mut map = OffsetMap::new(config.dedupe_buffer_bytes);
        let clean_end = self
            .build_offset_map(&mut map, &cleanability, config)
            .await?;
        let mut summary = CleanSummary {
            first_dirty_before: cleanability.first_dirty,
            cleaned_end: clean_end,
            keys_mapped: map.len(),
            completed: true,
            ..CleanSummary::default()
        };
        let rules = FilterRules {
            map: &map,
            clean_end,
            now_ms,
            delete_retention_ms: log_config.delete_retention_ms,
            decompressed_max: config.decompressed_batch_bytes_max,
        };
        let mut pending_horizon: Option<i64> = None;
        for group in self.plan_groups(clean_end, log_config) {
            let outcome = self
                .clean_group(
                    &group,
                    &rules,
                    config,
                    log_config,
                    &mut summary,
                    &mut pending_horizon,
                )
                .await?;
            if let GroupOutcome::Conflict = outcome {
                summary.completed = false;
                return Ok(summary);
            }
        }
        // Under the segments lock: once the log is closed its directory may be another log's.
        let _permit = self.segments_permit().await.map_err(Failure::Log)?;
        self.check_maintainable().map_err(Failure::Log)?;
        let checkpoint = log::encode_checkpoint(clean_end);
        self.context()
            .storage
            .write_file_atomic(&self.dir().join(CHECKPOINT_FILE), &checkpoint)
            .await
            .map_err(write_failure("writing the cleaner checkpoint"))?;
        let mut state = self.compact_state().borrow_mut();
        state.first_dirty = clean_end;
        state.next_tombstone_expiry_ms = pending_horizon;
        Ok(summary)
    }

    /// Maps the keys of the dirty section; returns the clean end (where the map stops).
    async fn build_offset_map(
        &self,
        map: &mut OffsetMap,
        cleanability: &Cleanability,
        config: &CleanerConfig,
    ) -> Result<i64, Failure> {
        let Cleanability {
            first_dirty,
            first_uncleanable,
            ..
        } = *cleanability;
        let mut end = first_dirty;
        for source in self.sealed_sources(first_dirty, first_uncleanable) {
            let start_position = if first_dirty > source.base_offset {
                let index = self
                    .segment_index(source.base_offset)
                    .map_err(Failure::Log)?;
                let relative = u32::try_from(first_dirty - source.base_offset).unwrap_or(u32::MAX);
                u64::from(index.lookup_offset(relative).position)
            } else {
                0
            };
            let mut reader = BatchReader::new(&source, start_position, config.read_chunk_bytes);
            while let Some(stored) = reader.next().await? {
                self.check_maintainable().map_err(Failure::Log)?;
                if stored.last_offset < first_dirty {
                    continue;
                }
                match filter::map_batch(map, &stored.bytes, config.decompressed_batch_bytes_max) {
                    MapOutcome::Full => return Ok(end),
                    MapOutcome::Mapped | MapOutcome::Skipped(_) => end = stored.last_offset + 1,
                }
                glommio::yield_if_needed().await;
            }
            // The segment's last records may have been cleaned away: it ends at the next base.
            end = end.max(source.next_offset.min(first_uncleanable));
        }
        Ok(end)
    }

    /// Sealed segments overlapping `[from, to)`, oldest first, skipping any wholly below the log
    /// start (retention deletes those).
    fn sealed_sources(&self, from: i64, to: i64) -> Vec<SourceSegment> {
        self.with_state(|state| {
            let active_base = *state.segments.keys().next_back().expect("active segment");
            let log_start = *state.log_start;
            state
                .segments
                .range(..active_base.min(to))
                .map(|(_, segment)| source_of(segment))
                .filter(|source| source.next_offset > from.max(log_start))
                .collect()
        })
    }

    /// The segments below `clean_end`, grouped so each group's sizes sum to at most
    /// `segment.bytes` and its offsets stay within an index's 32-bit relative range.
    fn plan_groups(&self, clean_end: i64, log_config: &LogConfig) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for source in self.sealed_sources(i64::MIN, clean_end) {
            if let Some(group) = groups.last_mut() {
                let fits_bytes = group.size_bytes() + source.size_bytes <= log_config.segment_bytes;
                let fits_offsets = u32::try_from(source.next_offset - group.base_offset()).is_ok();
                let adjacent = group.next_offset() == source.base_offset;
                if fits_bytes && fits_offsets && adjacent {
                    group.segments.push(source);
                    continue;
                }
            }
            groups.push(Group {
                segments: vec![source],
            });
        }
        groups
    }

    /// Whether the batch ending at `last_offset` is the last one `producer_id` appended.
    fn is_producers_last_batch(&self, producer_id: i64, last_offset: i64) -> bool {
        producer_id >= 0
            && self.with_state(|state| {
                state
                    .producers
                    .durable_entry(producer_id)
                    .and_then(|entry| entry.batches().last().copied())
                    .is_some_and(|batch| batch.last_offset == last_offset)
            })
    }

    /// Rewrites one group into a cleaned segment and swaps it in, unless nothing in it changes.
    async fn clean_group(
        &self,
        group: &Group,
        rules: &FilterRules<'_>,
        config: &CleanerConfig,
        log_config: &LogConfig,
        summary: &mut CleanSummary,
        pending_horizon: &mut Option<i64>,
    ) -> Result<GroupOutcome, Failure> {
        let storage = self.context().storage.clone();
        let cleaned = cleaned_path(self.dir(), group.base_offset());
        storage
            .remove_file(&cleaned)
            .await
            .map_err(write_failure("removing an old cleaned segment"))?;
        let file = storage
            .open_write(&cleaned)
            .await
            .map_err(write_failure("creating a cleaned segment"))?;
        let mut output = CleanedOutput::new(file, group);
        let mut stats = GroupStats::default();
        let filtered = self
            .filter_group(group, rules, config, log_config, &mut output, &mut stats)
            .await;
        if let Err(failure) = filtered {
            // Best effort: the next open removes a leftover `.cleaned` file anyway.
            let _ = output.writer.close().await;
            let _ = storage.remove_file(&cleaned).await;
            return Err(failure);
        }
        summary.unreadable_batches += stats.unreadable_batches;
        if let Some(horizon) = stats.pending_horizon {
            *pending_horizon = Some(pending_horizon.map_or(horizon, |h| h.min(horizon)));
        }
        if !stats.changed {
            let _ = output.writer.close().await;
            storage
                .remove_file(&cleaned)
                .await
                .map_err(write_failure("removing an unneeded cleaned segment"))?;
            return Ok(GroupOutcome::Unchanged);
        }
        let (size_bytes, index) = output.finish(log_config).await?;
        let outcome = self.swap_in(group, &cleaned, size_bytes, index).await?;
        if let GroupOutcome::Swapped = outcome {
            summary.segments_replaced += group.segments.len();
            summary.segments_written += 1;
            summary.bytes_before += group.size_bytes();
            summary.bytes_after += size_bytes;
            summary.records_removed += stats.superseded;
            summary.tombstones_removed += stats.expired_tombstones;
        }
        Ok(outcome)
    }

    /// Filters every batch of the group's segments into `output`.
    async fn filter_group(
        &self,
        group: &Group,
        rules: &FilterRules<'_>,
        config: &CleanerConfig,
        log_config: &LogConfig,
        output: &mut CleanedOutput,
        stats: &mut GroupStats,
    ) -> Result<(), Failure> {
        for source in &group.segments {
            let mut reader = BatchReader::new(source, 0, config.read_chunk_bytes);
            while let Some(stored) = reader.next().await? {
                self.check_maintainable().map_err(Failure::Log)?;
                let producer_last =
                    self.is_producers_last_batch(stored.producer_id, stored.last_offset);
                let filtered = filter::filter_batch(&stored.bytes, rules, producer_last);
                stats.superseded += filtered.superseded;
                stats.expired_tombstones += filtered.expired_tombstones;
                stats.unreadable_batches += u64::from(filtered.unreadable.is_some());
                if let Some(horizon) = filtered.pending_horizon {
                    stats.pending_horizon =
                        Some(stats.pending_horizon.map_or(horizon, |h| h.min(horizon)));
                }
                let bytes = match filtered.verdict {
                    Verdict::Keep => stored.bytes,
                    Verdict::Drop => {
                        stats.changed = true;
                        continue;
                    }
                    Verdict::Replace(bytes) => {
                        stats.changed = true;
                        bytes
                    }
                };
                output.push(bytes, log_config).await?;
                glommio::yield_if_needed().await;
            }
        }
        Ok(())
    }

    /// Replaces `group` by the durable cleaned file (see the module doc for the order).
    async fn swap_in(
        &self,
        group: &Group,
        cleaned: &Path,
        size_bytes: u64,
        index: SegmentIndex,
    ) -> Result<GroupOutcome, Failure> {
        let dir = self.dir().to_path_buf();
        let storage = self.context().storage.clone();
        let _permit = self.segments_permit().await.map_err(Failure::Log)?;
        let unchanged = self.check_maintainable().is_ok() && self.group_unchanged(group);
        if !unchanged {
            storage
                .remove_file(cleaned)
                .await
                .map_err(write_failure("removing a discarded cleaned segment"))?;
            return Ok(GroupOutcome::Conflict);
        }
        let (base_offset, next_offset) = (group.base_offset(), group.next_offset());
        let swap = swap_path(&dir, base_offset, next_offset);
        storage
            .rename(cleaned, &swap)
            .await
            .map_err(write_failure("renaming the cleaned segment"))?;
        storage
            .sync_dir(&dir)
            .await
            .map_err(write_failure("syncing the log directory"))?;
        // Committed: from here a crash is finished by recovery, and a failure poisons the log.
        let read_file = storage
            .open_read(&swap)
            .map_err(write_failure("opening the swapped-in segment"))?;
        let paths = SegmentPaths::new(&dir, base_offset);
        let segment = Segment {
            base_offset,
            paths: paths.clone(),
            read_file: Arc::new(read_file),
            size_bytes,
            next_offset,
            max_timestamp: Some(index.max_timestamp()),
            index: Some(Rc::new(index)),
            first_append_ms: None,
        };
        let footer = segment.footer();
        let (offsets_file, times_file) = {
            let index = segment.index.as_ref().expect("set above");
            (index.encode_offsets(&footer), index.encode_times())
        };
        self.with_state(|state| {
            for source in &group.segments {
                state.segments.remove(&source.base_offset);
            }
            state.loaded_indexes.retain(|loaded| {
                group
                    .segments
                    .iter()
                    .all(|source| source.base_offset != *loaded)
            });
            // Not in `loaded_indexes` until its index files exist: it cannot be evicted and then
            // reloaded from the old segment's index file.
            state.segments.insert(base_offset, segment);
            state.cache.discard_below(next_offset);
        });
        for source in &group.segments[1..] {
            SegmentPaths::new(&dir, source.base_offset)
                .remove_all(storage.as_ref())
                .await
                .map_err(write_failure("deleting a replaced segment"))?;
        }
        for path in [&paths.index, &paths.time_index] {
            storage
                .remove_file(path)
                .await
                .map_err(write_failure("deleting a replaced index"))?;
        }
        storage
            .sync_dir(&dir)
            .await
            .map_err(write_failure("syncing the log directory"))?;
        storage
            .rename(&swap, &paths.log)
            .await
            .map_err(write_failure("renaming the swapped-in segment"))?;
        storage
            .sync_dir(&dir)
            .await
            .map_err(write_failure("syncing the log directory"))?;
        storage
            .write_file_atomic(&paths.index, &offsets_file)
            .await
            .map_err(write_failure("writing the cleaned segment's index"))?;
        storage
            .write_file_atomic(&paths.time_index, &times_file)
            .await
            .map_err(write_failure("writing the cleaned segment's time index"))?;
        self.with_state(|state| {
            log::remember_loaded_index(state.segments, state.loaded_indexes, base_offset)
        });
        Ok(GroupOutcome::Swapped)
    }

    /// The group's segments are still the log's, unchanged, with none added between them.
    fn group_unchanged(&self, group: &Group) -> bool {
        self.with_state(|state| {
            let active_base = *state.segments.keys().next_back().expect("active segment");
            let current: Vec<&Segment> = state
                .segments
                .range(group.base_offset()..group.next_offset())
                .map(|(_, segment)| segment)
                .collect();
            group.next_offset() <= active_base
                && current.len() == group.segments.len()
                && current
                    .iter()
                    .zip(&group.segments)
                    .all(|(segment, source)| {
                        segment.base_offset == source.base_offset
                            && segment.next_offset == source.next_offset
                            && segment.size_bytes == source.size_bytes
                            && Arc::ptr_eq(&segment.read_file, &source.file)
                    })
        })
    }
}

/// Marks a clean as running until dropped (also when the clean's future is dropped midway).
struct RunningClean<'a> {
    state: &'a RefCell<CompactState>,
}

impl<'a> RunningClean<'a> {
    fn start(state: &'a RefCell<CompactState>) -> Result<Self, LogError> {
        let mut current = state.borrow_mut();
        if current.running {
            return Err(LogError::Io(
                "a clean of this log is already running".into(),
            ));
        }
        current.running = true;
        Ok(Self { state })
    }
}

impl Drop for RunningClean<'_> {
    fn drop(&mut self) {
        self.state.borrow_mut().running = false;
    }
}

fn source_of(segment: &Segment) -> SourceSegment {
    SourceSegment {
        base_offset: segment.base_offset,
        next_offset: segment.next_offset,
        size_bytes: segment.size_bytes,
        file: segment.read_file.clone(),
    }
}

/// What filtering one group found.
#[derive(Default)]
struct GroupStats {
    /// Some batch is dropped or rewritten: the group needs a new segment.
    changed: bool,
    superseded: u64,
    expired_tombstones: u64,
    unreadable_batches: u64,
    /// The earliest delete horizon of a tombstone the group keeps.
    pending_horizon: Option<i64>,
}

/// The cleaned segment being written: batches buffered up to one write, and its index.
struct CleanedOutput {
    writer: SegmentWriter,
    index: SegmentIndex,
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    written_bytes: u64,
    base_offset: i64,
    allocation_bytes: u64,
}

impl CleanedOutput {
    fn new(file: Box<dyn crate::io::WriteFile>, group: &Group) -> Self {
        Self {
            writer: SegmentWriter::new(file, 0, Vec::new(), 0),
            index: SegmentIndex::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            written_bytes: 0,
            base_offset: group.base_offset(),
            allocation_bytes: group.size_bytes(),
        }
    }

    async fn push(&mut self, bytes: Vec<u8>, log_config: &LogConfig) -> Result<(), Failure> {
        let header = batch::BatchHeader::parse(&bytes).expect("a whole batch");
        let relative_offset = u32::try_from(header.base_offset.get() - self.base_offset)
            .map_err(|_| Failure::Source("a batch outside its segment's offset range".into()))?;
        let position = u32::try_from(self.written_bytes)
            .map_err(|_| Failure::Source("a cleaned segment over 4 GiB".into()))?;
        self.index.record_batch(
            relative_offset,
            position,
            bytes.len() as u32,
            header.max_timestamp.get(),
            log_config.index_interval_bytes,
        );
        self.written_bytes += bytes.len() as u64;
        self.pending_bytes += bytes.len();
        self.pending.push(bytes);
        if self.pending_bytes >= log_config.write_bytes_max {
            self.flush(log_config).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, log_config: &LogConfig) -> Result<(), Failure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.writer
            .append(
                &self.pending,
                log_config.write_bytes_max,
                log_config.preallocate_bytes,
                self.allocation_bytes,
            )
            .await
            .map_err(write_failure("writing a cleaned segment"))?;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes what is buffered, cuts the file to its data, fsyncs and closes it.
    async fn finish(mut self, log_config: &LogConfig) -> Result<(u64, SegmentIndex), Failure> {
        self.flush(log_config).await?;
        debug_assert_eq!(self.writer.written_bytes(), self.written_bytes);
        self.writer
            .trim_and_sync()
            .await
            .map_err(write_failure("syncing a cleaned segment"))?;
        self.writer
            .close()
            .await
            .map_err(write_failure("closing a cleaned segment"))?;
        Ok((self.written_bytes, self.index))
    }
}

/// One batch read from a source segment.
struct StoredBatch {
    bytes: Vec<u8>,
    last_offset: i64,
    producer_id: i64,
}

/// Reads a sealed segment's batches in order, a chunk at a time on glommio's blocking pool, and
/// checks each one (length, CRC, offsets increasing within the segment).
struct BatchReader {
    file: Arc<File>,
    /// File position of `buffer[0]`.
    buffer_position: u64,
    buffer: Vec<u8>,
    cursor: usize,
    end: u64,
    next_offset_min: i64,
    segment_next_offset: i64,
    chunk_bytes: usize,
}

impl BatchReader {
    fn new(source: &SourceSegment, position: u64, chunk_bytes: usize) -> Self {
        Self {
            file: source.file.clone(),
            buffer_position: position,
            buffer: Vec::new(),
            cursor: 0,
            end: source.size_bytes,
            next_offset_min: source.base_offset,
            segment_next_offset: source.next_offset,
            chunk_bytes: chunk_bytes.max(batch::BATCH_HEADER_LEN),
        }
    }

    async fn next(&mut self) -> Result<Option<StoredBatch>, Failure> {
        let position = self.buffer_position + self.cursor as u64;
        if position >= self.end {
            return Ok(None);
        }
        loop {
            let available = &self.buffer[self.cursor..];
            match batch::scan_batch(available, STORED_BATCH_BYTES_MAX) {
                Ok(Some(info)) => {
                    let bytes = available[..info.total_len].to_vec();
                    self.cursor += info.total_len;
                    return self.checked(bytes, &info, position).map(Some);
                }
                Ok(None) => self.refill(position).await?,
                Err(error) => {
                    return Err(Failure::Source(format!(
                        "invalid batch at position {position}: {error}"
                    )))
                }
            }
        }
    }

    fn checked(
        &mut self,
        bytes: Vec<u8>,
        info: &batch::BatchInfo,
        position: u64,
    ) -> Result<StoredBatch, Failure> {
        let base_offset = batch::read_base_offset(&bytes);
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        if base_offset < self.next_offset_min || last_offset >= self.segment_next_offset {
            return Err(Failure::Source(format!(
                "batch at position {position} has offsets {base_offset}..={last_offset} out of order"
            )));
        }
        self.next_offset_min = last_offset + 1;
        Ok(StoredBatch {
            bytes,
            last_offset,
            producer_id: info.producer_id,
        })
    }

    /// Reads the next chunk (at least the whole batch at `position`, as its length says).
    async fn refill(&mut self, position: u64) -> Result<(), Failure> {
        let left = self.end - position;
        let held = (self.buffer.len() - self.cursor) as u64;
        if held >= left {
            return Err(Failure::Source(format!(
                "torn batch at position {position} of a sealed segment"
            )));
        }
        let wanted = batch_length_hint(&self.buffer[self.cursor..]).max(self.chunk_bytes);
        let length = (wanted as u64).min(left) as usize;
        let file = self.file.clone();
        let read = glommio::executor()
            .spawn_blocking(move || {
                let mut chunk = vec![0u8; length];
                file.read_exact_at(&mut chunk, position).map(|()| chunk)
            })
            .await
            .map_err(|error| Failure::Source(format!("reading at {position}: {error}")))?;
        self.buffer = read;
        self.buffer_position = position;
        self.cursor = 0;
        Ok(())
    }
}

/// The whole length of the batch starting at `available[0]`, when its prefix is there.
fn batch_length_hint(available: &[u8]) -> usize {
    let Some(prefix) = available.get(..batch::BATCH_OVERHEAD) else {
        return 0;
    };
    let length = i32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes"));
    usize::try_from(length)
        .unwrap_or(0)
        .min(STORED_BATCH_BYTES_MAX)
        + batch::BATCH_OVERHEAD
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_round_trip_and_reject_other_files() {
        let dir = Path::new("/d");
        let swap = swap_path(dir, 42, 1_000);
        let name = swap.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042-00000000000000001000.log.swap");
        assert_eq!(parse_swap_name(name), Some((42, 1_000)));
        assert_eq!(parse_swap_name("00000000000000000042.log"), None);
        assert_eq!(parse_swap_name("42-1000.log.swap"), None);
        let cleaned = cleaned_path(dir, 42);
        let name = cleaned.file_name().unwrap().to_str().unwrap();
        assert_eq!(SegmentPaths::parse_log_name(name), None);
        assert!(name.ends_with(CLEANED_SUFFIX));
    }
}
