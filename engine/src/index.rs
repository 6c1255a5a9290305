//! Per-segment sparse offset and time indexes: in memory while a segment is active, written to
//! `.index` / `.timeindex` files when it is sealed or the log shuts down cleanly.
//!
//! An entry is added for a batch when at least `index_interval_bytes` were appended since the
//! previous entry, so any lookup scans at most about that many bytes of the log.
//!
//! On-disk format (all big-endian):
//! - `.index`: `n` entries of `{relative_offset: u32, position: u32}`, then a 32-byte footer
//!   `{next_offset: i64, size_bytes: u64, max_timestamp: i64, entry_count: u32, crc32c: u32}`,
//!   the CRC covering everything before it. The footer describes the sealed segment whole, so a
//!   sealed segment never has to be scanned to learn its end offset, size or newest timestamp.
//! - `.timeindex`: `m` entries of `{timestamp: i64, relative_offset: u32}`, then
//!   `{entry_count: u32, crc32c: u32}`.
//!
//! A time entry `(t, o)` says every batch before offset `o` in the segment has a max timestamp
//! `<= t`. A lookup for `target` starts scanning at the last entry with `t < target`: no batch
//! before it can hold a timestamp `>= target`.

/// One offset index entry: the batch starting at `base_offset + relative_offset` is at `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Offset relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// One time index entry: all batches before `relative_offset` have max timestamp `<= timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    /// The largest batch max timestamp seen before the entry's batch.
    pub timestamp: i64,
    /// Offset relative to the segment's base offset of the batch the entry points at.
    pub relative_offset: u32,
}

/// What a sealed segment's `.index` footer records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFooter {
    /// The offset after the segment's last batch.
    pub next_offset: i64,
    /// Bytes of batches in the segment file (the file is exactly this long when sealed).
    pub size_bytes: u64,
    /// The largest batch max timestamp in the segment (`-1` when empty).
    pub max_timestamp: i64,
}

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;
const FOOTER_BYTES: usize = 32;

/// The in-memory indexes of one segment.
#[derive(Clone, Debug, Default)]
pub struct SegmentIndex {
    /// Offset entries, relative offsets and positions strictly increasing.
    pub offsets: Vec<OffsetEntry>,
    /// Time entries, timestamps and relative offsets strictly increasing.
    pub times: Vec<TimeEntry>,
    bytes_since_entry: u64,
    max_timestamp: i64,
}

/// Why an index file was rejected (it is then rebuilt from the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// Length not a whole number of entries plus trailer.
    #[error("index file has an impossible length {0}")]
    BadLength(usize),
    /// Trailer CRC does not match.
    #[error("index file checksum mismatch")]
    BadChecksum,
    /// Entries out of order or pointing past the segment.
    #[error("index entries are not increasing or point past the segment")]
    BadEntries,
}

impl SegmentIndex {
    /// An empty index for a new segment.
    pub fn new() -> Self {
        Self {
            max_timestamp: -1,
            ..Self::default()
        }
    }

    /// The largest batch max timestamp recorded so far (`-1` when none).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Records a batch appended at `position` with the given relative offset, length and max
    /// timestamp. Batches must be recorded in log order.
    pub fn record_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        batch_bytes: u32,
        batch_max_timestamp: i64,
        index_interval_bytes: u64,
    ) {
        if position > 0 && self.bytes_since_entry >= index_interval_bytes {
            debug_assert!(self.offsets.last().is_none_or(|last| last.relative_offset
                < relative_offset
                && last.position < position));
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            if self
                .times
                .last()
                .is_none_or(|last| last.timestamp < self.max_timestamp)
                && self.max_timestamp >= 0
            {
                self.times.push(TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset,
                });
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(batch_bytes);
        self.max_timestamp = self.max_timestamp.max(batch_max_timestamp);
    }

    /// The last entry at or before `relative_offset` (position 0 / offset 0 when none).
    pub fn lookup_offset(&self, relative_offset: u32) -> OffsetEntry {
        let count = self
            .offsets
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        match count {
            0 => OffsetEntry {
                relative_offset: 0,
                position: 0,
            },
            n => self.offsets[n - 1],
        }
    }

    /// The last entry whose position is at or before `position`.
    pub fn lookup_position(&self, position: u32) -> OffsetEntry {
        let count = self
            .offsets
            .partition_point(|entry| entry.position <= position);
        match count {
            0 => OffsetEntry {
                relative_offset: 0,
                position: 0,
            },
            n => self.offsets[n - 1],
        }
    }

    /// Where to start scanning for the first batch holding a timestamp `>= target`: the
    /// relative offset of the last time entry below the target (0 when none).
    pub fn lookup_time(&self, target_timestamp: i64) -> u32 {
        let count = self
            .times
            .partition_point(|entry| entry.timestamp < target_timestamp);
        match count {
            0 => 0,
            n => self.times[n - 1].relative_offset,
        }
    }

    /// Drops entries at or after `relative_offset` / `position` (log truncation). The max
    /// timestamp becomes `max_timestamp_below`, which the caller recomputes by scanning.
    pub fn truncate(&mut self, relative_offset: u32, max_timestamp_below: i64) {
        self.offsets
            .retain(|entry| entry.relative_offset < relative_offset);
        self.times
            .retain(|entry| entry.relative_offset < relative_offset);
        self.max_timestamp = max_timestamp_below;
        self.bytes_since_entry = 0;
    }

    /// Serializes the `.index` file with its footer.
    pub fn encode_offsets(&self, footer: &SegmentFooter) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES + FOOTER_BYTES);
        for entry in &self.offsets {
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
            out.extend_from_slice(&entry.position.to_be_bytes());
        }
        out.extend_from_slice(&footer.next_offset.to_be_bytes());
        out.extend_from_slice(&footer.size_bytes.to_be_bytes());
        out.extend_from_slice(&footer.max_timestamp.to_be_bytes());
        let entry_count = u32::try_from(self.offsets.len()).expect("index entries fit u32");
        out.extend_from_slice(&entry_count.to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Serializes the `.timeindex` file.
    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES + 8);
        for entry in &self.times {
            out.extend_from_slice(&entry.timestamp.to_be_bytes());
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        let entry_count = u32::try_from(self.times.len()).expect("time entries fit u32");
        out.extend_from_slice(&entry_count.to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses and checks both files of a sealed segment whose base offset is `base_offset`.
    pub fn decode(
        base_offset: i64,
        offsets_file: &[u8],
        times_file: &[u8],
    ) -> Result<(SegmentIndex, SegmentFooter), IndexError> {
        let footer = decode_footer(offsets_file)?;
        let entries_bytes = &offsets_file[..offsets_file.len() - FOOTER_BYTES];
        let offsets: Vec<OffsetEntry> = entries_bytes
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|chunk| OffsetEntry {
                relative_offset: be_u32(&chunk[0..4]),
                position: be_u32(&chunk[4..8]),
            })
            .collect();
        let span = footer.next_offset - base_offset;
        let increasing = offsets.windows(2).all(|pair| {
            pair[0].relative_offset < pair[1].relative_offset && pair[0].position < pair[1].position
        });
        let in_bounds = offsets.iter().all(|entry| {
            i64::from(entry.relative_offset) < span && u64::from(entry.position) < footer.size_bytes
        });
        if span < 0 || !increasing || !in_bounds {
            return Err(IndexError::BadEntries);
        }
        let times = decode_times(times_file, span)?;
        // The two files carry separate CRCs, so a `.timeindex` of another segment (or an older
        // one of this) passes its own checks; bind it to the `.index`: `record_batch` only adds a
        // time entry together with an offset entry at the same offset, and every time entry is
        // a max timestamp seen in the segment. Without this a lookup could start past a match.
        let mut offset_entries = offsets.iter().map(|entry| entry.relative_offset);
        let times_match_offsets = times.iter().all(|time| {
            time.timestamp <= footer.max_timestamp
                && offset_entries.any(|relative| relative == time.relative_offset)
        });
        if !times_match_offsets {
            return Err(IndexError::BadEntries);
        }
        let index = SegmentIndex {
            offsets,
            times,
            bytes_since_entry: 0,
            max_timestamp: footer.max_timestamp,
        };
        Ok((index, footer))
    }
}

/// Reads and checks just the footer of a `.index` file.
pub fn decode_footer(offsets_file: &[u8]) -> Result<SegmentFooter, IndexError> {
    let length = offsets_file.len();
    if length < FOOTER_BYTES || !(length - FOOTER_BYTES).is_multiple_of(OFFSET_ENTRY_BYTES) {
        return Err(IndexError::BadLength(length));
    }
    let (body, crc_bytes) = offsets_file.split_at(length - 4);
    if crc32c::crc32c(body) != be_u32(crc_bytes) {
        return Err(IndexError::BadChecksum);
    }
    let footer_start = length - FOOTER_BYTES;
    let footer = &offsets_file[footer_start..];
    let entry_count = be_u32(&footer[24..28]) as usize;
    if entry_count * OFFSET_ENTRY_BYTES != footer_start {
        return Err(IndexError::BadLength(length));
    }
    Ok(SegmentFooter {
        next_offset: be_i64(&footer[0..8]),
        size_bytes: be_i64(&footer[8..16]) as u64,
        max_timestamp: be_i64(&footer[16..24]),
    })
}

fn decode_times(times_file: &[u8], span: i64) -> Result<Vec<TimeEntry>, IndexError> {
    let length = times_file.len();
    if length < 8 || !(length - 8).is_multiple_of(TIME_ENTRY_BYTES) {
        return Err(IndexError::BadLength(length));
    }
    let (checked, crc_bytes) = times_file.split_at(length - 4);
    if crc32c::crc32c(checked) != be_u32(crc_bytes) {
        return Err(IndexError::BadChecksum);
    }
    let (body, count_bytes) = checked.split_at(length - 8);
    if be_u32(count_bytes) as usize * TIME_ENTRY_BYTES != body.len() {
        return Err(IndexError::BadLength(length));
    }
    let times: Vec<TimeEntry> = body
        .chunks_exact(TIME_ENTRY_BYTES)
        .map(|chunk| TimeEntry {
            timestamp: be_i64(&chunk[0..8]),
            relative_offset: be_u32(&chunk[8..12]),
        })
        .collect();
    let increasing = times.windows(2).all(|pair| {
        pair[0].timestamp < pair[1].timestamp && pair[0].relative_offset < pair[1].relative_offset
    });
    if !increasing
        || times
            .iter()
            .any(|entry| i64::from(entry.relative_offset) >= span)
    {
        return Err(IndexError::BadEntries);
    }
    Ok(times)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("4 bytes"))
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_index() -> SegmentIndex {
        let mut index = SegmentIndex::new();
        // 10 batches of 1000 bytes, 5 records each, timestamps 100, 110, ...
        for batch in 0..10u32 {
            index.record_batch(
                batch * 5,
                batch * 1000,
                1000,
                100 + i64::from(batch) * 10,
                2500,
            );
        }
        index
    }

    #[test]
    fn sparse_entries_every_interval() {
        let index = sample_index();
        // An entry once at least 2500 bytes accumulated: at batches 3, 6 and 9.
        let positions: Vec<u32> = index.offsets.iter().map(|entry| entry.position).collect();
        assert_eq!(positions, vec![3000, 6000, 9000]);
        assert_eq!(index.max_timestamp(), 190);
    }

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let index = sample_index();
        assert_eq!(index.lookup_offset(0).position, 0);
        assert_eq!(index.lookup_offset(14).position, 0);
        assert_eq!(index.lookup_offset(15).position, 3000);
        assert_eq!(index.lookup_offset(29).position, 3000);
        assert_eq!(index.lookup_offset(30).position, 6000);
        assert_eq!(index.lookup_offset(10_000).position, 9000);
        assert_eq!(index.lookup_position(6500).relative_offset, 30);
    }

    #[test]
    fn time_lookup_never_skips_a_match() {
        let index = sample_index();
        // Entries: (120, 15), (150, 30), (180, 45).
        assert_eq!(index.lookup_time(50), 0);
        assert_eq!(index.lookup_time(120), 0);
        assert_eq!(index.lookup_time(121), 15);
        assert_eq!(index.lookup_time(181), 45);
    }

    #[test]
    fn encode_decode_round_trip_and_corruption_detected() {
        let index = sample_index();
        let footer = SegmentFooter {
            next_offset: 1050,
            size_bytes: 10_000,
            max_timestamp: 190,
        };
        let offsets_file = index.encode_offsets(&footer);
        let times_file = index.encode_times();
        let (decoded, decoded_footer) =
            SegmentIndex::decode(1000, &offsets_file, &times_file).expect("valid index");
        assert_eq!(decoded.offsets, index.offsets);
        assert_eq!(decoded.times, index.times);
        assert_eq!(decoded_footer, footer);

        for cut in 0..offsets_file.len() {
            assert!(SegmentIndex::decode(1000, &offsets_file[..cut], &times_file).is_err());
        }
        for cut in 0..times_file.len() {
            assert!(SegmentIndex::decode(1000, &offsets_file, &times_file[..cut]).is_err());
        }
        for byte in 0..offsets_file.len() {
            let mut flipped = offsets_file.clone();
            flipped[byte] ^= 0x10;
            assert!(SegmentIndex::decode(1000, &flipped, &times_file).is_err());
        }
    }

    #[test]
    fn truncate_drops_later_entries() {
        let mut index = sample_index();
        index.truncate(30, 140);
        assert_eq!(index.offsets.len(), 1);
        assert_eq!(index.max_timestamp(), 140);
        assert!(index.times.iter().all(|entry| entry.relative_offset < 30));
    }
}
