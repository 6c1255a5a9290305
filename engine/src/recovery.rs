//! Opening a log (recovery), sealing and rolling segments, index loading and truncation: the
//! operations that change which segments exist. Runs on the log's shard; rolls and truncation
//! run under the log's I/O lock.
//!
//! Recovery reads only the newest segment: a clean-shutdown marker means its indexes on disk are
//! exact; without one the segment is scanned, every batch's length, CRC and offset checked, and
//! the file is cut at the first bad batch. A recovery checkpoint (`checkpoint.rs`) that checks
//! out limits the scan to the bytes after the synced prefix it records. Sealed segments are
//! trusted (they were synced and their indexes written before the next segment was created) and
//! their indexes load on first use, so opening costs the unsynced tail, not the total.

use crate::checkpoint::{self, Checkpoint, DurablePoint, RecoveryMode, RecoveryStats};
use crate::index::{SegmentFooter, SegmentIndex};
use crate::io::{write_file_atomic_blocking, BLOCK_BYTES};
use crate::log::{self, LogConfig, LogContext, LogError, PartitionLog};
use crate::producer_state::{self, ProducerStateTable};
use crate::segment::{self, OffsetGaps, ScanStart, Segment, SegmentPaths};
use crate::writer::SegmentWriter;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// What [`recover`] hands the log.
pub(crate) struct Recovered {
    pub segments: BTreeMap<i64, Segment>,
    pub writer: SegmentWriter,
    pub next_offset: i64,
    pub log_start: i64,
    pub producers: ProducerStateTable,
    /// How much of the active segment is known synced.
    pub durable_point: Option<DurablePoint>,
    pub stats: RecoveryStats,
}

fn open_error<'a>(dir: &'a Path, what: &str) -> impl Fn(io::Error) -> LogError + 'a {
    let what = what.to_string();
    move |error| LogError::Io(format!("{}: {what}: {error}", dir.display()).into())
}

pub(crate) async fn recover(
    dir: &Path,
    config: &LogConfig,
    context: &LogContext,
) -> Result<Recovered, LogError> {
    std::fs::create_dir_all(dir).map_err(open_error(dir, "creating the log directory"))?;
    // A clean interrupted by a crash: drop its unfinished output, or finish its segment swap.
    crate::compact::finish_interrupted_clean(dir, context.storage.as_ref()).await?;
    let mut bases = list_segments(dir).map_err(open_error(dir, "listing segments"))?;
    let marker = log::clean_shutdown_marker(dir);
    let clean = marker.exists();
    let checkpoint = match std::fs::read(log::log_start_checkpoint(dir)) {
        Ok(bytes) => log::decode_checkpoint(&bytes).or_else(|| {
            tracing::warn!(dir = %dir.display(), "corrupt log start checkpoint ignored");
            None
        }),
        Err(_) => None,
    };
    let storage = &context.storage;
    if bases.is_empty() {
        let base = checkpoint.unwrap_or(0).max(0);
        let paths = SegmentPaths::new(dir, base);
        let file = storage
            .open_write(&paths.log)
            .await
            .map_err(open_error(dir, "creating the first segment"))?;
        file.close()
            .await
            .map_err(open_error(dir, "creating the first segment"))?;
        storage
            .sync_dir(dir)
            .await
            .map_err(open_error(dir, "syncing the directory"))?;
        bases.push(base);
    }
    let mut segments = BTreeMap::new();
    for pair in bases.windows(2) {
        let segment = sealed_segment(dir, storage.as_ref(), pair[0], pair[1])
            .map_err(open_error(dir, "opening a sealed segment"))?;
        segments.insert(pair[0], segment);
    }
    let last_base = *bases.last().expect("at least one segment");
    let recovery_checkpoint = if clean { None } else { checkpoint::load(dir) };
    let active = open_active(dir, config, context, last_base, clean, recovery_checkpoint).await?;
    let ActiveSegment {
        segment,
        writer,
        durable_point,
        mut stats,
        snapshot,
    } = active;
    let next_offset = segment.next_offset;
    segments.insert(last_base, segment);
    if clean {
        storage
            .remove_file(&marker)
            .await
            .map_err(open_error(dir, "removing the clean-shutdown marker"))?;
        storage
            .sync_dir(dir)
            .await
            .map_err(open_error(dir, "syncing the directory"))?;
    }
    let (producers, replayed_bytes) =
        recover_producers(dir, &segments, next_offset, config, context, snapshot).await?;
    stats.producer_replay_bytes = replayed_bytes;
    if stats.mode != RecoveryMode::Clean && stats.trusted_bytes + stats.scanned_bytes > 0 {
        tracing::info!(
            dir = %dir.display(),
            mode = ?stats.mode,
            trusted_bytes = stats.trusted_bytes,
            scanned_bytes = stats.scanned_bytes,
            producer_replay_bytes = stats.producer_replay_bytes,
            "recovered after an unclean shutdown"
        );
    }
    let first_base = bases[0];
    let log_start = checkpoint
        .unwrap_or(first_base)
        .max(first_base)
        .min(next_offset);
    Ok(Recovered {
        segments,
        writer,
        next_offset,
        log_start,
        producers,
        durable_point,
        stats,
    })
}

/// The producer state of a recovered log: the newest usable snapshot (a file, or the trusted
/// recovery checkpoint's `snapshot`) plus the batches after it. Snapshots above the end describe
/// batches that are gone (a cut tail, an interrupted truncation): they are deleted first, before
/// new batches could carry the log past them and make them look valid. Returns the table and the
/// bytes read to replay batches.
async fn recover_producers(
    dir: &Path,
    segments: &BTreeMap<i64, Segment>,
    next_offset: i64,
    config: &LogConfig,
    context: &LogContext,
    snapshot: Option<Vec<u8>>,
) -> Result<(ProducerStateTable, u64), LogError> {
    let snapshots =
        producer_state::list_snapshots(dir).map_err(open_error(dir, "listing snapshots"))?;
    let stale: Vec<i64> = snapshots
        .into_iter()
        .filter(|offset| *offset > next_offset)
        .collect();
    remove_snapshots(dir, context, &stale)
        .await
        .map_err(open_error(dir, "removing stale producer snapshots"))?;
    let limits = config.producer_limits();
    let preloaded = snapshot.and_then(|bytes| {
        ProducerStateTable::decode_snapshot(&bytes, limits)
            .map_err(|error| {
                tracing::warn!(dir = %dir.display(), %error, "the recovery checkpoint's producer snapshot is unusable");
            })
            .ok()
    });
    let now_ms = wall_clock_ms();
    producer_state::rebuild(dir, segments, next_offset, limits, now_ms, preloaded)
        .map_err(open_error(dir, "rebuilding producer state"))
}

/// Removes the snapshot files at `offsets` (and makes the removal durable).
async fn remove_snapshots(dir: &Path, context: &LogContext, offsets: &[i64]) -> io::Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    for offset in offsets {
        let path = producer_state::snapshot_path(dir, *offset);
        tracing::info!(snapshot = %path.display(), "removing a producer snapshot past the log end");
        context.storage.remove_file(&path).await?;
    }
    context.storage.sync_dir(dir).await
}

/// Writes the producer-state snapshot covering the log below `offset` (every batch below it is
/// durable and committed to the table), then removes all but the newest
/// [`producer_state::SNAPSHOTS_KEPT`] snapshots.
pub(crate) async fn write_producer_snapshot(
    log: &PartitionLog,
    offset: i64,
) -> Result<(), LogError> {
    let dir = log.inner_dir().to_path_buf();
    let contents = log.with_state(|state| state.producers.encode_snapshot(offset));
    let storage = &log.context().storage;
    let snapshot_error =
        |error| LogError::Io(format!("writing a producer state snapshot: {error}").into());
    storage
        .write_file_atomic(&producer_state::snapshot_path(&dir, offset), &contents)
        .await
        .map_err(snapshot_error)?;
    let snapshots = producer_state::list_snapshots(&dir).map_err(snapshot_error)?;
    let old = snapshots
        .len()
        .saturating_sub(producer_state::SNAPSHOTS_KEPT);
    for old_offset in &snapshots[..old] {
        storage
            .remove_file(&producer_state::snapshot_path(&dir, *old_offset))
            .await
            .map_err(snapshot_error)?;
    }
    Ok(())
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Base offsets of the `.log` files in `dir`, sorted; removes leftover `.tmp` files.
fn list_segments(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
        } else if let Some(base) = SegmentPaths::parse_log_name(name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn sealed_segment(
    dir: &Path,
    storage: &dyn crate::io::Storage,
    base_offset: i64,
    next_base: i64,
) -> io::Result<Segment> {
    let paths = SegmentPaths::new(dir, base_offset);
    let read_file = storage.open_read(&paths.log)?;
    let size_bytes = read_file.metadata()?.len();
    Ok(Segment {
        base_offset,
        paths,
        read_file: Arc::new(read_file),
        size_bytes,
        next_offset: next_base,
        max_timestamp: None,
        index: None,
        first_append_ms: None,
    })
}

/// The opened active segment and what recovering it found.
struct ActiveSegment {
    segment: Segment,
    writer: SegmentWriter,
    durable_point: Option<DurablePoint>,
    stats: RecoveryStats,
    /// The producer snapshot of the recovery checkpoint, when the checkpoint was trusted.
    snapshot: Option<Vec<u8>>,
}

async fn open_active(
    dir: &Path,
    config: &LogConfig,
    context: &LogContext,
    base_offset: i64,
    clean: bool,
    checkpoint: Option<Checkpoint>,
) -> Result<ActiveSegment, LogError> {
    let paths = SegmentPaths::new(dir, base_offset);
    let read_file = context
        .storage
        .open_read(&paths.log)
        .map_err(open_error(dir, "opening the active segment"))?;
    let file_bytes = read_file
        .metadata()
        .map_err(open_error(dir, "reading the active segment's size"))?
        .len();
    let trusted = clean
        .then(|| read_index_files(&paths, base_offset).ok())
        .flatten()
        .filter(|(_, footer)| footer.size_bytes == file_bytes);
    let trusted_clean = trusted.is_some();
    let recovered = match trusted {
        Some((index, footer)) => RecoveredActive {
            index,
            size_bytes: footer.size_bytes,
            next_offset: footer.next_offset,
            stats: RecoveryStats {
                mode: RecoveryMode::Clean,
                trusted_bytes: file_bytes,
                scanned_bytes: 0,
                producer_replay_bytes: 0,
            },
            durable_point: None,
            snapshot: None,
        },
        None => {
            let interval = config.index_interval_bytes;
            scan_active(
                dir,
                &read_file,
                base_offset,
                file_bytes,
                interval,
                checkpoint,
            )?
        }
    };
    let RecoveredActive {
        index,
        size_bytes,
        next_offset,
        stats,
        mut durable_point,
        snapshot,
    } = recovered;
    let file = context
        .storage
        .open_write(&paths.log)
        .await
        .map_err(open_error(dir, "opening the active segment for writing"))?;
    let synced_whole = trusted_clean || size_bytes != file_bytes;
    if size_bytes != file_bytes {
        file.truncate(size_bytes)
            .await
            .map_err(open_error(dir, "cutting the segment's invalid tail"))?;
        file.sync_data()
            .await
            .map_err(open_error(dir, "syncing the cut segment"))?;
    }
    let tail_block = read_tail_block(&read_file, size_bytes)
        .map_err(open_error(dir, "reading the tail block"))?;
    let writer = SegmentWriter::new(file, size_bytes, tail_block, size_bytes);
    let max_timestamp = index.max_timestamp();
    let segment = Segment {
        base_offset,
        paths,
        read_file: Arc::new(read_file),
        size_bytes,
        next_offset,
        max_timestamp: Some(max_timestamp),
        index: Some(Rc::new(index)),
        first_append_ms: None,
    };
    // A clean close synced the segment, and so does the cut above (all of the file's data):
    // then every recovered byte is durable. Otherwise only what a trusted checkpoint covers.
    if synced_whole {
        durable_point = Some(DurablePoint::of_segment(&segment));
    }
    Ok(ActiveSegment {
        segment,
        writer,
        durable_point,
        stats,
        snapshot,
    })
}

/// What recovering the active segment's bytes found.
struct RecoveredActive {
    index: SegmentIndex,
    size_bytes: u64,
    next_offset: i64,
    stats: RecoveryStats,
    /// The trusted checkpoint's point (the bytes it covers were synced).
    durable_point: Option<DurablePoint>,
    /// The trusted checkpoint's producer snapshot.
    snapshot: Option<Vec<u8>>,
}

/// Recovers an active segment without a clean shutdown: from the end of a recovery checkpoint
/// that checks out, else from byte 0, scanning to the first batch that fails.
fn scan_active(
    dir: &Path,
    read_file: &File,
    base_offset: i64,
    file_bytes: u64,
    interval: u64,
    checkpoint: Option<Checkpoint>,
) -> Result<RecoveredActive, LogError> {
    let verified = match checkpoint {
        Some(found) => verify_checkpoint(dir, read_file, base_offset, found, file_bytes, interval)
            .map_err(open_error(dir, "checking the recovery checkpoint"))?,
        None => None,
    };
    let mut stats = RecoveryStats {
        mode: RecoveryMode::FullScan,
        trusted_bytes: 0,
        scanned_bytes: 0,
        producer_replay_bytes: 0,
    };
    let (start, durable_point, snapshot) = match verified {
        Some(VerifiedCheckpoint {
            checkpoint,
            read_bytes,
        }) => {
            stats.mode = RecoveryMode::Checkpoint;
            stats.trusted_bytes = checkpoint.point.size_bytes;
            stats.scanned_bytes = read_bytes;
            let start = ScanStart {
                position: checkpoint.point.size_bytes,
                next_offset: checkpoint.point.next_offset,
                index: checkpoint.index,
            };
            (start, Some(checkpoint.point), checkpoint.snapshot)
        }
        None => (ScanStart::segment_start(base_offset), None, None),
    };
    let scan = segment::scan_segment_from(
        read_file,
        base_offset,
        start,
        file_bytes,
        interval,
        OffsetGaps::Reject,
    )
    .map_err(open_error(dir, "scanning the active segment"))?;
    stats.scanned_bytes += scan.read_bytes;
    log_scan_end(dir, base_offset, &scan, file_bytes);
    Ok(RecoveredActive {
        index: scan.index,
        size_bytes: scan.valid_bytes,
        next_offset: scan.next_offset,
        stats,
        durable_point,
        snapshot,
    })
}

fn log_scan_end(dir: &Path, base_offset: i64, scan: &segment::ScanResult, file_bytes: u64) {
    if scan.valid_bytes < file_bytes && scan.stopped_at_zeros {
        tracing::info!(
            dir = %dir.display(),
            segment = base_offset,
            valid_bytes = scan.valid_bytes,
            "recovery: the active segment ends in preallocated space; trimming it"
        );
    } else if scan.valid_bytes < file_bytes {
        tracing::warn!(
            dir = %dir.display(),
            segment = base_offset,
            valid_bytes = scan.valid_bytes,
            file_bytes,
            reason = scan.stopped_by.as_deref().unwrap_or("end of data"),
            "recovery: cutting the segment after its last valid batch"
        );
    }
}

/// A recovery checkpoint that matches the active segment, and the bytes read to check it.
struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    read_bytes: u64,
}

/// Checks `found` against the active segment before its prefix is trusted: it must name this
/// segment and end within the file, and the batches from its last index entry to its end must
/// scan clean (length, CRC, offsets continuing from the entry) and end exactly at its size and
/// offset. A stale checkpoint (a roll or a cut after it) or one that does not match is ignored:
/// the segment is then scanned whole.
fn verify_checkpoint(
    dir: &Path,
    file: &File,
    base_offset: i64,
    found: Checkpoint,
    file_bytes: u64,
    interval: u64,
) -> io::Result<Option<VerifiedCheckpoint>> {
    let point = found.point;
    if point.segment_base != base_offset {
        // Written before the newest segment was rolled: nothing of this segment is recorded.
        tracing::debug!(dir = %dir.display(), "the recovery checkpoint names an older segment");
        return Ok(None);
    }
    let reject = |reason: &str| {
        tracing::warn!(
            dir = %dir.display(),
            segment = base_offset,
            checkpoint_bytes = point.size_bytes,
            file_bytes,
            reason,
            "recovery checkpoint does not match the segment; scanning it whole"
        );
        Ok(None)
    };
    if point.size_bytes > file_bytes {
        return reject("it ends past the end of the file");
    }
    let (position, next_offset) = match found.index.offsets.last() {
        Some(entry) => (
            u64::from(entry.position),
            base_offset + i64::from(entry.relative_offset),
        ),
        None => (0, base_offset),
    };
    let start = ScanStart {
        position,
        next_offset,
        index: SegmentIndex::new(),
    };
    let scan = segment::scan_segment_from(
        file,
        base_offset,
        start,
        point.size_bytes,
        interval,
        OffsetGaps::Reject,
    )?;
    if scan.valid_bytes != point.size_bytes || scan.next_offset != point.next_offset {
        return reject("its last indexed batches do not end where it does");
    }
    Ok(Some(VerifiedCheckpoint {
        checkpoint: found,
        read_bytes: scan.read_bytes,
    }))
}

fn read_tail_block(file: &File, size_bytes: u64) -> io::Result<Vec<u8>> {
    let start = log::block_start(size_bytes);
    let mut tail = vec![0u8; (size_bytes - start) as usize];
    file.read_exact_at(&mut tail, start)?;
    debug_assert!((tail.len() as u64) < BLOCK_BYTES);
    Ok(tail)
}

fn read_index_files(
    paths: &SegmentPaths,
    base_offset: i64,
) -> Result<(SegmentIndex, SegmentFooter), String> {
    let offsets = std::fs::read(&paths.index).map_err(|error| error.to_string())?;
    let times = std::fs::read(&paths.time_index).map_err(|error| error.to_string())?;
    SegmentIndex::decode(base_offset, &offsets, &times).map_err(|error| error.to_string())
}

/// Loads a sealed segment's indexes, rebuilding them from the log when missing or corrupt.
/// Blocking reads (and, on rebuild, a blocking write of the new index files): index files are
/// small and this runs once per segment while its indexes stay loaded.
pub(crate) fn load_sealed_index(
    segment: &mut Segment,
    interval: u64,
) -> Result<SegmentIndex, LogError> {
    match read_index_files(&segment.paths, segment.base_offset) {
        Ok((index, footer))
            if footer.next_offset == segment.next_offset
                && footer.size_bytes == segment.size_bytes =>
        {
            segment.max_timestamp = Some(footer.max_timestamp);
            return Ok(index);
        }
        Ok(_) => {
            tracing::warn!(segment = %segment.paths.log.display(), "index does not match its segment; rebuilding")
        }
        Err(reason) => {
            tracing::warn!(segment = %segment.paths.log.display(), %reason, "index unreadable; rebuilding")
        }
    }
    let scan = segment::scan_segment(
        &segment.read_file,
        segment.base_offset,
        segment.size_bytes,
        interval,
        OffsetGaps::Allow,
    )
    .map_err(|error| LogError::Io(format!("rebuilding an index: {error}").into()))?;
    // A cleaned segment may end below its successor's base (its last records were compacted
    // away); batches past the successor's base, or bytes that do not scan, are corruption.
    if scan.valid_bytes != segment.size_bytes || scan.next_offset > segment.next_offset {
        tracing::error!(
            segment = %segment.paths.log.display(),
            valid_bytes = scan.valid_bytes,
            size_bytes = segment.size_bytes,
            reason = scan.stopped_by.as_deref().unwrap_or("offsets end early"),
            "sealed segment is corrupt; serving only its valid prefix"
        );
        segment.size_bytes = scan.valid_bytes;
    }
    segment.max_timestamp = Some(scan.index.max_timestamp());
    let footer = segment.footer();
    let write =
        write_file_atomic_blocking(&segment.paths.index, &scan.index.encode_offsets(&footer))
            .and_then(|()| {
                write_file_atomic_blocking(&segment.paths.time_index, &scan.index.encode_times())
            });
    if let Err(error) = write {
        tracing::warn!(segment = %segment.paths.log.display(), %error, "could not save the rebuilt index");
    }
    Ok(scan.index)
}

/// Writes the `.index` and `.timeindex` files of the active segment.
pub(crate) async fn write_segment_indexes(
    log: &PartitionLog,
    _base: Option<i64>,
) -> Result<(), LogError> {
    let (paths, offsets, times) = log.with_state(|state| {
        let segment = state.segments.values().next_back().expect("active segment");
        let index = segment.index.clone().unwrap_or_default();
        (
            segment.paths.clone(),
            index.encode_offsets(&segment.footer()),
            index.encode_times(),
        )
    });
    let storage = &log.context().storage;
    let write_error = |error| LogError::Io(format!("writing segment indexes: {error}").into());
    storage
        .write_file_atomic(&paths.index, &offsets)
        .await
        .map_err(write_error)?;
    storage
        .write_file_atomic(&paths.time_index, &times)
        .await
        .map_err(write_error)
}

/// Seals the active segment (trim, sync, indexes) and starts a new one at the log's end.
/// Caller holds the I/O lock and has published every batch written so far.
pub(crate) async fn roll(log: &PartitionLog, writer: &mut SegmentWriter) -> io::Result<()> {
    writer.trim_and_sync().await?;
    write_segment_indexes(log, None)
        .await
        .map_err(io::Error::other)?;
    let dir = log.inner_dir().to_path_buf();
    let new_base = log.with_state(|state| *state.durable_end);
    write_producer_snapshot(log, new_base)
        .await
        .map_err(io::Error::other)?;
    let paths = SegmentPaths::new(&dir, new_base);
    let storage = &log.context().storage;
    let file = storage.open_write(&paths.log).await?;
    storage.sync_dir(&dir).await?;
    let read_file = storage.open_read(&paths.log)?;
    let old = std::mem::replace(writer, SegmentWriter::new(file, 0, Vec::new(), 0));
    old.close().await?;
    log.with_state(|state| {
        let old_base = *state.segments.keys().next_back().expect("active segment");
        log::remember_loaded_index(state.segments, state.loaded_indexes, old_base);
        state.segments.insert(
            new_base,
            Segment {
                base_offset: new_base,
                paths,
                read_file: Arc::new(read_file),
                size_bytes: 0,
                next_offset: new_base,
                max_timestamp: Some(-1),
                index: Some(Rc::new(SegmentIndex::new())),
                first_append_ms: None,
            },
        );
        // The new segment's file and directory entry are synced; it holds nothing yet.
        let new_segment = state.segments.get(&new_base).expect("just inserted");
        *state.durable_point = Some(DurablePoint::of_segment(new_segment));
    });
    Ok(())
}

/// Cuts the log so it ends before the batch containing `offset`. Caller holds the I/O lock, no
/// appends are queued, and `log_start <= offset < next_offset`.
pub(crate) async fn truncate_tail(log: &PartitionLog, offset: i64) -> Result<i64, LogError> {
    let dir = log.inner_dir().to_path_buf();
    let io_error = |what: &'static str| {
        move |error: io::Error| LogError::Io(format!("{what}: {error}").into())
    };
    let (segment_base, file, size_bytes, active_base) = log.with_state(|state| {
        let (base, segment) = state
            .segments
            .range(..=offset)
            .next_back()
            .expect("offset >= log start");
        let active_base = *state.segments.keys().next_back().expect("active segment");
        (
            *base,
            segment.read_file.clone(),
            segment.size_bytes,
            active_base,
        )
    });
    // Find the cut: the start of the batch holding `offset`.
    let index = log.segment_index(segment_base)?;
    let relative = u32::try_from(offset - segment_base).unwrap_or(u32::MAX);
    let start = u64::from(index.lookup_offset(relative).position);
    let found = segment::find_batch(&file, start, size_bytes, offset)
        .map_err(io_error("finding the truncation point"))?;
    // In a cleaned segment `offset` may fall in a gap (its records were compacted away): the
    // log then ends at `offset` itself, before the next batch or after the segment's last one.
    let (cut_position, new_end) = match found {
        Some(stored) => (stored.position, stored.base_offset.min(offset)),
        None if segment_base != active_base => (size_bytes, offset),
        None => return Ok(log.with_state(|state| *state.next_offset)),
    };
    // The recovery checkpoint may cover bytes about to go: it goes first (made durable by the
    // directory sync below, before any append; open also checks a checkpoint against the file).
    checkpoint::remove(log)
        .await
        .map_err(io_error("removing the recovery checkpoint"))?;
    // Producer snapshots past the cut describe batches about to go (the directory sync below
    // makes their removal durable; open removes any that come back).
    let stale_snapshots = producer_state::list_snapshots(&dir)
        .map_err(io_error("listing producer snapshots"))?
        .into_iter()
        .filter(|snapshot| *snapshot > new_end);
    for snapshot in stale_snapshots {
        log.context()
            .storage
            .remove_file(&producer_state::snapshot_path(&dir, snapshot))
            .await
            .map_err(io_error("removing a producer snapshot"))?;
    }
    log.lower_log_start_to(new_end).await?;
    // Drop later segments and, if the cut is in a sealed segment, make it the active one.
    let (later, old_writer) = log.with_state(|state| {
        let later: Vec<Segment> = state
            .segments
            .split_off(&(segment_base + 1))
            .into_values()
            .collect();
        state.loaded_indexes.retain(|base| *base <= segment_base);
        let old_writer = if segment_base != active_base {
            state.writer.take()
        } else {
            None
        };
        (later, old_writer)
    });
    if let Some(old_writer) = old_writer {
        old_writer
            .close()
            .await
            .map_err(io_error("closing the old active segment"))?;
    }
    let storage = &log.context().storage;
    // Newest first: a failure part way then leaves a shorter but contiguous log, never a
    // missing segment between two that recovery would trust.
    for segment in later.iter().rev() {
        segment
            .paths
            .remove_all(storage.as_ref())
            .await
            .map_err(io_error("deleting a truncated segment"))?;
    }
    let paths = SegmentPaths::new(&dir, segment_base);
    let writer_file = storage
        .open_write(&paths.log)
        .await
        .map_err(io_error("opening the segment to truncate"))?;
    writer_file
        .truncate(cut_position)
        .await
        .map_err(io_error("truncating the segment"))?;
    writer_file
        .sync_data()
        .await
        .map_err(io_error("syncing the truncated segment"))?;
    for path in [&paths.index, &paths.time_index] {
        storage
            .remove_file(path)
            .await
            .map_err(io_error("removing a stale index"))?;
    }
    storage
        .sync_dir(&dir)
        .await
        .map_err(io_error("syncing the directory"))?;
    let scan = segment::scan_segment(
        &file,
        segment_base,
        cut_position,
        log.index_interval_bytes(),
        OffsetGaps::Allow,
    )
    .map_err(io_error("re-indexing the truncated segment"))?;
    // A cleaned segment must not stay active: recovery checks an active segment's offsets for
    // continuity and would cut it at its first gap. Seal it again at the new end.
    let reseal = scan.offset_gaps || scan.next_offset < new_end;
    let tail_block =
        read_tail_block(&file, cut_position).map_err(io_error("reading the tail block"))?;
    let writer = SegmentWriter::new(writer_file, cut_position, tail_block, cut_position);
    log.with_state(|state| {
        let segment = state.segments.get_mut(&segment_base).expect("kept segment");
        segment.size_bytes = cut_position;
        segment.next_offset = new_end;
        segment.max_timestamp = Some(scan.index.max_timestamp());
        segment.index = Some(Rc::new(scan.index));
        segment.first_append_ms = None;
        // The cut segment was synced whole just above.
        *state.durable_point = Some(DurablePoint::of_segment(segment));
        *state.next_offset = new_end;
        *state.durable_end = new_end;
        state.cache.truncate(new_end);
        // The old writer (if it was this segment's) is replaced; it is dropped without a close,
        // which is fine: everything it wrote was synced before the truncation.
        *state.writer = Some(writer);
    });
    // No appends are queued: the producer state is what the remaining batches say.
    let limits = log.config().producer_limits();
    let (producers, _) = log
        .with_state(|state| {
            producer_state::rebuild(&dir, state.segments, new_end, limits, wall_clock_ms(), None)
        })
        .map_err(io_error("rebuilding producer state"))?;
    log.with_state(|state| *state.producers = producers);
    if reseal {
        let mut writer = log
            .with_state(|state| state.writer.take())
            .ok_or_else(|| LogError::Io("truncation left no writer".into()))?;
        let rolled = roll(log, &mut writer).await;
        log.with_state(|state| *state.writer = Some(writer));
        rolled.map_err(io_error("sealing the truncated cleaned segment"))?;
    }
    Ok(new_end)
}
