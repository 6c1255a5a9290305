//! Segments: one `.log` file of batches named by its base offset, with its indexes, and the scans
//! that recovery, index rebuilds and reads use. Owned by the log's shard.

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN, BATCH_OVERHEAD};
use crate::index::{SegmentFooter, SegmentIndex};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// The largest batch recovery and reads accept from disk, whatever `max.message.bytes` is now.
pub const STORED_BATCH_BYTES_MAX: usize = 256 << 20;

/// File names of one segment.
#[derive(Clone, Debug)]
pub struct SegmentPaths {
    /// The batches.
    pub log: PathBuf,
    /// The sparse offset index with the sealed footer.
    pub index: PathBuf,
    /// The time index.
    pub time_index: PathBuf,
}

impl SegmentPaths {
    /// Paths of the segment with `base_offset` in `dir` (20-digit zero-padded names, as Kafka).
    pub fn new(dir: &Path, base_offset: i64) -> Self {
        let stem = format!("{base_offset:020}");
        Self {
            log: dir.join(format!("{stem}.log")),
            index: dir.join(format!("{stem}.index")),
            time_index: dir.join(format!("{stem}.timeindex")),
        }
    }

    /// Removes the segment's files, log first (a file already gone is not an error).
    pub async fn remove_all(&self, storage: &dyn crate::io::Storage) -> io::Result<()> {
        for path in [&self.log, &self.index, &self.time_index] {
            storage.remove_file(path).await?;
        }
        Ok(())
    }

    /// Parses a `.log` file name back into its base offset.
    pub fn parse_log_name(name: &str) -> Option<i64> {
        let stem = name.strip_suffix(".log")?;
        if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        stem.parse().ok()
    }
}

/// One segment as the log sees it.
#[derive(Debug)]
pub struct Segment {
    /// Offset of its first batch.
    pub base_offset: i64,
    /// Its files.
    pub paths: SegmentPaths,
    /// Read-only buffered descriptor shared with read plans (their lease).
    pub read_file: Arc<File>,
    /// Durable bytes of batches (what readers may see).
    pub size_bytes: u64,
    /// Offset after its last durable batch.
    pub next_offset: i64,
    /// Largest batch max timestamp, once known (always known for the active segment).
    pub max_timestamp: Option<i64>,
    /// Indexes: always present for the active segment, loaded on demand for sealed ones.
    pub index: Option<Rc<SegmentIndex>>,
    /// Wall-clock ms of the first append into this segment (for `segment.ms`), if any this run.
    pub first_append_ms: Option<u64>,
}

impl Segment {
    /// The footer describing this segment once sealed.
    pub fn footer(&self) -> SegmentFooter {
        SegmentFooter {
            next_offset: self.next_offset,
            size_bytes: self.size_bytes,
            max_timestamp: self.max_timestamp.unwrap_or(-1),
        }
    }
}

/// What a full scan of a segment found.
#[derive(Debug)]
pub struct ScanResult {
    /// Bytes of valid batches from position 0.
    pub valid_bytes: u64,
    /// Offset after the last valid batch.
    pub next_offset: i64,
    /// Rebuilt indexes of the valid prefix.
    pub index: SegmentIndex,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped_by: Option<String>,
    /// The scan stopped at a zero batch length: preallocated space after the data, the normal
    /// end of an active segment that was not closed cleanly.
    pub stopped_at_zeros: bool,
    /// Some batch started above where the previous one ended (only with [`OffsetGaps::Allow`]).
    pub offset_gaps: bool,
    /// Bytes read from the file.
    pub read_bytes: u64,
}

/// Where a scan starts: a batch boundary, the offset the batch there must have, and the index
/// of everything before it (a recovery checkpoint's trusted prefix, or nothing).
#[derive(Debug)]
pub struct ScanStart {
    /// File position of the first batch to read.
    pub position: u64,
    /// Base offset the batch at `position` must have.
    pub next_offset: i64,
    /// Indexes of the batches before `position`; the scan appends to it.
    pub index: SegmentIndex,
}

impl ScanStart {
    /// The start of a segment with base offset `base_offset`.
    pub fn segment_start(base_offset: i64) -> Self {
        Self {
            position: 0,
            next_offset: base_offset,
            index: SegmentIndex::new(),
        }
    }
}

/// Whether a scan accepts a batch that starts above where the previous one ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetGaps {
    /// Every batch must start where the previous one ended: an appended segment, where a base
    /// offset that does not continue (it lies outside the CRC) means a damaged or misplaced batch.
    Reject,
    /// Offsets must increase but may skip: a sealed segment the cleaner rewrote, which dropped
    /// whole batches (see `compact.rs`).
    Allow,
}

/// Reads every batch of a segment file, checking length, CRC and offset order (see
/// [`OffsetGaps`]), and rebuilds its indexes. Stops at the first torn, zero-filled or invalid
/// batch; reads `file_bytes` at most.
pub fn scan_segment(
    file: &File,
    base_offset: i64,
    file_bytes: u64,
    index_interval_bytes: u64,
    gaps: OffsetGaps,
) -> io::Result<ScanResult> {
    let start = ScanStart::segment_start(base_offset);
    scan_segment_from(
        file,
        base_offset,
        start,
        file_bytes,
        index_interval_bytes,
        gaps,
    )
}

/// [`scan_segment`] from `start` instead of the segment's first byte: the bytes before
/// `start.position` are neither read nor checked.
pub fn scan_segment_from(
    file: &File,
    base_offset: i64,
    start: ScanStart,
    file_bytes: u64,
    index_interval_bytes: u64,
    gaps: OffsetGaps,
) -> io::Result<ScanResult> {
    // Reads start small (a checkpointed open scans a short tail, then preallocated zeros) and
    // double up to the largest chunk.
    const FIRST_CHUNK_BYTES: usize = 64 << 10;
    const CHUNK_BYTES: usize = 1 << 20;
    assert!(start.position <= file_bytes && start.next_offset >= base_offset);
    let mut chunk_bytes_now = FIRST_CHUNK_BYTES;
    let mut index = start.index;
    let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut buffer_position = start.position; // file position of buffer[0]
    let mut cursor = 0usize; // index into buffer of the next batch
    let mut expected_offset = start.next_offset;
    let mut stopped_at_zeros = false;
    let mut offset_gaps = false;
    let mut read_bytes = 0u64;
    let stopped_by = loop {
        let position = buffer_position + cursor as u64;
        let available = &buffer[cursor..];
        match batch::scan_batch(available, STORED_BATCH_BYTES_MAX) {
            Ok(Some(info)) => {
                let found_offset = batch::read_base_offset(available);
                let in_order = match gaps {
                    OffsetGaps::Reject => found_offset == expected_offset,
                    OffsetGaps::Allow => found_offset >= expected_offset,
                };
                if !in_order {
                    break Some(format!(
                        "batch at position {position} has base offset {found_offset}, expected {expected_offset}"
                    ));
                }
                offset_gaps |= found_offset != expected_offset;
                let relative_offset = u32::try_from(found_offset - base_offset)
                    .map_err(|_| io::Error::other("segment spans more than 2^32 offsets"))?;
                let relative_position = u32::try_from(position)
                    .map_err(|_| io::Error::other("segment larger than 4 GiB"))?;
                index.record_batch(
                    relative_offset,
                    relative_position,
                    info.total_len as u32,
                    info.max_timestamp,
                    index_interval_bytes,
                );
                expected_offset = found_offset + i64::from(info.last_offset_delta) + 1;
                cursor += info.total_len;
            }
            Ok(None) => {
                // Need more bytes: slide the window and read on, or stop at end of file.
                if position >= file_bytes {
                    break None;
                }
                let wanted = batch_total_len_hint(available).max(chunk_bytes_now);
                chunk_bytes_now = (chunk_bytes_now * 2).min(CHUNK_BYTES);
                buffer.drain(..cursor);
                buffer_position += cursor as u64;
                cursor = 0;
                let file_left = file_bytes - (buffer_position + buffer.len() as u64);
                if file_left == 0 {
                    break Some(format!("torn batch at position {position}"));
                }
                let chunk_bytes = (wanted as u64).min(file_left) as usize;
                let filled = buffer.len();
                buffer.resize(filled + chunk_bytes, 0);
                file.read_exact_at(&mut buffer[filled..], buffer_position + filled as u64)?;
                read_bytes += chunk_bytes as u64;
            }
            Err(error) => {
                stopped_at_zeros = error == batch::BatchError::InvalidLength(0);
                break Some(format!("invalid batch at position {position}: {error}"));
            }
        }
    };
    Ok(ScanResult {
        valid_bytes: buffer_position + cursor as u64,
        next_offset: expected_offset,
        index,
        stopped_by,
        stopped_at_zeros,
        offset_gaps,
        read_bytes,
    })
}

fn batch_total_len_hint(available: &[u8]) -> usize {
    if available.len() < BATCH_OVERHEAD {
        return 0;
    }
    let length = i32::from_be_bytes(available[8..12].try_into().expect("4 bytes"));
    usize::try_from(length)
        .unwrap_or(0)
        .min(STORED_BATCH_BYTES_MAX)
        + BATCH_OVERHEAD
}

/// The header facts a read needs about one stored batch.
#[derive(Clone, Copy, Debug)]
pub struct StoredBatch {
    /// File position.
    pub position: u64,
    /// Base offset.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Total bytes including the 12-byte prefix.
    pub total_bytes: u64,
    /// Max timestamp.
    pub max_timestamp: i64,
}

/// Reads the header of the batch at `position` (below `end`, the durable size).
pub fn read_batch_header(file: &File, position: u64, end: u64) -> io::Result<StoredBatch> {
    if position + BATCH_HEADER_LEN as u64 > end {
        return Err(io::Error::other(format!(
            "batch header at {position} runs past the durable end {end}"
        )));
    }
    let mut header_bytes = [0u8; BATCH_HEADER_LEN];
    file.read_exact_at(&mut header_bytes, position)?;
    let header = BatchHeader::parse(&header_bytes).expect("61 bytes");
    let batch_length = header.batch_length.get();
    let total_bytes = u64::try_from(batch_length).unwrap_or(0) + BATCH_OVERHEAD as u64;
    if batch_length < (BATCH_HEADER_LEN - BATCH_OVERHEAD) as i32 || position + total_bytes > end {
        return Err(io::Error::other(format!(
            "stored batch at {position} has impossible length {batch_length}"
        )));
    }
    let base_offset = header.base_offset.get();
    Ok(StoredBatch {
        position,
        base_offset,
        last_offset: base_offset + i64::from(header.last_offset_delta.get()),
        total_bytes,
        max_timestamp: header.max_timestamp.get(),
    })
}

/// Walks batch headers from `position` until the batch containing `offset` (or ending past
/// `end`). Returns that batch, or `None` when `offset` lies at or after `end`.
pub fn find_batch(
    file: &File,
    mut position: u64,
    end: u64,
    offset: i64,
) -> io::Result<Option<StoredBatch>> {
    while position < end {
        let stored = read_batch_header(file, position, end)?;
        if stored.last_offset >= offset {
            return Ok(Some(stored));
        }
        position += stored.total_bytes;
    }
    Ok(None)
}
