//! Recovery checkpoints (Kafka's recovery point, `log.flush.offset.checkpoint.interval.ms`): a
//! durable record of how much of the active segment is known fsynced, with that prefix's indexes
//! and the producer state at its end, so an unclean open trusts the prefix and scans only the
//! bytes after it. Without one, recovery reads and checks the whole active segment (up to
//! `segment.bytes`, 1 GiB by default) and replays its batch headers again for the producer state.
//!
//! **Shard:** the log's shard. [`write_checkpoint`] runs from the shard's periodic task (or a
//! test) under the log's segments lock, so it never overlaps truncation, a compaction swap or
//! close; appends and rolls go on meanwhile.
//!
//! **What is trusted.** The log keeps a [`DurablePoint`]: the active segment's size, end offset,
//! newest timestamp and index entry counts as of its last `fdatasync` (every commit under
//! `EveryCommit`; the interval syncs under `IntervalMs`; only rolls, truncation and close under
//! `Never`, so the point never covers a byte that was not synced). A checkpoint records that
//! point, never anything newer. Open checks a checkpoint before trusting
//! it: it must name the newest segment, end within the file, its records must chain (CRC), its
//! indexes must be well formed, and the batches from its last index entry to its end (at most
//! about one `index.interval.bytes` plus a batch) must scan clean and end exactly at its size
//! and offset. Anything else (missing, corrupt, stale after a roll, pointing past a cut) falls
//! back to the full scan from byte 0.
//!
//! **File** `recovery-checkpoint` in the log directory: a journal of records, the first one
//! describing the prefix from byte 0, each later one adding the index entries since the record
//! before it. A fresh journal (the first checkpoint after open, a roll, a truncation, or once the
//! journal reaches about twice the size of a fresh record) overwrites the file in place and is
//! synced; later records are appended (aligned direct writes, like segments) and not synced: a
//! record is only ever written after the data it describes was synced, so one that survives a
//! power loss is true either way, and one that is lost only makes the next open scan more. Each
//! checkpoint of a busy log thus costs one small write. Truncation deletes the file before
//! cutting anything. Record layout, big-endian:
//! `{magic u32, record_bytes u32, segment_base i64, size_bytes u64, next_offset i64,
//! max_timestamp i64, offset_entry_count u32, time_entry_count u32, snapshot_bytes u32}`, then the
//! offset entries `{relative_offset u32, position u32}`, the time entries `{timestamp i64,
//! relative_offset u32}`, a producer snapshot in the `.snapshot` file format (or nothing), and
//! `crc32c u32` over the record so far, seeded with the previous record's CRC (0 for the first):
//! a record only counts after the exact records it was written after. Reading stops at the first
//! record that does not check (a torn append, preallocated zeros).

use crate::index::{OffsetEntry, SegmentFooter, SegmentIndex, TimeEntry};
use crate::log::{LogError, PartitionLog};
use crate::segment::Segment;
use crate::writer::SegmentWriter;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The checkpoint file's name in a log directory.
pub(crate) const CHECKPOINT_FILE: &str = "recovery-checkpoint";
const RECORD_MAGIC: u32 = 0x5243_4B31; // "RCK1"
const RECORD_HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 4;
const _: () = assert!(RECORD_HEADER_BYTES == 52);
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;
const RECORD_CRC_BYTES: usize = 4;
/// A journal longer than this is not read (recovery scans instead); a fresh record for the
/// largest segment (2 GiB at a 4 KiB index interval) with 10,000 producers is about 13 MiB.
const JOURNAL_BYTES_MAX: u64 = 64 << 20;
/// A log whose fresh record would be larger (a tiny `index.interval.bytes` on a big segment) is
/// not checkpointed: its journal could outgrow what open reads.
const FRESH_RECORD_BYTES_MAX: u64 = JOURNAL_BYTES_MAX / 4;
/// A journal is rewritten once it would pass twice its fresh record plus this.
const REWRITE_SLACK_BYTES: u64 = 64 << 10;
/// The journal file grows in chunks of this (fewer file size changes).
const JOURNAL_PREALLOCATE_BYTES: u64 = 16 << 10;
const JOURNAL_WRITE_BYTES_MAX: usize = 1 << 20;
/// A producer snapshot up to this size goes into every record; a larger one only once the
/// bytes since the last record with a snapshot are [`SNAPSHOT_REPLAY_RATIO`] times its size
/// (replaying them is what the snapshot saves).
const SNAPSHOT_ALWAYS_BYTES: usize = 64 << 10;
const SNAPSHOT_REPLAY_RATIO: u64 = 16;
/// The most snapshot bytes one producer takes (its fields and five batches), and the snapshot's
/// fixed bytes: enough to decide before encoding.
const SNAPSHOT_PRODUCER_BYTES_MAX: usize = 19 + 5 * 28;
const SNAPSHOT_FIXED_BYTES: usize = 18;

/// How much of the active segment is known durable (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DurablePoint {
    pub segment_base: i64,
    pub size_bytes: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// Index entries describing the prefix: the first this many of the segment's index.
    pub offset_entries: usize,
    pub time_entries: usize,
}

impl DurablePoint {
    /// The whole of `segment` as it stands (its index must be loaded: the active segment's is).
    pub fn of_segment(segment: &Segment) -> Self {
        let index = segment.index.as_deref();
        Self {
            segment_base: segment.base_offset,
            size_bytes: segment.size_bytes,
            next_offset: segment.next_offset,
            max_timestamp: segment.max_timestamp.unwrap_or(-1),
            offset_entries: index.map_or(0, |index| index.offsets.len()),
            time_entries: index.map_or(0, |index| index.times.len()),
        }
    }
}

/// How the newest segment was recovered at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryMode {
    /// After a clean shutdown: its indexes on disk were trusted, nothing was read.
    Clean,
    /// From a recovery checkpoint: the prefix it covers was trusted, the rest scanned.
    Checkpoint,
    /// Scanned from byte 0 (no usable checkpoint).
    FullScan,
}

/// What opening a log read, for operators and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryStats {
    /// How the newest segment was recovered.
    pub mode: RecoveryMode,
    /// Bytes of the newest segment trusted without reading them.
    pub trusted_bytes: u64,
    /// Bytes the validation scans read from the newest segment (the checkpoint check included).
    pub scanned_bytes: u64,
    /// Bytes read to rebuild the idempotent producer state.
    pub producer_replay_bytes: u64,
}

/// A checkpoint as read from disk: consistent in itself, not yet checked against the segment.
pub(crate) struct Checkpoint {
    pub point: DurablePoint,
    /// Indexes of the prefix (entries checked increasing and within the prefix).
    pub index: SegmentIndex,
    /// The newest producer snapshot the journal holds (file format, checked when decoded).
    pub snapshot: Option<Vec<u8>>,
}

/// The open journal of a log (held by the log between checkpoints).
pub(crate) struct Journal {
    writer: SegmentWriter,
    /// What its last record says.
    last: DurablePoint,
    /// Its last record's CRC (the next record's seed).
    crc: u32,
    /// Rewrite rather than append once the journal would pass this.
    rewrite_at_bytes: u64,
    /// `size_bytes` of the newest record that carries a producer snapshot.
    snapshot_size_bytes: u64,
}

impl Journal {
    /// Closes the file (nothing is written).
    pub async fn close(self) -> std::io::Result<()> {
        self.writer.close().await
    }
}

pub(crate) fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Reads the checkpoint of the log in `dir`, if there is a usable one.
pub(crate) fn load(dir: &Path) -> Option<Checkpoint> {
    let path = checkpoint_path(dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "recovery checkpoint unreadable; scanning instead");
            return None;
        }
    };
    let mut bytes = Vec::new();
    if let Err(error) = file.take(JOURNAL_BYTES_MAX + 1).read_to_end(&mut bytes) {
        tracing::warn!(file = %path.display(), %error, "recovery checkpoint unreadable; scanning instead");
        return None;
    }
    if bytes.len() as u64 > JOURNAL_BYTES_MAX {
        tracing::warn!(file = %path.display(), "recovery checkpoint too large; scanning instead");
        return None;
    }
    let decoded = decode(&bytes);
    if decoded.is_none() {
        tracing::warn!(file = %path.display(), "recovery checkpoint holds no valid record; scanning instead");
    }
    decoded
}

/// The state the journal's valid records describe (see the module doc), or `None` when its first
/// record does not check or the records do not form consistent indexes.
pub(crate) fn decode(bytes: &[u8]) -> Option<Checkpoint> {
    let mut position = 0usize;
    let mut seed = 0u32;
    let mut offsets: Vec<OffsetEntry> = Vec::new();
    let mut times: Vec<TimeEntry> = Vec::new();
    let mut snapshot: Option<&[u8]> = None;
    let mut point: Option<DurablePoint> = None;
    while let Some(record) = Record::parse(&bytes[position..], seed) {
        if let Some(previous) = point {
            let continues = record.segment_base == previous.segment_base
                && record.size_bytes >= previous.size_bytes
                && record.next_offset >= previous.next_offset
                && record.max_timestamp >= previous.max_timestamp;
            if !continues {
                break;
            }
        }
        offsets.extend(record.offsets());
        times.extend(record.times());
        if !record.snapshot.is_empty() {
            snapshot = Some(record.snapshot);
        }
        point = Some(DurablePoint {
            segment_base: record.segment_base,
            size_bytes: record.size_bytes,
            next_offset: record.next_offset,
            max_timestamp: record.max_timestamp,
            offset_entries: offsets.len(),
            time_entries: times.len(),
        });
        seed = record.crc;
        position += record.bytes;
    }
    let point = point?;
    // The index decoder checks the entries (increasing, within the prefix, times bound to
    // offsets) and gives the index its newest timestamp.
    let mut prefix = SegmentIndex::new();
    prefix.offsets = offsets;
    prefix.times = times;
    let footer = SegmentFooter {
        next_offset: point.next_offset,
        size_bytes: point.size_bytes,
        max_timestamp: point.max_timestamp,
    };
    let offsets_file = prefix.encode_offsets(&footer);
    let times_file = prefix.encode_times();
    let (index, _) = SegmentIndex::decode(point.segment_base, &offsets_file, &times_file).ok()?;
    Some(Checkpoint {
        point,
        index,
        snapshot: snapshot.map(<[u8]>::to_vec),
    })
}

/// One record's fields (borrowed from the journal bytes).
struct Record<'a> {
    bytes: usize,
    segment_base: i64,
    size_bytes: u64,
    next_offset: i64,
    max_timestamp: i64,
    offset_bytes: &'a [u8],
    time_bytes: &'a [u8],
    snapshot: &'a [u8],
    crc: u32,
}

impl<'a> Record<'a> {
    /// The record at the start of `bytes`, if it is whole and its CRC (seeded with `seed`)
    /// matches.
    fn parse(bytes: &'a [u8], seed: u32) -> Option<Record<'a>> {
        let header = bytes.get(..RECORD_HEADER_BYTES)?;
        if be_u32(&header[0..4]) != RECORD_MAGIC {
            return None;
        }
        let record_bytes = be_u32(&header[4..8]) as usize;
        let offset_count = be_u32(&header[40..44]) as usize;
        let time_count = be_u32(&header[44..48]) as usize;
        let snapshot_bytes = be_u32(&header[48..52]) as usize;
        // Every count is bounded by the record length before any is used.
        let body_bytes = record_bytes.checked_sub(RECORD_HEADER_BYTES + RECORD_CRC_BYTES)?;
        let offsets_end = offset_count.checked_mul(OFFSET_ENTRY_BYTES)?;
        let times_end = offsets_end.checked_add(time_count.checked_mul(TIME_ENTRY_BYTES)?)?;
        if times_end.checked_add(snapshot_bytes)? != body_bytes {
            return None;
        }
        let record = bytes.get(..record_bytes)?;
        let (checked, crc_bytes) = record.split_at(record_bytes - RECORD_CRC_BYTES);
        let crc = be_u32(crc_bytes);
        if crc32c::crc32c_append(seed, checked) != crc {
            return None;
        }
        let body = &checked[RECORD_HEADER_BYTES..];
        let size_bytes = be_u64(&header[16..24]);
        let segment_base = be_i64(&header[8..16]);
        let next_offset = be_i64(&header[24..32]);
        if segment_base < 0 || next_offset < segment_base || size_bytes > u64::from(u32::MAX) {
            return None;
        }
        Some(Record {
            bytes: record_bytes,
            segment_base,
            size_bytes,
            next_offset,
            max_timestamp: be_i64(&header[32..40]),
            offset_bytes: &body[..offsets_end],
            time_bytes: &body[offsets_end..times_end],
            snapshot: &body[times_end..],
            crc,
        })
    }

    fn offsets(&self) -> impl Iterator<Item = OffsetEntry> + 'a {
        self.offset_bytes
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|chunk| OffsetEntry {
                relative_offset: be_u32(&chunk[0..4]),
                position: be_u32(&chunk[4..8]),
            })
    }

    fn times(&self) -> impl Iterator<Item = TimeEntry> + 'a {
        self.time_bytes
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|chunk| TimeEntry {
                timestamp: be_i64(&chunk[0..8]),
                relative_offset: be_u32(&chunk[8..12]),
            })
    }
}

/// Encodes one record; returns it and its CRC.
fn encode_record(
    seed: u32,
    point: &DurablePoint,
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
    snapshot: &[u8],
) -> (Vec<u8>, u32) {
    let record_bytes = RECORD_HEADER_BYTES
        + offsets.len() * OFFSET_ENTRY_BYTES
        + times.len() * TIME_ENTRY_BYTES
        + snapshot.len()
        + RECORD_CRC_BYTES;
    let mut out = Vec::with_capacity(record_bytes);
    out.extend_from_slice(&RECORD_MAGIC.to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(record_bytes)
            .expect("bounded record")
            .to_be_bytes(),
    );
    out.extend_from_slice(&point.segment_base.to_be_bytes());
    out.extend_from_slice(&point.size_bytes.to_be_bytes());
    out.extend_from_slice(&point.next_offset.to_be_bytes());
    out.extend_from_slice(&point.max_timestamp.to_be_bytes());
    for count in [offsets.len(), times.len(), snapshot.len()] {
        out.extend_from_slice(&u32::try_from(count).expect("bounded count").to_be_bytes());
    }
    for entry in offsets {
        out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        out.extend_from_slice(&entry.position.to_be_bytes());
    }
    for entry in times {
        out.extend_from_slice(&entry.timestamp.to_be_bytes());
        out.extend_from_slice(&entry.relative_offset.to_be_bytes());
    }
    out.extend_from_slice(snapshot);
    let crc = crc32c::crc32c_append(seed, &out);
    out.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(out.len(), record_bytes);
    (out, crc)
}

/// What one checkpoint writes.
struct Planned {
    point: DurablePoint,
    record: Vec<u8>,
    crc: u32,
    fresh: bool,
    fresh_record_bytes: u64,
    with_snapshot: bool,
}

/// Writes a checkpoint of `log`'s durable point if it moved since the last one. Returns whether
/// it wrote one. A poisoned, closing or closed log is skipped. A failed write or sync of the
/// checkpoint poisons the log, as a failed data write does.
pub(crate) async fn write_checkpoint(log: &PartitionLog) -> Result<bool, LogError> {
    let Ok(_permit) = log.segments_permit().await else {
        return Ok(false);
    };
    if log.check_maintainable().is_err() {
        return Ok(false);
    }
    let journal = log.journal().borrow_mut().take();
    let Some(planned) = plan(log, journal.as_ref()) else {
        *log.journal().borrow_mut() = journal;
        return Ok(false);
    };
    match write_planned(log, journal, &planned).await {
        Ok(journal) => {
            *log.journal().borrow_mut() = Some(journal);
            Ok(true)
        }
        Err(error) => {
            let reason: std::sync::Arc<str> =
                format!("writing the recovery checkpoint: {error}").into();
            log.poison(reason.clone());
            Err(LogError::Io(reason))
        }
    }
}

/// The record to write for the log's current durable point, or `None` when there is nothing
/// new (or nothing worth recording: an empty segment).
fn plan(log: &PartitionLog, journal: Option<&Journal>) -> Option<Planned> {
    log.with_state(|state| {
        let point = (*state.durable_point)?;
        let segment = state.segments.values().next_back()?;
        let index = segment.index.as_deref()?;
        if point.segment_base != segment.base_offset || point.size_bytes == 0 {
            return None;
        }
        debug_assert!(
            index.offsets.len() >= point.offset_entries && index.times.len() >= point.time_entries
        );
        if index.offsets.len() < point.offset_entries || index.times.len() < point.time_entries {
            return None;
        }
        // Records only extend the one before them; anything else starts a fresh journal.
        let journal = journal.filter(|journal| {
            let last = &journal.last;
            last.segment_base == point.segment_base
                && last.size_bytes <= point.size_bytes
                && last.next_offset <= point.next_offset
                && last.offset_entries <= point.offset_entries
                && last.time_entries <= point.time_entries
        });
        if journal.is_some_and(|journal| journal.last == point) {
            return None;
        }
        // The producer table describes the published batches: it is the state at the point only
        // when everything published is synced (always under EveryCommit).
        let since_snapshot =
            point.size_bytes - journal.map_or(0, |journal| journal.snapshot_size_bytes);
        let snapshot_bytes_max =
            SNAPSHOT_FIXED_BYTES + state.producers.len() * SNAPSHOT_PRODUCER_BYTES_MAX;
        let snapshot_due = point.next_offset == *state.durable_end
            && (snapshot_bytes_max <= SNAPSHOT_ALWAYS_BYTES
                || snapshot_bytes_max as u64 * SNAPSHOT_REPLAY_RATIO <= since_snapshot);
        let snapshot = snapshot_due.then(|| state.producers.encode_snapshot(point.next_offset));
        let snapshot_bytes = snapshot.as_deref().unwrap_or_default();
        let offsets = &index.offsets[..point.offset_entries];
        let times = &index.times[..point.time_entries];
        let fresh_record_bytes = (RECORD_HEADER_BYTES
            + offsets.len() * OFFSET_ENTRY_BYTES
            + times.len() * TIME_ENTRY_BYTES
            + snapshot_bytes.len()
            + RECORD_CRC_BYTES) as u64;
        if fresh_record_bytes > FRESH_RECORD_BYTES_MAX {
            return None;
        }
        if let Some(journal) = journal {
            let (record, crc) = encode_record(
                journal.crc,
                &point,
                &offsets[journal.last.offset_entries..],
                &times[journal.last.time_entries..],
                snapshot_bytes,
            );
            if journal.writer.written_bytes() + record.len() as u64 <= journal.rewrite_at_bytes {
                return Some(Planned {
                    point,
                    record,
                    crc,
                    fresh: false,
                    fresh_record_bytes,
                    with_snapshot: snapshot.is_some(),
                });
            }
        }
        let (record, crc) = encode_record(0, &point, offsets, times, snapshot_bytes);
        Some(Planned {
            point,
            record,
            crc,
            fresh: true,
            fresh_record_bytes,
            with_snapshot: snapshot.is_some(),
        })
    })
}

async fn write_planned(
    log: &PartitionLog,
    journal: Option<Journal>,
    planned: &Planned,
) -> std::io::Result<Journal> {
    let journal = match journal {
        Some(journal) if !planned.fresh => journal,
        old => {
            if let Some(old) = old {
                old.close().await?;
            }
            return write_fresh(log, planned).await;
        }
    };
    let Journal {
        mut writer,
        rewrite_at_bytes,
        mut snapshot_size_bytes,
        ..
    } = journal;
    append_record(&mut writer, &planned.record).await?;
    if planned.with_snapshot {
        snapshot_size_bytes = planned.point.size_bytes;
    }
    Ok(Journal {
        writer,
        last: planned.point,
        crc: planned.crc,
        rewrite_at_bytes,
        snapshot_size_bytes,
    })
}

/// A new journal holding one record, written over the old journal in place: the file is cut to
/// nothing, the record written at its start and synced. Until the record is whole on disk its
/// CRC fails and open scans instead; whatever of an old journal survives behind it does not chain
/// to it. (A crash may also leave the old journal whole: it describes an older synced point.)
async fn write_fresh(log: &PartitionLog, planned: &Planned) -> std::io::Result<Journal> {
    let storage = &log.context().storage;
    let path = checkpoint_path(log.inner_dir());
    let file = storage.open_write(&path).await?;
    file.truncate(0).await?;
    let mut writer = SegmentWriter::new(file, 0, Vec::new(), 0);
    append_record(&mut writer, &planned.record).await?;
    writer.sync().await?;
    Ok(Journal {
        writer,
        last: planned.point,
        crc: planned.crc,
        rewrite_at_bytes: 2 * planned.fresh_record_bytes + REWRITE_SLACK_BYTES,
        snapshot_size_bytes: if planned.with_snapshot {
            planned.point.size_bytes
        } else {
            0
        },
    })
}

/// Appends a record (aligned direct writes that rewrite the last partial block unchanged, as
/// segments do). Appended records are not synced: a record is written only after the data it
/// describes was synced, so one that survives a power loss is true whether or not it was synced
/// itself, and one that does not survive only makes the next open scan more.
async fn append_record(writer: &mut SegmentWriter, record: &[u8]) -> std::io::Result<()> {
    writer
        .append(
            &[record],
            JOURNAL_WRITE_BYTES_MAX,
            JOURNAL_PREALLOCATE_BYTES,
            JOURNAL_BYTES_MAX,
        )
        .await
}

/// Removes the log's checkpoint (truncation, before anything is cut); durable once the caller
/// syncs the directory.
pub(crate) async fn remove(log: &PartitionLog) -> std::io::Result<()> {
    let journal = log.journal().borrow_mut().take();
    if let Some(journal) = journal {
        journal.close().await?;
    }
    let path = checkpoint_path(log.inner_dir());
    log.context().storage.remove_file(&path).await
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("4 bytes"))
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(size_bytes: u64, next_offset: i64, offsets: usize, times: usize) -> DurablePoint {
        DurablePoint {
            segment_base: 100,
            size_bytes,
            next_offset,
            max_timestamp: 50 + next_offset,
            offset_entries: offsets,
            time_entries: times,
        }
    }

    fn offset_entry(relative_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset,
            position,
        }
    }

    fn time_entry(timestamp: i64, relative_offset: u32) -> TimeEntry {
        TimeEntry {
            timestamp,
            relative_offset,
        }
    }

    /// Three records: a fresh one and two deltas.
    fn journal() -> Vec<u8> {
        let first = point(5000, 140, 1, 1);
        let (mut bytes, crc) = encode_record(
            0,
            &first,
            &[offset_entry(10, 4096)],
            &[time_entry(150, 10)],
            b"",
        );
        let second = point(9000, 170, 2, 2);
        let (record, crc) = encode_record(
            crc,
            &second,
            &[offset_entry(40, 8192)],
            &[time_entry(180, 40)],
            b"snap",
        );
        bytes.extend_from_slice(&record);
        let third = point(9500, 180, 2, 2);
        let (record, _) = encode_record(crc, &third, &[], &[], b"");
        bytes.extend_from_slice(&record);
        bytes
    }

    #[test]
    fn records_accumulate_into_the_newest_point() {
        let decoded = decode(&journal()).expect("valid journal");
        assert_eq!(decoded.point, point(9500, 180, 2, 2));
        assert_eq!(
            decoded.index.offsets,
            vec![offset_entry(10, 4096), offset_entry(40, 8192)]
        );
        assert_eq!(decoded.index.times.len(), 2);
        assert_eq!(decoded.index.max_timestamp(), 50 + 180);
        assert_eq!(decoded.snapshot.as_deref(), Some(&b"snap"[..]));
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_journal_before_it() {
        let bytes = journal();
        let first_len = be_u32(&bytes[4..8]) as usize;
        let second_len = be_u32(&bytes[first_len + 4..first_len + 8]) as usize;
        // Cut anywhere inside the third record: the second is the newest valid one.
        for cut in first_len + second_len..bytes.len() {
            let decoded = decode(&bytes[..cut]).expect("two valid records");
            assert_eq!(decoded.point.size_bytes, 9000, "cut at {cut}");
        }
        // Zeros after the records (preallocation) end the walk too.
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 4096, 0);
        assert_eq!(decode(&padded).expect("valid").point.size_bytes, 9500);
        // A flipped bit in the first record leaves nothing; in a later one, the records before.
        for byte in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 0x04;
            let decoded = decode(&flipped);
            if byte < first_len {
                assert!(decoded.is_none(), "flip at {byte} accepted");
            } else {
                assert!(
                    decoded.expect("a prefix").point.size_bytes < 9500,
                    "flip at {byte}"
                );
            }
        }
    }

    #[test]
    fn a_record_not_written_after_its_predecessor_does_not_count() {
        // The third record re-encoded with another seed (as if it followed a different second
        // record, e.g. one from an older journal left behind a torn append).
        let bytes = journal();
        let first_len = be_u32(&bytes[4..8]) as usize;
        let second_len = be_u32(&bytes[first_len + 4..first_len + 8]) as usize;
        let (stray, _) = encode_record(12345, &point(9500, 180, 2, 2), &[], &[], b"");
        let mut spliced = bytes[..first_len + second_len].to_vec();
        spliced.extend_from_slice(&stray);
        assert_eq!(decode(&spliced).expect("valid").point.size_bytes, 9000);
    }

    #[test]
    fn inconsistent_entries_reject_the_journal() {
        // An entry past the prefix end.
        let (bytes, _) = encode_record(
            0,
            &point(5000, 140, 1, 0),
            &[offset_entry(10, 6000)],
            &[],
            b"",
        );
        assert!(decode(&bytes).is_none());
        // A record whose counts do not add up to its length.
        let (mut bytes, _) = encode_record(0, &point(5000, 140, 0, 0), &[], &[], b"");
        bytes[43] = 1;
        assert!(decode(&bytes).is_none());
        // Nothing at all.
        assert!(decode(&[]).is_none());
        assert!(decode(&[0u8; 4096]).is_none());
    }
}
