//! The cleaner's view of one stored record batch: which keys it holds (for the offset map) and
//! what is left of it once superseded records and expired tombstones are removed. Pure functions
//! over bytes; the orchestration (which segments, the swap on disk) is in `compact.rs`.
//!
//! Rules (Kafka's, KIP-534 for tombstones):
//! - A record is removed only when the offset map names a newer record with the same key, or it
//!   is a tombstone (null value) whose batch's delete horizon has passed.
//! - A batch that keeps any record keeps its base offset, `lastOffsetDelta`, producer id, epoch
//!   and base sequence; only `recordsCount`, the records, the max timestamp (CreateTime) and the
//!   CRC change. Compressed batches are decompressed, filtered and compressed again with the same
//!   codec (snappy in the same framing).
//! - A batch left empty is dropped, unless it is its producer's last batch: then an empty batch
//!   (header only, no codec) is kept so the producer state can be rebuilt from the log.
//! - Tombstones get a delete horizon (now + `delete.retention.ms`) the first time the cleaner
//!   passes over them: the batch's `baseTimestamp` becomes the horizon, attribute bit 6 is set and
//!   every record's timestamp delta is rewritten so the record timestamps do not change.
//! - Control and transactional batches are copied as they are and never enter the offset map:
//!   which transactions committed is not known here yet (transactions come later). So is a batch
//!   whose records cannot be read (a decompression error, a bomb past the budget, malformed
//!   records): keeping data is always safe, removing it is not.

use crate::batch::{
    self, BatchHeader, Compression, Cursor, ATTR_CODEC_MASK, ATTR_CONTROL, ATTR_DELETE_HORIZON,
    ATTR_LOG_APPEND_TIME, ATTR_TRANSACTIONAL, BATCH_HEADER_LEN, BATCH_OVERHEAD, CRC_START,
};
use crate::codec::{self, SnappyFraming};
use std::borrow::Cow;
use std::collections::HashMap;

/// Bytes charged per key in the offset map on top of the key: the hash slot, the boxed key's
/// pointer and length, and the offset.
pub(crate) const MAP_ENTRY_OVERHEAD_BYTES: u64 = 64;
/// Smallest possible record: length, attributes, timestamp delta, offset delta, key length,
/// value length, header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;

/// Key → offset of its newest record in the part of the log mapped so far, within a memory
/// budget (Kafka's `log.cleaner.dedupe.buffer.size`). Keys are kept whole, not hashed: a hash
/// collision would silently remove another key's latest record.
pub(crate) struct OffsetMap {
    entries: HashMap<Box<[u8]>, i64>,
    charged_bytes: u64,
    budget_bytes: u64,
}

impl OffsetMap {
    pub(crate) fn new(budget_bytes: u64) -> Self {
        Self {
            entries: HashMap::new(),
            charged_bytes: 0,
            budget_bytes,
        }
    }

    /// The newest offset recorded for `key`.
    pub(crate) fn newest(&self, key: &[u8]) -> Option<i64> {
        self.entries.get(key).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    fn charged_bytes(&self) -> u64 {
        self.charged_bytes
    }

    /// Whether keys costing `batch_bytes` more fit. An empty map takes one batch whatever its
    /// size, so cleaning always progresses.
    fn fits(&self, batch_bytes: u64) -> bool {
        self.entries.is_empty()
            || self.charged_bytes.saturating_add(batch_bytes) <= self.budget_bytes
    }

    fn insert(&mut self, key: &[u8], offset: i64) {
        match self.entries.get_mut(key) {
            Some(newest) => *newest = (*newest).max(offset),
            None => {
                self.charged_bytes += key.len() as u64 + MAP_ENTRY_OVERHEAD_BYTES;
                self.entries.insert(key.into(), offset);
            }
        }
    }
}

/// What [`map_batch`] did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MapOutcome {
    /// Its keyed records are in the map.
    Mapped,
    /// It takes no part (control, transactional, or unreadable: the reason).
    Skipped(Option<String>),
    /// Its keys do not fit: the map ends before this batch.
    Full,
}

/// Records the keys of one stored batch in `map` (the whole batch or nothing).
pub(crate) fn map_batch(map: &mut OffsetMap, batch: &[u8], decompressed_max: usize) -> MapOutcome {
    let Some(header) = BatchHeader::parse(batch) else {
        return MapOutcome::Skipped(Some("batch shorter than its header".into()));
    };
    if has(header, ATTR_CONTROL) || has(header, ATTR_TRANSACTIONAL) {
        return MapOutcome::Skipped(None);
    }
    let section = match records_section(batch, header, decompressed_max) {
        Ok(section) => section,
        Err(reason) => return MapOutcome::Skipped(Some(reason)),
    };
    let records = match parse_records(&section, header) {
        Ok(records) => records,
        Err(reason) => return MapOutcome::Skipped(Some(reason.into())),
    };
    let charge: u64 = records
        .iter()
        .filter_map(|record| record.key)
        .map(|key| key.len() as u64 + MAP_ENTRY_OVERHEAD_BYTES)
        .sum();
    if !map.fits(charge) {
        return MapOutcome::Full;
    }
    let base_offset = header.base_offset.get();
    for record in &records {
        if let Some(key) = record.key {
            map.insert(key, base_offset + i64::from(record.offset_delta));
        }
    }
    MapOutcome::Mapped
}

/// Whether a batch holds a record without a key: Kafka refuses those on a compacted topic
/// (INVALID_RECORD), since the cleaner could never tell them apart. Decompresses within
/// `decompressed_max`; an unreadable records section is an error.
pub fn has_keyless_record(batch: &[u8], decompressed_max: usize) -> Result<bool, String> {
    let header = BatchHeader::parse(batch).ok_or("batch shorter than its header")?;
    if has(header, ATTR_CONTROL) {
        return Ok(false);
    }
    let section = records_section(batch, header, decompressed_max)?;
    let records = parse_records(&section, header)?;
    Ok(records.iter().any(|record| record.key.is_none()))
}

/// What the cleaner needs to decide about records.
pub(crate) struct FilterRules<'a> {
    /// Newest offset per key in the mapped (dirty) part of the log.
    pub map: &'a OffsetMap,
    /// Batches ending below this are in the cleaned section: their tombstones get a horizon.
    pub clean_end: i64,
    /// Wall-clock now.
    pub now_ms: i64,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// Largest records section decompressed for one batch.
    pub decompressed_max: usize,
}

/// What happens to a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Copied as it is.
    Keep,
    /// Removed (every record superseded or expired, and not its producer's last batch).
    Drop,
    /// Replaced by these bytes (same base offset and offset range).
    Replace(Vec<u8>),
}

/// The outcome of [`filter_batch`].
#[derive(Debug)]
pub(crate) struct Filtered {
    pub verdict: Verdict,
    /// Records removed because a newer one with the same key exists.
    pub superseded: u64,
    /// Tombstones removed because their delete horizon passed.
    pub expired_tombstones: u64,
    /// The delete horizon of tombstones this batch still holds.
    pub pending_horizon: Option<i64>,
    /// Why the batch was kept unread, if it was.
    pub unreadable: Option<String>,
}

impl Filtered {
    fn keep(unreadable: Option<String>) -> Self {
        Self {
            verdict: Verdict::Keep,
            superseded: 0,
            expired_tombstones: 0,
            pending_horizon: None,
            unreadable,
        }
    }
}

/// Applies the module's rules to one stored batch. `producer_last_batch`: the batch is the last
/// one its producer id appended (an empty remainder is kept, not dropped).
pub(crate) fn filter_batch(
    batch: &[u8],
    rules: &FilterRules<'_>,
    producer_last_batch: bool,
) -> Filtered {
    let Some(header) = BatchHeader::parse(batch) else {
        return Filtered::keep(Some("batch shorter than its header".into()));
    };
    if has(header, ATTR_CONTROL) || has(header, ATTR_TRANSACTIONAL) {
        return Filtered::keep(None);
    }
    let section = match records_section(batch, header, rules.decompressed_max) {
        Ok(section) => section,
        Err(reason) => return Filtered::keep(Some(reason)),
    };
    let records = match parse_records(&section, header) {
        Ok(records) => records,
        Err(reason) => return Filtered::keep(Some(reason.into())),
    };
    let base_offset = header.base_offset.get();
    let last_offset = base_offset + i64::from(header.last_offset_delta.get());
    let horizon = has(header, ATTR_DELETE_HORIZON).then(|| header.base_timestamp.get());
    let horizon_passed = horizon.is_some_and(|horizon| rules.now_ms >= horizon);
    let mut retained = Vec::with_capacity(records.len());
    let (mut superseded, mut expired_tombstones) = (0u64, 0u64);
    for record in &records {
        let offset = base_offset + i64::from(record.offset_delta);
        let newer_exists = record
            .key
            .and_then(|key| rules.map.newest(key))
            .is_some_and(|newest| newest > offset);
        if newer_exists {
            superseded += 1;
        } else if record.value_is_null && horizon_passed {
            expired_tombstones += 1;
        } else {
            retained.push(record);
        }
    }
    let holds_tombstones = retained.iter().any(|record| record.value_is_null);
    let in_cleaned_section = last_offset < rules.clean_end;
    let new_horizon = (holds_tombstones && horizon.is_none() && in_cleaned_section)
        .then(|| rules.now_ms.saturating_add(rules.delete_retention_ms));
    let pending_horizon = if holds_tombstones {
        horizon.or(new_horizon)
    } else {
        None
    };
    let mut outcome = Filtered {
        verdict: Verdict::Keep,
        superseded,
        expired_tombstones,
        pending_horizon,
        unreadable: None,
    };
    if records.is_empty() && !producer_last_batch {
        // An empty batch kept for a producer that has appended since.
        outcome.verdict = Verdict::Drop;
        return outcome;
    }
    if retained.len() == records.len() && new_horizon.is_none() {
        return outcome;
    }
    if retained.is_empty() && !producer_last_batch {
        outcome.verdict = Verdict::Drop;
        return outcome;
    }
    match rebuild(batch, header, &retained, new_horizon) {
        Ok(bytes) => outcome.verdict = Verdict::Replace(bytes),
        Err(reason) => return Filtered::keep(Some(reason)),
    }
    outcome
}

/// One record of a batch, as the cleaner sees it.
#[derive(Debug)]
struct RecordRef<'a> {
    /// The whole record, length prefix included.
    raw: &'a [u8],
    attributes: u8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value_is_null: bool,
    /// From the key length to the end of the record (key, value, headers).
    tail: &'a [u8],
}

fn has(header: &BatchHeader, attribute: i16) -> bool {
    header.attributes.get() & attribute != 0
}

/// The batch's records section, decompressed within `decompressed_max`.
fn records_section<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    decompressed_max: usize,
) -> Result<Cow<'a, [u8]>, String> {
    let total_len = usize::try_from(header.batch_length.get())
        .ok()
        .and_then(|length| length.checked_add(BATCH_OVERHEAD))
        .filter(|total| *total >= BATCH_HEADER_LEN && *total <= batch.len())
        .ok_or("batch length out of range")?;
    let section = &batch[BATCH_HEADER_LEN..total_len];
    let codec = header.attributes.get() & ATTR_CODEC_MASK;
    match Compression::from_codec(codec) {
        Some(Compression::None) => Ok(Cow::Borrowed(section)),
        // Kafka's empty batches carry no codec, but a thinned batch may be empty and compressed.
        Some(_) if header.records_count.get() == 0 && section.is_empty() => {
            Ok(Cow::Borrowed(section))
        }
        Some(compression) => codec::decompress(compression, section, decompressed_max)
            .map(Cow::Owned)
            .map_err(|error| format!("records unreadable: {error}")),
        None => Err(format!("unknown codec {codec}")),
    }
}

/// Splits a records section into its `recordsCount` records; every length is checked against
/// what remains, and the section must hold exactly that many records.
fn parse_records<'a>(
    section: &'a [u8],
    header: &BatchHeader,
) -> Result<Vec<RecordRef<'a>>, &'static str> {
    const MALFORMED: &str = "malformed records";
    let count = usize::try_from(header.records_count.get()).map_err(|_| MALFORMED)?;
    if count.saturating_mul(RECORD_BYTES_MIN) > section.len() {
        return Err(MALFORMED);
    }
    let last_offset_delta = header.last_offset_delta.get();
    let mut cursor = Cursor::new(section);
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let start = cursor.pos;
        let length =
            usize::try_from(cursor.varint().map_err(|_| MALFORMED)?).map_err(|_| MALFORMED)?;
        let body = cursor.take(length).map_err(|_| MALFORMED)?;
        let raw = &section[start..cursor.pos];
        records.push(parse_record(raw, body, last_offset_delta).ok_or(MALFORMED)?);
    }
    if cursor.remaining() != 0 {
        return Err(MALFORMED);
    }
    Ok(records)
}

fn parse_record<'a>(
    raw: &'a [u8],
    body: &'a [u8],
    last_offset_delta: i32,
) -> Option<RecordRef<'a>> {
    let mut cursor = Cursor::new(body);
    let attributes = *cursor.take(1).ok()?.first()?;
    let timestamp_delta = cursor.varlong().ok()?;
    let offset_delta = cursor.varint().ok()?;
    if !(0..=last_offset_delta).contains(&offset_delta) {
        return None;
    }
    let tail = &body[cursor.pos..];
    let key = nullable_bytes(&mut cursor)?;
    let value_is_null = nullable_bytes(&mut cursor)?.is_none();
    Some(RecordRef {
        raw,
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value_is_null,
        tail,
    })
}

fn nullable_bytes<'a>(cursor: &mut Cursor<'a>) -> Option<Option<&'a [u8]>> {
    let length = cursor.varint().ok()?;
    if length == -1 {
        return Some(None);
    }
    let length = usize::try_from(length).ok()?;
    cursor.take(length).ok().map(Some)
}

/// The batch with only `retained` records (maybe none: an empty batch without a codec), a new
/// delete horizon when given, and a fresh CRC.
fn rebuild(
    batch: &[u8],
    header: &BatchHeader,
    retained: &[&RecordRef<'_>],
    new_horizon: Option<i64>,
) -> Result<Vec<u8>, String> {
    let old_base_timestamp = header.base_timestamp.get();
    let base_timestamp = new_horizon.unwrap_or(old_base_timestamp);
    let mut section = Vec::new();
    let mut body = Vec::new();
    for record in retained {
        if new_horizon.is_none() {
            section.extend_from_slice(record.raw);
            continue;
        }
        // Same absolute timestamp, relative to the horizon now held in baseTimestamp.
        let timestamp = old_base_timestamp.wrapping_add(record.timestamp_delta);
        body.clear();
        body.push(record.attributes);
        batch::put_varlong(&mut body, timestamp.wrapping_sub(base_timestamp));
        batch::put_varlong(&mut body, i64::from(record.offset_delta));
        body.extend_from_slice(record.tail);
        batch::put_varlong(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    let mut attributes = header.attributes.get();
    if new_horizon.is_some() {
        attributes |= ATTR_DELETE_HORIZON;
    }
    let codec_bits = attributes & ATTR_CODEC_MASK;
    let compression = Compression::from_codec(codec_bits).ok_or("unknown codec")?;
    if retained.is_empty() {
        attributes &= !ATTR_CODEC_MASK;
    } else if compression != Compression::None {
        let original = &batch[BATCH_HEADER_LEN..];
        section = codec::compress(compression, &section, SnappyFraming::of(original))
            .map_err(|error| format!("re-compressing: {error}"))?;
    }
    let max_timestamp = if has(header, ATTR_LOG_APPEND_TIME) || retained.is_empty() {
        header.max_timestamp.get()
    } else {
        retained
            .iter()
            .map(|record| old_base_timestamp.wrapping_add(record.timestamp_delta))
            .max()
            .unwrap_or(header.max_timestamp.get())
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + section.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&section);
    let batch_length =
        i32::try_from(out.len() - BATCH_OVERHEAD).map_err(|_| "rebuilt batch over 2 GiB")?;
    let records_count = i32::try_from(retained.len()).map_err(|_| "too many records")?;
    let new_header = batch::header_mut(&mut out);
    new_header.batch_length.set(batch_length);
    new_header.attributes.set(attributes);
    new_header.base_timestamp.set(base_timestamp);
    new_header.max_timestamp.set(max_timestamp);
    new_header.records_count.set(records_count);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    batch::header_mut(&mut out).crc.set(crc);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, build_batch_with_producer, scan_batch, stamp_base_offset};

    fn stored(records: &[batch::BuildRecord<'_>], base_offset: i64) -> Vec<u8> {
        let mut bytes = build_batch(records);
        stamp_base_offset(&mut bytes, base_offset);
        bytes
    }

    fn compressed(batch: &[u8], compression: Compression, framing: SnappyFraming) -> Vec<u8> {
        let section = codec::compress(compression, &batch[BATCH_HEADER_LEN..], framing).unwrap();
        let mut out = batch[..BATCH_HEADER_LEN].to_vec();
        out.extend_from_slice(&section);
        let length = (out.len() - BATCH_OVERHEAD) as i32;
        let header = batch::header_mut(&mut out);
        header.batch_length.set(length);
        header
            .attributes
            .set(header.attributes.get() | codec::codec_bits(compression));
        let crc = crc32c::crc32c(&out[CRC_START..]);
        batch::header_mut(&mut out).crc.set(crc);
        out
    }

    /// (offset, key, value, timestamp) of one record.
    type Contents = (i64, Option<Vec<u8>>, Option<Vec<u8>>, i64);

    /// Every record of a batch, decompressing it.
    fn contents(batch: &[u8]) -> Vec<Contents> {
        let header = BatchHeader::parse(batch).unwrap();
        let section = records_section(batch, header, 1 << 30).unwrap();
        parse_records(&section, header)
            .unwrap()
            .iter()
            .map(|record| {
                let mut cursor = Cursor::new(record.tail);
                nullable_bytes(&mut cursor).unwrap();
                let value = nullable_bytes(&mut cursor).unwrap().map(<[u8]>::to_vec);
                (
                    header.base_offset.get() + i64::from(record.offset_delta),
                    record.key.map(<[u8]>::to_vec),
                    value,
                    header.base_timestamp.get() + record.timestamp_delta,
                )
            })
            .collect()
    }

    fn rules(map: &OffsetMap, clean_end: i64, now_ms: i64) -> FilterRules<'_> {
        FilterRules {
            map,
            clean_end,
            now_ms,
            delete_retention_ms: 1000,
            decompressed_max: 1 << 20,
        }
    }

    #[test]
    fn superseded_records_go_and_offsets_stay() {
        let batch = stored(
            &[
                (Some(b"a"), Some(b"1"), 100),
                (Some(b"b"), Some(b"2"), 101),
                (Some(b"a"), Some(b"3"), 102),
                (None, Some(b"keyless"), 103),
            ],
            40,
        );
        let mut map = OffsetMap::new(1 << 20);
        assert_eq!(map_batch(&mut map, &batch, 1 << 20), MapOutcome::Mapped);
        assert_eq!((map.newest(b"a"), map.newest(b"b")), (Some(42), Some(41)));
        let filtered = filter_batch(&batch, &rules(&map, 44, 0), false);
        let Verdict::Replace(bytes) = filtered.verdict else {
            panic!("expected a rewrite, got {:?}", filtered.verdict);
        };
        assert_eq!(filtered.superseded, 1);
        let info = scan_batch(&bytes, 1 << 20).unwrap().unwrap();
        assert_eq!((info.records_count, info.last_offset_delta), (3, 3));
        assert_eq!(batch::read_base_offset(&bytes), 40);
        let offsets: Vec<i64> = contents(&bytes).iter().map(|record| record.0).collect();
        assert_eq!(offsets, vec![41, 42, 43]);
        assert_eq!(info.max_timestamp, 103);
        // Nothing newer: the batch is copied as it is.
        let unchanged = filter_batch(&bytes, &rules(&map, 44, 0), false);
        assert_eq!(unchanged.verdict, Verdict::Keep);
    }

    #[test]
    fn every_codec_is_filtered_and_re_encoded_with_the_same_codec() {
        let plain = stored(
            &[(Some(b"k"), Some(b"old"), 5), (Some(b"k"), Some(b"new"), 6)],
            7,
        );
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            for framing in [SnappyFraming::Raw, SnappyFraming::Xerial] {
                let batch = compressed(&plain, compression, framing);
                let mut map = OffsetMap::new(1 << 20);
                assert_eq!(map_batch(&mut map, &batch, 1 << 20), MapOutcome::Mapped);
                let filtered = filter_batch(&batch, &rules(&map, 9, 0), false);
                let Verdict::Replace(bytes) = filtered.verdict else {
                    panic!("{compression:?}: expected a rewrite");
                };
                let header = BatchHeader::parse(&bytes).unwrap();
                assert_eq!(
                    header.attributes.get() & ATTR_CODEC_MASK,
                    codec::codec_bits(compression)
                );
                if compression == Compression::Snappy {
                    assert_eq!(SnappyFraming::of(&bytes[BATCH_HEADER_LEN..]), framing);
                }
                assert_eq!(
                    contents(&bytes),
                    vec![(8, Some(b"k".to_vec()), Some(b"new".to_vec()), 6)]
                );
            }
        }
    }

    #[test]
    fn tombstones_get_a_horizon_then_expire() {
        let batch = stored(
            &[(Some(b"gone"), None, 500), (Some(b"x"), Some(b"v"), 510)],
            0,
        );
        let map = OffsetMap::new(1 << 20);
        // Above the cleaned section: untouched.
        assert_eq!(
            filter_batch(&batch, &rules(&map, 1, 10_000), false).verdict,
            Verdict::Keep
        );
        let first = filter_batch(&batch, &rules(&map, 2, 10_000), false);
        assert_eq!(first.pending_horizon, Some(11_000));
        let Verdict::Replace(marked) = first.verdict else {
            panic!("expected the horizon to be written");
        };
        let header = BatchHeader::parse(&marked).unwrap();
        assert!(has(header, ATTR_DELETE_HORIZON));
        assert_eq!(header.base_timestamp.get(), 11_000);
        // Record timestamps are unchanged.
        assert_eq!(contents(&marked), contents(&batch));
        // Before the horizon: kept as it is; at it: the tombstone goes, the live record stays.
        assert_eq!(
            filter_batch(&marked, &rules(&map, 2, 10_999), false).verdict,
            Verdict::Keep
        );
        let expired = filter_batch(&marked, &rules(&map, 2, 11_000), false);
        assert_eq!(expired.expired_tombstones, 1);
        let Verdict::Replace(after) = expired.verdict else {
            panic!("expected the tombstone to go");
        };
        assert_eq!(
            contents(&after),
            vec![(1, Some(b"x".to_vec()), Some(b"v".to_vec()), 510)]
        );
        scan_batch(&after, 1 << 20).unwrap().unwrap();
    }

    #[test]
    fn an_emptied_batch_is_dropped_unless_it_is_its_producers_last() {
        let mut batch = build_batch_with_producer(&[(Some(b"k"), Some(b"v"), 1)], 7, 0, 3);
        stamp_base_offset(&mut batch, 10);
        let newer = stored(&[(Some(b"k"), Some(b"w"), 2)], 11);
        let mut map = OffsetMap::new(1 << 20);
        map_batch(&mut map, &batch, 1 << 20);
        map_batch(&mut map, &newer, 1 << 20);
        assert_eq!(
            filter_batch(&batch, &rules(&map, 12, 0), false).verdict,
            Verdict::Drop
        );
        let Verdict::Replace(empty) = filter_batch(&batch, &rules(&map, 12, 0), true).verdict
        else {
            panic!("expected an empty batch");
        };
        let info = scan_batch(&empty, 1 << 20).unwrap().unwrap();
        assert_eq!(info.records_count, 0);
        assert_eq!(info.last_offset_delta, 0);
        assert_eq!(
            (info.producer_id, info.producer_epoch, info.base_sequence),
            (7, 0, 3)
        );
        assert_eq!(info.compression, Compression::None);
    }

    #[test]
    fn control_transactional_and_unreadable_batches_are_kept_and_not_mapped() {
        let plain = stored(&[(Some(b"k"), Some(b"v"), 1)], 0);
        let mut transactional = build_batch_with_producer(&[(Some(b"k"), Some(b"v"), 1)], 1, 0, 0);
        let header = batch::header_mut(&mut transactional);
        header.attributes.set(ATTR_TRANSACTIONAL);
        let crc = crc32c::crc32c(&transactional[CRC_START..]);
        batch::header_mut(&mut transactional).crc.set(crc);
        // A gzip batch whose records section is garbage (a valid CRC over it).
        let mut garbage = plain[..BATCH_HEADER_LEN].to_vec();
        garbage.extend_from_slice(b"not gzip at all");
        let length = (garbage.len() - BATCH_OVERHEAD) as i32;
        batch::header_mut(&mut garbage).batch_length.set(length);
        batch::header_mut(&mut garbage).attributes.set(1);
        let crc = crc32c::crc32c(&garbage[CRC_START..]);
        batch::header_mut(&mut garbage).crc.set(crc);
        let mut map = OffsetMap::new(1 << 20);
        assert_eq!(
            map_batch(&mut map, &transactional, 1 << 20),
            MapOutcome::Skipped(None)
        );
        assert!(matches!(
            map_batch(&mut map, &garbage, 1 << 20),
            MapOutcome::Skipped(Some(_))
        ));
        assert_eq!(map.len(), 0);
        let newer = stored(&[(Some(b"k"), Some(b"w"), 1)], 5);
        map_batch(&mut map, &newer, 1 << 20);
        assert_eq!(
            filter_batch(&transactional, &rules(&map, 9, 0), false).verdict,
            Verdict::Keep
        );
        let kept = filter_batch(&garbage, &rules(&map, 9, 0), false);
        assert_eq!(kept.verdict, Verdict::Keep);
        assert!(kept.unreadable.is_some());
    }

    #[test]
    fn keyless_records_are_found_in_plain_and_compressed_batches() {
        let keyed = stored(&[(Some(b"k"), Some(b"v"), 1), (Some(b"j"), None, 1)], 0);
        let keyless = stored(&[(Some(b"k"), Some(b"v"), 1), (None, Some(b"v"), 1)], 0);
        assert_eq!(has_keyless_record(&keyed, 1 << 20), Ok(false));
        assert_eq!(has_keyless_record(&keyless, 1 << 20), Ok(true));
        let compressed = compressed(&keyless, Compression::Gzip, SnappyFraming::Raw);
        assert_eq!(has_keyless_record(&compressed, 1 << 20), Ok(true));
        assert!(
            has_keyless_record(&compressed, 10).is_err(),
            "over the bound"
        );
    }

    #[test]
    fn a_decompression_bomb_is_kept_unread() {
        let values = vec![0u8; 200_000];
        let plain = stored(&[(Some(b"k"), Some(&values), 1)], 0);
        let bomb = compressed(&plain, Compression::Zstd, SnappyFraming::Raw);
        let mut map = OffsetMap::new(1 << 20);
        assert!(matches!(
            map_batch(&mut map, &bomb, 100_000),
            MapOutcome::Skipped(Some(_))
        ));
    }

    #[test]
    fn the_map_stops_at_its_budget_but_always_takes_one_batch() {
        let first = stored(&[(Some(&[1u8; 100]), Some(b"v"), 1)], 0);
        let second = stored(&[(Some(&[2u8; 100]), Some(b"v"), 1)], 1);
        let mut map = OffsetMap::new(10);
        assert_eq!(map_batch(&mut map, &first, 1 << 20), MapOutcome::Mapped);
        assert_eq!(map_batch(&mut map, &second, 1 << 20), MapOutcome::Full);
        assert_eq!(map.len(), 1);
        assert_eq!(map.charged_bytes(), 100 + MAP_ENTRY_OVERHEAD_BYTES);
    }
}
