//! Record batch v2: the unit a client produces, the log stores and a consumer fetches.
//!
//! This module owns the byte layout of a batch (see `kafka-compat.md`, "Record batch v2") and the
//! checks a batch must pass before the log accepts it. It knows nothing about segments, offsets
//! already assigned, or the network: every function here is a pure function over a byte slice, so
//! it may run on any shard or thread, and none of them allocates except the test-support builders.
//!
//! Only the header is interpreted on the hot path (validation is a header parse plus one CRC-32C
//! pass); records are parsed only by [`first_offset_with_timestamp`] and only for uncompressed
//! batches.

use core::mem::offset_of;

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of the fixed batch header, from `baseOffset` through `recordsCount`.
pub const BATCH_HEADER_LEN: usize = 61;

/// Bytes in front of the part that `batchLength` counts: `baseOffset` (8) and `batchLength` (4).
pub const BATCH_OVERHEAD: usize = 12;

/// Smallest legal `batchLength`: a header with an empty records section.
const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_LEN - BATCH_OVERHEAD) as i32;

/// The only record batch format this broker accepts.
const MAGIC_V2: i8 = 2;

/// The CRC covers everything from `attributes` to the end of the batch.
pub(crate) const CRC_START: usize = offset_of!(BatchHeader, attributes);

pub(crate) const ATTR_CODEC_MASK: i16 = 0x07;
pub(crate) const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTR_CONTROL: i16 = 0x20;
/// KIP-534: the cleaner has set this batch's delete horizon, stored in `baseTimestamp`.
pub const ATTR_DELETE_HORIZON: i16 = 0x40;

/// `producerId`, `producerEpoch` and `baseSequence` of a batch sent without idempotence.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;

/// What Java clients write into `partitionLeaderEpoch`; the broker stamps the real value.
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// A zigzag varint (i32) takes at most 5 bytes, a varlong (i64) at most 10.
const VARINT_BYTES_MAX: usize = 5;
const VARLONG_BYTES_MAX: usize = 10;

/// Kafka error codes that batch validation can produce.
pub mod error_code {
    /// The batch failed its CRC check.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// The batch is larger than `max.message.bytes`.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// The batch names a compression codec this broker does not know.
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    /// The batch is malformed in a way other than its CRC.
    pub const INVALID_RECORD: i16 = 87;
}

/// The fixed 61-byte header of a record batch v2, read in place from the wire or disk bytes.
///
/// All multi-byte fields are big-endian and the struct has alignment 1, so it can be viewed over
/// any byte slice with [`BatchHeader::parse`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BatchHeader {
    /// Offset of the first record; 0 from clients, assigned by the broker (outside the CRC).
    pub base_offset: I64,
    /// Bytes after this field, i.e. the batch is `12 + batch_length` bytes long.
    pub batch_length: I32,
    /// Leader epoch when the batch was appended; stamped by the broker (outside the CRC).
    pub partition_leader_epoch: I32,
    /// Format version; must be 2.
    pub magic: i8,
    /// CRC-32C (Castagnoli) of the bytes from `attributes` to the end of the batch.
    pub crc: U32,
    /// Bits 0-2 codec, bit 3 LogAppendTime, bit 4 transactional, bit 5 control.
    pub attributes: I16,
    /// Offset delta of the last record; `records_count - 1` for a batch fresh from a producer.
    pub last_offset_delta: I32,
    /// Timestamp of the first record; record timestamps are deltas from it.
    pub base_timestamp: I64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: I64,
    /// Idempotent producer id, or -1.
    pub producer_id: I64,
    /// Epoch of `producer_id`, or -1.
    pub producer_epoch: I16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: I32,
    /// Number of records in the batch.
    pub records_count: I32,
}

// The layout is the wire format: check it against kafka-compat.md at compile time.
const _: () = {
    assert!(core::mem::size_of::<BatchHeader>() == BATCH_HEADER_LEN);
    assert!(core::mem::align_of::<BatchHeader>() == 1);
    assert!(offset_of!(BatchHeader, base_offset) == 0);
    assert!(offset_of!(BatchHeader, batch_length) == 8);
    assert!(offset_of!(BatchHeader, partition_leader_epoch) == 12);
    assert!(offset_of!(BatchHeader, magic) == 16);
    assert!(offset_of!(BatchHeader, crc) == 17);
    assert!(offset_of!(BatchHeader, attributes) == 21);
    assert!(offset_of!(BatchHeader, last_offset_delta) == 23);
    assert!(offset_of!(BatchHeader, base_timestamp) == 27);
    assert!(offset_of!(BatchHeader, max_timestamp) == 35);
    assert!(offset_of!(BatchHeader, producer_id) == 43);
    assert!(offset_of!(BatchHeader, producer_epoch) == 51);
    assert!(offset_of!(BatchHeader, base_sequence) == 53);
    assert!(offset_of!(BatchHeader, records_count) == 57);
    assert!(BATCH_OVERHEAD == offset_of!(BatchHeader, partition_leader_epoch));
};

impl BatchHeader {
    /// Views the first 61 bytes of `buf` as a header; `None` if `buf` is shorter than that.
    pub fn parse(buf: &[u8]) -> Option<&BatchHeader> {
        BatchHeader::ref_from_prefix(buf)
            .ok()
            .map(|(header, _rest)| header)
    }

    /// Batch length including the 12 bytes `batch_length` does not count, if `batch_length` is
    /// at least the header's own size.
    fn total_len(&self) -> Result<usize, BatchError> {
        let batch_length = self.batch_length.get();
        if batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::InvalidLength(batch_length));
        }
        Ok(total_len_of(batch_length))
    }

    fn compression(&self) -> Result<Compression, BatchError> {
        let codec = self.attributes.get() & ATTR_CODEC_MASK;
        Compression::from_codec(codec).ok_or(BatchError::InvalidCompression(codec))
    }

    fn has_attribute(&self, mask: i16) -> bool {
        self.attributes.get() & mask != 0
    }
}

/// Compression codec of a batch (attribute bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Codec 0.
    None,
    /// Codec 1.
    Gzip,
    /// Codec 2; either xerial or raw framing.
    Snappy,
    /// Codec 3; LZ4 frame format.
    Lz4,
    /// Codec 4.
    Zstd,
}

impl Compression {
    /// The codec named by attribute bits 0-2, or `None` for the unused values 5-7.
    pub fn from_codec(codec: i16) -> Option<Compression> {
        match codec {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Plain copy of what the log needs from a validated batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Whole batch in bytes: `12 + batch_length`.
    pub total_len: usize,
    /// Number of records.
    pub records_count: i32,
    /// Offset delta of the last record; the batch occupies offsets `base..=base + this`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp as written in the header.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Epoch of `producer_id`, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Codec of the records section.
    pub compression: Compression,
    /// Timestamps are the broker's append time rather than the producer's create time.
    pub log_append_time: bool,
    /// The batch belongs to a transaction.
    pub transactional: bool,
    /// The batch holds a control record (transaction marker), written only by brokers.
    pub control: bool,
}

/// Limits a batch is validated against.
#[derive(Clone, Copy, Debug)]
pub struct ValidationLimits {
    /// `max.message.bytes`: the largest accepted batch, compared to [`BatchInfo::total_len`].
    pub max_batch_bytes: usize,
    /// Control batches are accepted: `false` for client Produce, `true` for recovery and
    /// replication, where the broker itself wrote them.
    pub allow_control: bool,
}

impl Default for ValidationLimits {
    /// Kafka's defaults for a client Produce: `max.message.bytes` = 1048588, no control batches.
    fn default() -> Self {
        ValidationLimits {
            max_batch_bytes: 1_048_588,
            allow_control: false,
        }
    }
}

/// Why a byte range is not an acceptable record batch v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer is shorter than the header, than `12 + batchLength`, or (while reading records)
    /// than a record or varint claims.
    #[error("batch truncated: have {have} bytes, need {need}")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes the batch or record claims.
        need: usize,
    },
    /// The buffer holds more than exactly one batch.
    #[error("{extra} bytes after the end of the batch")]
    TrailingBytes {
        /// Bytes after `12 + batchLength`.
        extra: usize,
    },
    /// `batchLength` is negative or smaller than the header (49).
    #[error("invalid batch length {0}")]
    InvalidLength(i32),
    /// `magic` is not 2.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// The stored CRC-32C does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes from `attributes` to the end.
        computed: u32,
    },
    /// The batch is larger than `max.message.bytes`.
    #[error("batch of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Whole batch in bytes.
        size: usize,
        /// The limit it was checked against.
        max: usize,
    },
    /// `recordsCount <= 0`, `lastOffsetDelta + 1 != recordsCount`, or the records section does
    /// not hold `recordsCount` well-formed records (reported only where records are parsed).
    #[error("invalid record count {records_count} with last offset delta {last_offset_delta}")]
    InvalidRecordCount {
        /// `recordsCount` from the header.
        records_count: i32,
        /// `lastOffsetDelta` from the header.
        last_offset_delta: i32,
    },
    /// A client sent a control batch; only brokers write those.
    #[error("control batch from a client")]
    ControlBatchFromClient,
    /// The codec bits name codec 5, 6 or 7.
    #[error("invalid compression codec {0}")]
    InvalidCompression(i16),
    /// `producerId`, `producerEpoch`, `baseSequence` and the transactional bit disagree.
    #[error("inconsistent producer id, epoch and sequence")]
    InvalidProducerFields,
}

impl BatchError {
    /// The Kafka error code a Produce response carries for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            BatchError::CrcMismatch { .. } => error_code::CORRUPT_MESSAGE,
            BatchError::TooLarge { .. } => error_code::MESSAGE_TOO_LARGE,
            BatchError::InvalidCompression(_) => error_code::UNSUPPORTED_COMPRESSION_TYPE,
            BatchError::Truncated { .. }
            | BatchError::TrailingBytes { .. }
            | BatchError::InvalidLength(_)
            | BatchError::UnsupportedMagic(_)
            | BatchError::InvalidRecordCount { .. }
            | BatchError::ControlBatchFromClient
            | BatchError::InvalidProducerFields => error_code::INVALID_RECORD,
        }
    }
}

/// Validates exactly one record batch v2 occupying all of `buf`.
///
/// Checks, in this order: header length; `batchLength >= 49` and `12 + batchLength == buf.len()`;
/// size against `limits.max_batch_bytes`; magic 2; CRC-32C; codec; record count against
/// `lastOffsetDelta`; control bit; producer fields. Only the header is interpreted, records are
/// not parsed. Never panics and never allocates.
pub fn validate_batch(buf: &[u8], limits: &ValidationLimits) -> Result<BatchInfo, BatchError> {
    validate(buf, limits, CountRule::Exact)
}

/// How `recordsCount` must relate to `lastOffsetDelta`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CountRule {
    /// A batch fresh from a producer: `recordsCount == lastOffsetDelta + 1 > 0`.
    Exact,
    /// A stored batch, which the cleaner may have thinned (even to no records) while keeping its
    /// offset range: `0 <= recordsCount <= lastOffsetDelta + 1`.
    AtMost,
}

fn validate(
    buf: &[u8],
    limits: &ValidationLimits,
    count_rule: CountRule,
) -> Result<BatchInfo, BatchError> {
    let header = BatchHeader::parse(buf).ok_or(BatchError::Truncated {
        have: buf.len(),
        need: BATCH_HEADER_LEN,
    })?;
    let total_len = header.total_len()?;
    if buf.len() < total_len {
        return Err(BatchError::Truncated {
            have: buf.len(),
            need: total_len,
        });
    }
    if buf.len() > total_len {
        return Err(BatchError::TrailingBytes {
            extra: buf.len() - total_len,
        });
    }
    if total_len > limits.max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: total_len,
            max: limits.max_batch_bytes,
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    check_crc(header, buf)?;
    let compression = header.compression()?;
    check_record_count(header, count_rule)?;
    let control = header.has_attribute(ATTR_CONTROL);
    if control && !limits.allow_control {
        return Err(BatchError::ControlBatchFromClient);
    }
    check_producer_fields(header)?;
    Ok(BatchInfo {
        total_len,
        records_count: header.records_count.get(),
        last_offset_delta: header.last_offset_delta.get(),
        base_timestamp: header.base_timestamp.get(),
        max_timestamp: header.max_timestamp.get(),
        producer_id: header.producer_id.get(),
        producer_epoch: header.producer_epoch.get(),
        base_sequence: header.base_sequence.get(),
        compression,
        log_append_time: header.has_attribute(ATTR_LOG_APPEND_TIME),
        transactional: header.has_attribute(ATTR_TRANSACTIONAL),
        control,
    })
}

/// Reads the batch that starts at `buf[0]` during recovery; `buf` may continue past it.
///
/// A stored batch may hold fewer records than its offset range (the cleaner removed some, or
/// all: Kafka keeps such empty batches for producer state), so `recordsCount` may be anything
/// from 0 to `lastOffsetDelta + 1`.
///
/// Returns `Ok(Some(info))` for a complete valid batch (control batches allowed), `Ok(None)` when
/// `buf` ends before the batch does (a torn tail: shorter than 12 bytes, or than
/// `12 + batchLength`), and `Err` for an invalid batch. A `batchLength` of 0, as found in
/// zero-filled preallocated space, is `Err(InvalidLength(0))`. A `batchLength` implying more than
/// `max_batch_bytes` is `Err(TooLarge)` even if `buf` is shorter, so garbage lengths are not
/// mistaken for a torn tail; pass a bound no smaller than any batch the log ever accepted.
pub fn scan_batch(buf: &[u8], max_batch_bytes: usize) -> Result<Option<BatchInfo>, BatchError> {
    let Some(prefix) = buf.first_chunk::<BATCH_OVERHEAD>() else {
        return Ok(None);
    };
    let [_, _, _, _, _, _, _, _, length @ ..] = *prefix;
    let batch_length = i32::from_be_bytes(length);
    if batch_length < BATCH_LENGTH_MIN {
        return Err(BatchError::InvalidLength(batch_length));
    }
    let total_len = total_len_of(batch_length);
    if total_len > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: total_len,
            max: max_batch_bytes,
        });
    }
    let Some(batch) = buf.get(..total_len) else {
        return Ok(None);
    };
    let limits = ValidationLimits {
        max_batch_bytes,
        allow_control: true,
    };
    validate(batch, &limits, CountRule::AtMost).map(Some)
}

/// Writes the broker-assigned base offset. It lies outside the CRC, so the CRC stays valid.
///
/// Panics if `buf` is shorter than a batch header.
pub fn stamp_base_offset(buf: &mut [u8], base_offset: i64) {
    header_mut(buf).base_offset.set(base_offset);
}

/// Writes the partition leader epoch. It lies outside the CRC, so the CRC stays valid.
///
/// Panics if `buf` is shorter than a batch header.
pub fn stamp_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    header_mut(buf).partition_leader_epoch.set(epoch);
}

/// Turns a validated batch into a LogAppendTime batch: sets attribute bit 3, writes
/// `append_time_ms` as its max timestamp and recomputes the CRC (both fields lie inside it).
///
/// Panics if `buf` is shorter than a batch header.
pub fn set_log_append_time(buf: &mut [u8], append_time_ms: i64) {
    let header = header_mut(buf);
    header.attributes.set(header.attributes.get() | 0x08);
    header.max_timestamp.set(append_time_ms);
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    header_mut(buf).crc.set(crc);
}

/// Reads the base offset of the batch starting at `buf[0]`.
///
/// Panics if `buf` is shorter than 8 bytes.
pub fn read_base_offset(buf: &[u8]) -> i64 {
    let Some(bytes) = buf.first_chunk::<8>() else {
        panic!("base offset needs 8 bytes, have {}", buf.len());
    };
    i64::from_be_bytes(*bytes)
}

/// For ListOffsets by timestamp: the offset of the first record whose timestamp is `>= target_ms`.
///
/// `buf` is a whole batch (bytes after it are ignored) that was validated when appended, and
/// `base_offset` the base offset assigned to it. Returns `Ok(None)` if no record qualifies.
///
/// * LogAppendTime batches: every record's timestamp is `max_timestamp`.
/// * Compressed batches are not decompressed here (a lookup must stay cheap), so the answer is
///   batch-granular: `base_offset` if `max_timestamp >= target_ms`. That never skips a qualifying
///   record, but may point at earlier records of the same batch.
/// * Uncompressed batches: records are parsed up to the first match. A malformed records section
///   gives `Err(Truncated)` (a record or varint runs past the end) or `Err(InvalidRecordCount)`
///   (anything else). The loop runs at most `records_count` times and consumes at least one byte
///   per iteration; varints are at most 10 bytes; every length is checked against what remains.
pub fn first_offset_with_timestamp(
    buf: &[u8],
    base_offset: i64,
    target_ms: i64,
) -> Result<Option<i64>, BatchError> {
    first_record_with_timestamp(buf, base_offset, target_ms)
        .map(|found| found.map(|(offset, _)| offset))
}

/// Like [`first_offset_with_timestamp`], also returning that record's timestamp (the batch's max
/// timestamp where the search is batch-granular: compressed or LogAppendTime batches).
pub fn first_record_with_timestamp(
    buf: &[u8],
    base_offset: i64,
    target_ms: i64,
) -> Result<Option<(i64, i64)>, BatchError> {
    let header = BatchHeader::parse(buf).ok_or(BatchError::Truncated {
        have: buf.len(),
        need: BATCH_HEADER_LEN,
    })?;
    let total_len = header.total_len()?;
    let Some(records) = buf.get(BATCH_HEADER_LEN..total_len) else {
        return Err(BatchError::Truncated {
            have: buf.len(),
            need: total_len,
        });
    };
    let batch_granular = header.has_attribute(ATTR_LOG_APPEND_TIME)
        || header.attributes.get() & ATTR_CODEC_MASK != 0;
    if batch_granular {
        let max_timestamp = header.max_timestamp.get();
        return Ok((max_timestamp >= target_ms).then_some((base_offset, max_timestamp)));
    }
    let malformed = BatchError::InvalidRecordCount {
        records_count: header.records_count.get(),
        last_offset_delta: header.last_offset_delta.get(),
    };
    if header.records_count.get() <= 0 {
        return Err(malformed);
    }
    let mut cursor = Cursor::new(records);
    for _ in 0..header.records_count.get() {
        let (timestamp_delta, offset_delta) = cursor
            .record_prefix()
            .map_err(|error| error.into_batch_error(&malformed))?;
        if !(0..=header.last_offset_delta.get()).contains(&offset_delta) {
            return Err(malformed);
        }
        let timestamp = header.base_timestamp.get().saturating_add(timestamp_delta);
        if timestamp >= target_ms {
            return Ok(Some((
                base_offset.saturating_add(i64::from(offset_delta)),
                timestamp,
            )));
        }
    }
    Ok(None)
}

/// One record for [`build_batch`]: `(key, value, timestamp_ms)`; `None` is a null key or value.
pub type BuildRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Builds an uncompressed record batch v2 from `(key, value, timestamp_ms)` records, with producer
/// fields -1, base offset 0 and a valid CRC. Used by tests, benches and the load generator.
///
/// Panics if `records` is empty (a batch must hold at least one record).
pub fn build_batch(records: &[BuildRecord<'_>]) -> Vec<u8> {
    build_batch_with_producer(records, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE)
}

/// Like [`build_batch`], with the given idempotent producer fields.
///
/// Records carry no headers; the base timestamp is the first record's, as Kafka clients write it.
/// Panics if `records` is empty or holds more than `i32::MAX` records.
pub fn build_batch_with_producer(
    records: &[BuildRecord<'_>],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    assert!(
        !records.is_empty(),
        "a record batch needs at least one record"
    );
    let records_count = i32::try_from(records.len()).expect("at most i32::MAX records");
    let base_timestamp = records[0].2;
    let max_timestamp = records
        .iter()
        .map(|record| record.2)
        .max()
        .unwrap_or(base_timestamp);

    let mut out = vec![0u8; BATCH_HEADER_LEN];
    let mut record = Vec::new();
    for (offset_delta, &(key, value, timestamp)) in (0..records_count).zip(records) {
        record.clear();
        encode_record(
            &mut record,
            offset_delta,
            timestamp.wrapping_sub(base_timestamp),
            key,
            value,
        );
        put_varlong(&mut out, record.len() as i64);
        out.extend_from_slice(&record);
    }

    let batch_length = i32::try_from(out.len() - BATCH_OVERHEAD).expect("batch under 2 GiB");
    let header = BatchHeader {
        base_offset: I64::new(0),
        batch_length: I32::new(batch_length),
        partition_leader_epoch: I32::new(NO_PARTITION_LEADER_EPOCH),
        magic: MAGIC_V2,
        crc: U32::new(0),
        attributes: I16::new(0),
        last_offset_delta: I32::new(records_count - 1),
        base_timestamp: I64::new(base_timestamp),
        max_timestamp: I64::new(max_timestamp),
        producer_id: I64::new(producer_id),
        producer_epoch: I16::new(producer_epoch),
        base_sequence: I32::new(base_sequence),
        records_count: I32::new(records_count),
    };
    out[..BATCH_HEADER_LEN].copy_from_slice(header.as_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    header_mut(&mut out).crc.set(crc);
    out
}

/// `12 + batch_length` for a `batch_length` already checked to be at least 49.
fn total_len_of(batch_length: i32) -> usize {
    debug_assert!(batch_length >= BATCH_LENGTH_MIN);
    // i32::MAX + 12 fits in usize on every platform Rust supports with 32+ bit pointers.
    BATCH_OVERHEAD + batch_length.unsigned_abs() as usize
}

pub(crate) fn header_mut(buf: &mut [u8]) -> &mut BatchHeader {
    assert!(
        buf.len() >= BATCH_HEADER_LEN,
        "batch header needs {BATCH_HEADER_LEN} bytes, have {}",
        buf.len()
    );
    match BatchHeader::mut_from_prefix(buf) {
        Ok((header, _rest)) => header,
        Err(_) => unreachable!("length asserted above and alignment is 1"),
    }
}

fn check_crc(header: &BatchHeader, buf: &[u8]) -> Result<(), BatchError> {
    let stored = header.crc.get();
    let computed = crc32c::crc32c(&buf[CRC_START..]);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(())
}

fn check_record_count(header: &BatchHeader, rule: CountRule) -> Result<(), BatchError> {
    let records_count = header.records_count.get();
    let last_offset_delta = header.last_offset_delta.get();
    let valid = match rule {
        // records_count > 0 first, so records_count - 1 cannot overflow.
        CountRule::Exact => records_count > 0 && last_offset_delta == records_count - 1,
        CountRule::AtMost => {
            records_count >= 0
                && last_offset_delta >= 0
                && i64::from(records_count) <= i64::from(last_offset_delta) + 1
        }
    };
    if !valid {
        return Err(BatchError::InvalidRecordCount {
            records_count,
            last_offset_delta,
        });
    }
    Ok(())
}

fn check_producer_fields(header: &BatchHeader) -> Result<(), BatchError> {
    let producer_id = header.producer_id.get();
    let has_producer_id = producer_id >= 0;
    let consistent = producer_id >= NO_PRODUCER_ID
        && (!has_producer_id
            || (header.producer_epoch.get() >= 0 && header.base_sequence.get() >= 0))
        && (has_producer_id || !header.has_attribute(ATTR_TRANSACTIONAL));
    if !consistent {
        return Err(BatchError::InvalidProducerFields);
    }
    Ok(())
}

/// Appends one record body (everything after its length varint), with no headers.
fn encode_record(
    out: &mut Vec<u8>,
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    out.push(0); // record attributes, unused by Kafka
    put_varlong(out, timestamp_delta);
    put_varlong(out, i64::from(offset_delta));
    for field in [key, value] {
        match field {
            Some(bytes) => {
                put_varlong(out, bytes.len() as i64);
                out.extend_from_slice(bytes);
            }
            None => put_varlong(out, -1),
        }
    }
    put_varlong(out, 0); // header count
}

/// Appends `value` as a zigzag LEB128 varlong; for values in i32 range this is also the varint.
pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Why reading the records section stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// A varint or record ran past the end of the section.
    Truncated { have: usize, need: usize },
    /// Overlong varint, value out of range, or negative length.
    Malformed,
}

impl RecordError {
    fn into_batch_error(self, malformed: &BatchError) -> BatchError {
        match self {
            RecordError::Truncated { have, need } => BatchError::Truncated { have, need },
            RecordError::Malformed => malformed.clone(),
        }
    }
}

/// Bounds-checked reader over a records section.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Reads one record's timestamp and offset deltas and moves past the whole record.
    fn record_prefix(&mut self) -> Result<(i64, i32), RecordError> {
        let length = self.varint()?;
        let length = usize::try_from(length).map_err(|_| RecordError::Malformed)?;
        let remaining = self.buf.len() - self.pos;
        if length > remaining {
            return Err(RecordError::Truncated {
                have: remaining,
                need: length,
            });
        }
        let body_end = self.pos + length;
        let mut body = Cursor::new(&self.buf[self.pos..body_end]);
        body.skip(1)?; // record attributes
        let timestamp_delta = body.varlong()?;
        let offset_delta = body.varint()?;
        self.pos = body_end;
        Ok((timestamp_delta, offset_delta))
    }

    pub(crate) fn skip(&mut self, count: usize) -> Result<(), RecordError> {
        let remaining = self.buf.len() - self.pos;
        if count > remaining {
            return Err(RecordError::Truncated {
                have: remaining,
                need: count,
            });
        }
        self.pos += count;
        Ok(())
    }

    /// Takes the next `count` bytes.
    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], RecordError> {
        let start = self.pos;
        self.skip(count)?;
        Ok(&self.buf[start..self.pos])
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn varint(&mut self) -> Result<i32, RecordError> {
        let raw = self.unsigned_leb128(VARINT_BYTES_MAX)?;
        let raw = u32::try_from(raw).map_err(|_| RecordError::Malformed)?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    pub(crate) fn varlong(&mut self) -> Result<i64, RecordError> {
        let raw = self.unsigned_leb128(VARLONG_BYTES_MAX)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// Reads at most `bytes_max` (<= 10) bytes; rejects encodings that overflow 64 bits.
    fn unsigned_leb128(&mut self, bytes_max: usize) -> Result<u64, RecordError> {
        debug_assert!(bytes_max <= VARLONG_BYTES_MAX);
        let mut value: u64 = 0;
        for index in 0..bytes_max {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(RecordError::Truncated {
                    have: index,
                    need: index + 1,
                });
            };
            self.pos += 1;
            // The 10th byte holds only bit 63; anything more would be silently dropped.
            if index == VARLONG_BYTES_MAX - 1 && byte > 1 {
                return Err(RecordError::Malformed);
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNCOMPRESSED: &[u8] = include_bytes!("../tests/fixtures/kafka-python-uncompressed.bin");
    const GZIP: &[u8] = include_bytes!("../tests/fixtures/kafka-python-gzip.bin");
    const IDEMPOTENT: &[u8] = include_bytes!("../tests/fixtures/kafka-python-idempotent.bin");
    const TRANSACTIONAL: &[u8] = include_bytes!("../tests/fixtures/kafka-python-transactional.bin");
    const FIXTURES: [&[u8]; 4] = [UNCOMPRESSED, GZIP, IDEMPOTENT, TRANSACTIONAL];

    /// BASE_TIMESTAMP_MS in make_fixtures.py.
    const FIXTURE_BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

    fn client_limits() -> ValidationLimits {
        ValidationLimits::default()
    }

    /// Recomputes the CRC after a test edits bytes it covers, so a later check is the one that fires.
    fn recrc(buf: &mut [u8]) {
        let crc = crc32c::crc32c(&buf[CRC_START..]);
        header_mut(buf).crc.set(crc);
    }

    /// Copies `fixture`, applies `edit` to its header and fixes the CRC.
    fn edited(fixture: &[u8], edit: impl FnOnce(&mut BatchHeader)) -> Vec<u8> {
        let mut buf = fixture.to_vec();
        edit(header_mut(&mut buf));
        recrc(&mut buf);
        buf
    }

    fn expect_error(buf: &[u8], limits: &ValidationLimits, expected: BatchError, code: i16) {
        let error = validate_batch(buf, limits).expect_err("batch must be rejected");
        assert_eq!(error, expected);
        assert_eq!(error.kafka_error_code(), code);
    }

    fn set_attribute_bits(buf: &[u8], bits: i16) -> Vec<u8> {
        edited(buf, |header| {
            header.attributes.set(header.attributes.get() | bits);
        })
    }

    #[test]
    fn header_parse_needs_61_bytes() {
        assert!(BatchHeader::parse(&UNCOMPRESSED[..60]).is_none());
        let header = BatchHeader::parse(&UNCOMPRESSED[..61]).expect("61 bytes are a header");
        assert_eq!(header.magic, 2);
        assert_eq!(total_len_of(header.batch_length.get()), UNCOMPRESSED.len());
    }

    #[test]
    fn kafka_python_uncompressed_validates() {
        let info = validate_batch(UNCOMPRESSED, &client_limits()).expect("valid fixture");
        assert_eq!(
            info,
            BatchInfo {
                total_len: UNCOMPRESSED.len(),
                records_count: 4,
                last_offset_delta: 3,
                base_timestamp: FIXTURE_BASE_TIMESTAMP_MS,
                max_timestamp: FIXTURE_BASE_TIMESTAMP_MS + 30,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                compression: Compression::None,
                log_append_time: false,
                transactional: false,
                control: false,
            }
        );
    }

    #[test]
    fn kafka_python_gzip_validates() {
        let info = validate_batch(GZIP, &client_limits()).expect("valid fixture");
        assert_eq!(info.total_len, GZIP.len());
        assert_eq!(info.records_count, 10);
        assert_eq!(info.last_offset_delta, 9);
        assert_eq!(info.compression, Compression::Gzip);
        assert_eq!(info.base_timestamp, FIXTURE_BASE_TIMESTAMP_MS);
        assert_eq!(info.max_timestamp, FIXTURE_BASE_TIMESTAMP_MS + 18);
        assert_eq!(info.producer_id, -1);
    }

    #[test]
    fn kafka_python_idempotent_validates() {
        let info = validate_batch(IDEMPOTENT, &client_limits()).expect("valid fixture");
        assert_eq!(info.records_count, 2);
        assert_eq!(info.compression, Compression::None);
        assert_eq!(
            (info.producer_id, info.producer_epoch, info.base_sequence),
            (4242, 3, 17)
        );
        assert_eq!(info.max_timestamp, FIXTURE_BASE_TIMESTAMP_MS + 1);
        assert!(!info.transactional);
    }

    #[test]
    fn kafka_python_transactional_validates() {
        let info = validate_batch(TRANSACTIONAL, &client_limits()).expect("valid fixture");
        assert_eq!(info.records_count, 1);
        assert_eq!(
            (info.producer_id, info.producer_epoch, info.base_sequence),
            (7, 0, 0)
        );
        assert!(info.transactional);
        assert!(!info.control);
    }

    #[test]
    fn header_shorter_than_61_is_truncated() {
        let need = BATCH_HEADER_LEN;
        expect_error(
            &UNCOMPRESSED[..60],
            &client_limits(),
            BatchError::Truncated { have: 60, need },
            87,
        );
        expect_error(
            &[],
            &client_limits(),
            BatchError::Truncated { have: 0, need },
            87,
        );
    }

    #[test]
    fn flipped_payload_bit_is_crc_mismatch() {
        let mut buf = UNCOMPRESSED.to_vec();
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        let error = validate_batch(&buf, &client_limits()).expect_err("corrupt");
        let stored = BatchHeader::parse(&buf).map(|header| header.crc.get());
        match error {
            BatchError::CrcMismatch {
                stored: got_stored,
                computed,
            } => {
                assert_eq!(Some(got_stored), stored);
                assert_eq!(computed, crc32c::crc32c(&buf[CRC_START..]));
            }
            other => panic!("expected CrcMismatch, got {other:?}"),
        }
        assert_eq!(error.kafka_error_code(), error_code::CORRUPT_MESSAGE);
    }

    #[test]
    fn flipped_header_bit_inside_crc_is_crc_mismatch() {
        let mut buf = IDEMPOTENT.to_vec();
        buf[offset_of!(BatchHeader, max_timestamp) + 7] ^= 0x80;
        let error = validate_batch(&buf, &client_limits()).expect_err("corrupt");
        assert!(matches!(error, BatchError::CrcMismatch { .. }), "{error:?}");
        assert_eq!(error.kafka_error_code(), 2);
    }

    #[test]
    fn magic_1_is_unsupported() {
        // magic lies outside the CRC, so no recrc is needed for this check to be the one that fires.
        let mut buf = UNCOMPRESSED.to_vec();
        buf[offset_of!(BatchHeader, magic)] = 1;
        expect_error(&buf, &client_limits(), BatchError::UnsupportedMagic(1), 87);
    }

    #[test]
    fn batch_length_below_header_is_invalid() {
        for bad_length in [48, 0, -1, i32::MIN] {
            let mut buf = UNCOMPRESSED.to_vec();
            header_mut(&mut buf).batch_length.set(bad_length);
            expect_error(
                &buf,
                &client_limits(),
                BatchError::InvalidLength(bad_length),
                87,
            );
        }
    }

    #[test]
    fn batch_length_beyond_buffer_is_truncated() {
        let mut buf = UNCOMPRESSED.to_vec();
        let length = header_mut(&mut buf).batch_length.get();
        header_mut(&mut buf).batch_length.set(length + 1);
        let have = buf.len();
        expect_error(
            &buf,
            &client_limits(),
            BatchError::Truncated {
                have,
                need: have + 1,
            },
            87,
        );

        // A batch cut short, as a reader of a partial frame would see it.
        let cut = &UNCOMPRESSED[..UNCOMPRESSED.len() - 10];
        let need = UNCOMPRESSED.len();
        expect_error(
            cut,
            &client_limits(),
            BatchError::Truncated {
                have: cut.len(),
                need,
            },
            87,
        );
    }

    #[test]
    fn shorter_batch_length_leaves_trailing_bytes() {
        let mut buf = UNCOMPRESSED.to_vec();
        let length = header_mut(&mut buf).batch_length.get();
        header_mut(&mut buf).batch_length.set(length - 3);
        expect_error(
            &buf,
            &client_limits(),
            BatchError::TrailingBytes { extra: 3 },
            87,
        );

        let mut two = UNCOMPRESSED.to_vec();
        two.extend_from_slice(IDEMPOTENT);
        let extra = IDEMPOTENT.len();
        expect_error(
            &two,
            &client_limits(),
            BatchError::TrailingBytes { extra },
            87,
        );
    }

    #[test]
    fn stored_batches_may_hold_fewer_records_than_their_offset_range() {
        // What the cleaner leaves: 4 offsets, 2 (or 0) records. A producer may not send it.
        for records_count in [0, 2, 4] {
            let buf = edited(UNCOMPRESSED, |header| {
                header.records_count.set(records_count)
            });
            let info = scan_batch(&buf, 1 << 20)
                .expect("a thinned stored batch is valid")
                .expect("whole");
            assert_eq!(
                (info.records_count, info.last_offset_delta),
                (records_count, 3)
            );
        }
        for records_count in [-1, 5] {
            let buf = edited(UNCOMPRESSED, |header| {
                header.records_count.set(records_count)
            });
            assert_eq!(
                scan_batch(&buf, 1 << 20),
                Err(BatchError::InvalidRecordCount {
                    records_count,
                    last_offset_delta: 3,
                })
            );
        }
        let thinned = edited(UNCOMPRESSED, |header| header.records_count.set(2));
        assert!(validate_batch(&thinned, &client_limits()).is_err());
    }

    #[test]
    fn zero_records_is_invalid() {
        let buf = edited(UNCOMPRESSED, |header| header.records_count.set(0));
        let expected = BatchError::InvalidRecordCount {
            records_count: 0,
            last_offset_delta: 3,
        };
        expect_error(&buf, &client_limits(), expected, 87);

        let buf = edited(UNCOMPRESSED, |header| header.records_count.set(-5));
        assert!(matches!(
            validate_batch(&buf, &client_limits()),
            Err(BatchError::InvalidRecordCount {
                records_count: -5,
                ..
            })
        ));
    }

    #[test]
    fn record_count_must_match_last_offset_delta() {
        let buf = edited(UNCOMPRESSED, |header| header.records_count.set(3));
        let expected = BatchError::InvalidRecordCount {
            records_count: 3,
            last_offset_delta: 3,
        };
        expect_error(&buf, &client_limits(), expected, 87);

        let buf = edited(UNCOMPRESSED, |header| {
            header.last_offset_delta.set(i32::MAX)
        });
        let expected = BatchError::InvalidRecordCount {
            records_count: 4,
            last_offset_delta: i32::MAX,
        };
        expect_error(&buf, &client_limits(), expected, 87);
    }

    #[test]
    fn control_batch_only_when_allowed() {
        let buf = set_attribute_bits(TRANSACTIONAL, ATTR_CONTROL);
        expect_error(
            &buf,
            &client_limits(),
            BatchError::ControlBatchFromClient,
            87,
        );

        let replication = ValidationLimits {
            allow_control: true,
            ..ValidationLimits::default()
        };
        let info = validate_batch(&buf, &replication).expect("control allowed");
        assert!(info.control);
        assert!(info.transactional);
    }

    #[test]
    fn over_max_message_bytes_is_too_large() {
        let size = UNCOMPRESSED.len();
        let tight = ValidationLimits {
            max_batch_bytes: size - 1,
            ..ValidationLimits::default()
        };
        expect_error(
            UNCOMPRESSED,
            &tight,
            BatchError::TooLarge {
                size,
                max: size - 1,
            },
            10,
        );

        let exact = ValidationLimits {
            max_batch_bytes: size,
            ..ValidationLimits::default()
        };
        assert!(validate_batch(UNCOMPRESSED, &exact).is_ok());
    }

    #[test]
    fn size_is_checked_before_crc() {
        let mut buf = UNCOMPRESSED.to_vec();
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        let tight = ValidationLimits {
            max_batch_bytes: 100,
            ..ValidationLimits::default()
        };
        let error = validate_batch(&buf, &tight).expect_err("too large");
        assert!(matches!(error, BatchError::TooLarge { .. }), "{error:?}");
    }

    #[test]
    fn codecs_5_to_7_are_invalid() {
        for codec in [5, 6, 7] {
            let buf = set_attribute_bits(UNCOMPRESSED, codec);
            expect_error(
                &buf,
                &client_limits(),
                BatchError::InvalidCompression(codec),
                76,
            );
        }
        for (codec, compression) in [
            (2, Compression::Snappy),
            (3, Compression::Lz4),
            (4, Compression::Zstd),
        ] {
            let buf = set_attribute_bits(UNCOMPRESSED, codec);
            let info = validate_batch(&buf, &client_limits()).expect("known codec");
            assert_eq!(info.compression, compression);
        }
    }

    #[test]
    fn log_append_time_bit_is_reported() {
        let buf = set_attribute_bits(UNCOMPRESSED, ATTR_LOG_APPEND_TIME);
        let info = validate_batch(&buf, &client_limits()).expect("valid");
        assert!(info.log_append_time);
    }

    #[test]
    fn inconsistent_producer_fields_are_invalid() {
        type HeaderEdit = fn(&mut BatchHeader);
        let cases: [(&[u8], HeaderEdit); 5] = [
            (IDEMPOTENT, |header| header.producer_epoch.set(-1)),
            (IDEMPOTENT, |header| header.base_sequence.set(-1)),
            (UNCOMPRESSED, |header| header.producer_id.set(-2)),
            (UNCOMPRESSED, |header| header.producer_id.set(i64::MIN)),
            // Transactional without a producer id.
            (UNCOMPRESSED, |header| {
                header.attributes.set(ATTR_TRANSACTIONAL)
            }),
        ];
        for (fixture, edit) in cases {
            let buf = edited(fixture, edit);
            expect_error(
                &buf,
                &client_limits(),
                BatchError::InvalidProducerFields,
                87,
            );
        }
    }

    #[test]
    fn error_codes_are_kafkas() {
        assert_eq!(error_code::CORRUPT_MESSAGE, 2);
        assert_eq!(error_code::MESSAGE_TOO_LARGE, 10);
        assert_eq!(error_code::UNSUPPORTED_COMPRESSION_TYPE, 76);
        assert_eq!(error_code::INVALID_RECORD, 87);
    }

    #[test]
    fn build_batch_validates() {
        let records: [BuildRecord<'_>; 3] = [
            (Some(b"k1"), Some(b"v1"), 100),
            (None, Some(b"v2"), 150),
            (Some(b"k3"), None, 200),
        ];
        let buf = build_batch(&records);
        let info = validate_batch(&buf, &client_limits()).expect("built batch is valid");
        assert_eq!(info.total_len, buf.len());
        assert_eq!(info.records_count, 3);
        assert_eq!(info.last_offset_delta, 2);
        assert_eq!((info.base_timestamp, info.max_timestamp), (100, 200));
        assert_eq!(
            (info.producer_id, info.producer_epoch, info.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!(info.compression, Compression::None);
        assert_eq!(read_base_offset(&buf), 0);
    }

    #[test]
    fn build_batch_with_producer_matches_kafka_python_bytes() {
        // Same records and producer fields as IDEMPOTENT_RECORDS in make_fixtures.py.
        let records: [BuildRecord<'_>; 2] = [
            (Some(b"k0"), Some(b"v0"), FIXTURE_BASE_TIMESTAMP_MS),
            (Some(b"k1"), Some(b"v1"), FIXTURE_BASE_TIMESTAMP_MS + 1),
        ];
        let mut buf = build_batch_with_producer(&records, 4242, 3, 17);
        // kafka-python writes partitionLeaderEpoch 0 where Java clients (and we) write -1.
        assert_eq!(
            BatchHeader::parse(&buf).map(|h| h.partition_leader_epoch.get()),
            Some(-1)
        );
        stamp_partition_leader_epoch(&mut buf, 0);
        assert_eq!(buf, IDEMPOTENT);
    }

    #[test]
    fn build_batch_large_values_and_decreasing_timestamps() {
        let big = vec![7u8; 70_000];
        let records: [BuildRecord<'_>; 3] = [
            (Some(&big), Some(&big), 200),
            (None, None, -1_000_000_000_000),
            (Some(b""), Some(b""), i64::MAX),
        ];
        let buf = build_batch(&records);
        let limits = ValidationLimits {
            max_batch_bytes: 1 << 20,
            ..ValidationLimits::default()
        };
        let info = validate_batch(&buf, &limits).expect("valid");
        assert_eq!((info.base_timestamp, info.max_timestamp), (200, i64::MAX));
        assert_eq!(first_offset_with_timestamp(&buf, 0, 150), Ok(Some(0)));
        assert_eq!(first_offset_with_timestamp(&buf, 0, 201), Ok(Some(2)));
    }

    #[test]
    #[should_panic(expected = "at least one record")]
    fn build_batch_rejects_empty() {
        build_batch(&[]);
    }

    #[test]
    fn stamping_keeps_crc_valid() {
        let mut buf = UNCOMPRESSED.to_vec();
        stamp_base_offset(&mut buf, 0x0123_4567_89ab_cdef);
        stamp_partition_leader_epoch(&mut buf, 42);
        let info = validate_batch(&buf, &client_limits()).expect("still valid");
        assert_eq!(info.total_len, UNCOMPRESSED.len());
        assert_eq!(read_base_offset(&buf), 0x0123_4567_89ab_cdef);
        let header = BatchHeader::parse(&buf).expect("header");
        assert_eq!(header.partition_leader_epoch.get(), 42);
        let magic = offset_of!(BatchHeader, magic);
        assert_eq!(buf[magic..], UNCOMPRESSED[magic..]);
    }

    #[test]
    #[should_panic(expected = "batch header needs 61 bytes")]
    fn stamping_short_buffer_panics() {
        stamp_base_offset(&mut [0u8; 60], 1);
    }

    #[test]
    #[should_panic(expected = "base offset needs 8 bytes")]
    fn read_base_offset_short_buffer_panics() {
        read_base_offset(&[0u8; 7]);
    }

    #[test]
    fn first_offset_with_timestamp_on_built_batch() {
        let records: [BuildRecord<'_>; 3] = [
            (None, Some(b"a"), 100),
            (None, Some(b"b"), 150),
            (None, Some(b"c"), 200),
        ];
        let buf = build_batch(&records);
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 150), Ok(Some(1001)));
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 50), Ok(Some(1000)));
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 151), Ok(Some(1002)));
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 200), Ok(Some(1002)));
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 201), Ok(None));
    }

    #[test]
    fn first_record_with_timestamp_returns_the_records_own_timestamp() {
        let records: Vec<BuildRecord<'_>> = [100, 150, 200]
            .iter()
            .map(|&timestamp| (None, Some(&b"v"[..]), timestamp))
            .collect();
        let buf = build_batch(&records);
        assert_eq!(
            first_record_with_timestamp(&buf, 1000, 120),
            Ok(Some((1001, 150)))
        );
        assert_eq!(first_record_with_timestamp(&buf, 1000, 201), Ok(None));
    }

    #[test]
    fn first_offset_with_timestamp_on_kafka_python_fixture() {
        // Record timestamps are base + [0, 10, 5, 30]: the first record at or after the target,
        // in offset order, not the one with the closest timestamp.
        let base = FIXTURE_BASE_TIMESTAMP_MS;
        let find = |target| first_offset_with_timestamp(UNCOMPRESSED, 500, target);
        assert_eq!(find(base - 1), Ok(Some(500)));
        assert_eq!(find(base), Ok(Some(500)));
        assert_eq!(find(base + 1), Ok(Some(501)));
        assert_eq!(find(base + 6), Ok(Some(501)));
        assert_eq!(find(base + 11), Ok(Some(503)));
        assert_eq!(find(base + 30), Ok(Some(503)));
        assert_eq!(find(base + 31), Ok(None));
    }

    #[test]
    fn first_offset_with_timestamp_ignores_bytes_after_the_batch() {
        let mut two = IDEMPOTENT.to_vec();
        two.extend_from_slice(UNCOMPRESSED);
        let base = FIXTURE_BASE_TIMESTAMP_MS;
        assert_eq!(
            first_offset_with_timestamp(&two, 10, base + 1),
            Ok(Some(11))
        );
        assert_eq!(first_offset_with_timestamp(&two, 10, base + 2), Ok(None));
    }

    #[test]
    fn first_offset_with_timestamp_compressed_is_batch_granular() {
        let base = FIXTURE_BASE_TIMESTAMP_MS;
        assert_eq!(
            first_offset_with_timestamp(GZIP, 70, base + 5),
            Ok(Some(70))
        );
        assert_eq!(
            first_offset_with_timestamp(GZIP, 70, base + 18),
            Ok(Some(70))
        );
        assert_eq!(first_offset_with_timestamp(GZIP, 70, base + 19), Ok(None));
    }

    #[test]
    fn first_offset_with_timestamp_log_append_time_uses_max_timestamp() {
        let records: [BuildRecord<'_>; 3] = [
            (None, Some(b"a"), 100),
            (None, Some(b"b"), 150),
            (None, Some(b"c"), 200),
        ];
        let buf = set_attribute_bits(&build_batch(&records), ATTR_LOG_APPEND_TIME);
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 50), Ok(Some(1000)));
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 200), Ok(Some(1000)));
        assert_eq!(first_offset_with_timestamp(&buf, 1000, 201), Ok(None));
    }

    #[test]
    fn first_offset_with_timestamp_malformed_records() {
        let records: [BuildRecord<'_>; 2] = [(None, Some(b"a"), 100), (None, Some(b"b"), 150)];
        let buf = build_batch(&records);

        // A record count larger than the records section holds: runs out of bytes.
        let more = edited(&buf, |header| header.records_count.set(3));
        assert!(matches!(
            first_offset_with_timestamp(&more, 0, 1000),
            Err(BatchError::Truncated { .. })
        ));

        // First record's length varint claims more than the section holds.
        let mut long = buf.clone();
        long[BATCH_HEADER_LEN] = 0x7e; // zigzag 63
        assert_eq!(
            first_offset_with_timestamp(&long, 0, 1000),
            Err(BatchError::Truncated {
                have: buf.len() - BATCH_HEADER_LEN - 1,
                need: 63
            })
        );

        // Negative record length.
        let mut negative = buf.clone();
        negative[BATCH_HEADER_LEN] = 0x01; // zigzag -1
        assert!(matches!(
            first_offset_with_timestamp(&negative, 0, 1000),
            Err(BatchError::InvalidRecordCount {
                records_count: 2,
                ..
            })
        ));

        // Offset delta beyond lastOffsetDelta.
        let shrunk = edited(&buf, |header| header.last_offset_delta.set(-1));
        assert!(matches!(
            first_offset_with_timestamp(&shrunk, 0, 1000),
            Err(BatchError::InvalidRecordCount { .. })
        ));

        let zero = edited(&buf, |header| header.records_count.set(0));
        assert!(matches!(
            first_offset_with_timestamp(&zero, 0, 1000),
            Err(BatchError::InvalidRecordCount {
                records_count: 0,
                ..
            })
        ));
        assert!(matches!(
            first_offset_with_timestamp(&buf[..40], 0, 1000),
            Err(BatchError::Truncated { have: 40, need: 61 })
        ));
        assert!(matches!(
            first_offset_with_timestamp(&buf[..buf.len() - 1], 0, 1000),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn varints_round_trip_and_reject_overlong() {
        let longs = [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ];
        for value in longs {
            let mut encoded = Vec::new();
            put_varlong(&mut encoded, value);
            assert!(encoded.len() <= VARLONG_BYTES_MAX);
            let mut cursor = Cursor::new(&encoded);
            assert_eq!(cursor.varlong(), Ok(value));
            assert_eq!(cursor.pos, encoded.len());
            if let Ok(narrow) = i32::try_from(value) {
                assert!(encoded.len() <= VARINT_BYTES_MAX);
                assert_eq!(Cursor::new(&encoded).varint(), Ok(narrow));
            } else {
                assert_eq!(Cursor::new(&encoded).varint(), Err(RecordError::Malformed));
            }
        }
        let eleven_bytes = [0xffu8; 11];
        assert_eq!(
            Cursor::new(&eleven_bytes).varlong(),
            Err(RecordError::Malformed)
        );
        let overflowing_tenth = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
        assert_eq!(
            Cursor::new(&overflowing_tenth).varlong(),
            Err(RecordError::Malformed)
        );
        assert!(matches!(
            Cursor::new(&[0x80, 0x80]).varlong(),
            Err(RecordError::Truncated { .. })
        ));
    }

    #[test]
    fn scan_batch_torn_tail_is_none() {
        let max = 1 << 20;
        for cut in [0, 5, 11, 12, 30, 60, 61, UNCOMPRESSED.len() - 1] {
            assert_eq!(
                scan_batch(&UNCOMPRESSED[..cut], max),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn scan_batch_zeros_are_invalid_length() {
        assert_eq!(
            scan_batch(&[0u8; 4096], 1 << 20),
            Err(BatchError::InvalidLength(0))
        );
        assert_eq!(
            scan_batch(&[0u8; 12], 1 << 20),
            Err(BatchError::InvalidLength(0))
        );
    }

    #[test]
    fn scan_batch_reads_first_of_several() {
        let mut log = UNCOMPRESSED.to_vec();
        log.extend_from_slice(IDEMPOTENT);
        log.extend_from_slice(&[0u8; 100]);
        let max = 1 << 20;
        let first = scan_batch(&log, max).expect("valid").expect("complete");
        assert_eq!(first.total_len, UNCOMPRESSED.len());
        assert_eq!(first.records_count, 4);
        let second = scan_batch(&log[first.total_len..], max)
            .expect("valid")
            .expect("complete");
        assert_eq!(second.producer_id, 4242);
        let end = first.total_len + second.total_len;
        assert_eq!(
            scan_batch(&log[end..], max),
            Err(BatchError::InvalidLength(0))
        );
    }

    #[test]
    fn scan_batch_allows_control_and_rejects_garbage() {
        let control = set_attribute_bits(TRANSACTIONAL, ATTR_CONTROL);
        let info = scan_batch(&control, 1 << 20)
            .expect("valid")
            .expect("complete");
        assert!(info.control);

        // A garbage length larger than the limit is an error, not a torn tail.
        let mut garbage = UNCOMPRESSED[..20].to_vec();
        garbage[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            scan_batch(&garbage, 1 << 20),
            Err(BatchError::TooLarge { .. })
        ));

        let mut corrupt = UNCOMPRESSED.to_vec();
        corrupt[100] ^= 0x10;
        assert!(matches!(
            scan_batch(&corrupt, 1 << 20),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    /// Tiny deterministic PRNG so the robustness test needs no dependency.
    struct XorShift64(u64);

    impl XorShift64 {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next_u64() % bound as u64) as usize
        }
    }

    /// Runs every entry point over `buf`; the only requirement is that none of them panics.
    fn exercise(buf: &[u8]) {
        let limits = ValidationLimits {
            max_batch_bytes: 1 << 20,
            allow_control: true,
        };
        let _ = validate_batch(buf, &limits);
        let _ = validate_batch(buf, &ValidationLimits::default());
        let _ = scan_batch(buf, 1 << 20);
        let _ = scan_batch(buf, 0);
        let _ = first_offset_with_timestamp(buf, 0, FIXTURE_BASE_TIMESTAMP_MS + 7);
        let _ = first_offset_with_timestamp(buf, i64::MAX, i64::MIN);
        let _ = first_offset_with_timestamp(buf, i64::MAX, i64::MAX);
        let _ = BatchHeader::parse(buf);
    }

    #[test]
    fn never_panics_on_prefixes_and_mutations() {
        let built = build_batch(&[(Some(b"k"), Some(b"v"), 5), (None, None, 1)]);
        let mut fixtures: Vec<&[u8]> = FIXTURES.to_vec();
        fixtures.push(&built);
        let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15);
        for fixture in fixtures {
            for cut in 0..=fixture.len() {
                exercise(&fixture[..cut]);
            }
            for round in 0..2000 {
                let mut buf = fixture.to_vec();
                let index = rng.below(buf.len());
                buf[index] = rng.next_u64() as u8;
                exercise(&buf);
                // Most mutations stop at the CRC; fixing it reaches the checks behind it.
                if buf.len() >= BATCH_HEADER_LEN {
                    recrc(&mut buf);
                    exercise(&buf);
                }
                // Occasionally mutate several bytes at once, including the length fields.
                if round % 10 == 0 {
                    for _ in 0..8 {
                        let index = rng.below(buf.len());
                        buf[index] = rng.next_u64() as u8;
                    }
                    exercise(&buf);
                }
            }
        }
    }
}
