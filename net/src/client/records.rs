//! Record batch v2 for the client side: encoding records to produce, decoding fetched batches.
//!
//! The broker's append path never parses records (it validates headers and CRCs only); a client
//! must.
//! Decoding trusts nothing in the fetched bytes: every length and count is checked against the
//! bytes that remain, CRCs are verified (as Kafka consumers do with `check.crcs=true`), and
//! decompression stops at a byte budget the caller names, so a hostile or broken broker can make
//! a decode fail but cannot make it allocate more than that budget plus the input.
//!
//! Compressed batches (gzip, snappy in raw and xerial framing, lz4 frame, zstd) are decompressed
//! here, with the engine's codecs (`runnel_engine::codec`, which its log cleaner uses too),
//! because other producers (librdkafka, the Java client) send them. [`encode_batch`] writes
//! uncompressed batches; [`encode_batch_with`] adds a codec (snappy in xerial framing and lz4
//! frames with independent 64 KiB blocks, as the Java client writes them) and the idempotent
//! producer fields. Pure functions over bytes: runs on any thread.

use bytes::{BufMut, Bytes, BytesMut};
use runnel_engine::batch::{BatchHeader, Compression, BATCH_HEADER_LEN, BATCH_OVERHEAD};
use runnel_engine::codec;

/// Smallest legal `batchLength`: the header after `batchLength`, with no records.
const BATCH_LENGTH_MIN: usize = BATCH_HEADER_LEN - BATCH_OVERHEAD;
/// The CRC covers everything from `attributes` (byte 21) to the end of the batch.
const CRC_START: usize = 21;
const ATTR_CODEC_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
/// A zigzag varint (i32) takes at most 5 bytes, a varlong (i64) at most 10.
const VARINT_BYTES_MAX: usize = 5;
const VARLONG_BYTES_MAX: usize = 10;
/// Smallest possible record: length, attributes, timestamp delta, offset delta, key length,
/// value length, header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;

/// One record header: a key (a string in Kafka, kept as bytes here) and a nullable value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header key.
    pub key: Bytes,
    /// Header value; `None` is null.
    pub value: Option<Bytes>,
}

/// A record to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
    /// Create time, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// A record read from a fetched batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its offset in the partition.
    pub offset: i64,
    /// Create time, or the broker's append time when [`Record::log_append_time`].
    pub timestamp_ms: i64,
    /// The timestamp is the broker's LogAppendTime rather than the producer's CreateTime.
    pub log_append_time: bool,
    /// Key; `None` is null.
    pub key: Option<Bytes>,
    /// Value; `None` is null.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
}

/// Why fetched record bytes could not be decoded. Each names the batch's base offset.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Not record batch v2 (magic 0 and 1 message sets are not supported).
    #[error(
        "batch at offset {base_offset}: magic {magic} is not supported (only record batch v2)"
    )]
    UnsupportedMagic {
        /// The batch's base offset.
        base_offset: i64,
        /// The magic byte found.
        magic: i8,
    },
    /// `batchLength` is smaller than the header.
    #[error("batch at offset {base_offset}: batch length {batch_length} is invalid")]
    InvalidLength {
        /// The batch's base offset.
        base_offset: i64,
        /// The length field.
        batch_length: i32,
    },
    /// The CRC-32C does not match.
    #[error("batch at offset {base_offset}: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        /// The batch's base offset.
        base_offset: i64,
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Attribute bits 0-2 name no known codec.
    #[error("batch at offset {base_offset}: unknown compression codec {codec}")]
    UnknownCodec {
        /// The batch's base offset.
        base_offset: i64,
        /// The codec bits.
        codec: i16,
    },
    /// The codec's decoder failed.
    #[error("batch at offset {base_offset}: {codec:?} decompression failed: {reason}")]
    Decompress {
        /// The batch's base offset.
        base_offset: i64,
        /// The codec.
        codec: Compression,
        /// The decoder's message.
        reason: String,
    },
    /// Decompressing would exceed the byte budget.
    #[error(
        "batch at offset {base_offset}: decompresses to more than the {budget_bytes} bytes allowed"
    )]
    TooLarge {
        /// The batch's base offset.
        base_offset: i64,
        /// The budget that was left.
        budget_bytes: usize,
    },
    /// The records section does not parse.
    #[error("batch at offset {base_offset}: malformed records: {reason}")]
    Malformed {
        /// The batch's base offset.
        base_offset: i64,
        /// What was wrong.
        reason: &'static str,
    },
    /// Compressing a batch to produce failed (only [`encode_batch_with`]).
    #[error("{codec:?} compression failed: {reason}")]
    Compress {
        /// The codec.
        codec: Compression,
        /// The encoder's message.
        reason: String,
    },
}

/// A decoded record batch: header fields and its (decompressed) records section.
#[derive(Clone, Debug)]
pub struct RecordBatch {
    /// Offset of the first record.
    pub base_offset: i64,
    /// The batch covers offsets `base_offset..=base_offset + last_offset_delta`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp (the append time of every record under LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Codec the batch was stored with.
    pub compression: Compression,
    /// Timestamps are LogAppendTime.
    pub log_append_time: bool,
    /// Part of a transaction.
    pub transactional: bool,
    /// Holds a control record (a transaction marker), not application data.
    pub control: bool,
    records_count: i32,
    records: Bytes,
}

impl RecordBatch {
    /// The offset after this batch: where the next fetch continues.
    pub fn next_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
            .saturating_add(1)
    }

    /// Number of records the header declares.
    pub fn records_count(&self) -> i32 {
        self.records_count
    }

    /// The records, parsed lazily; stops at the first malformed one.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            cursor: Cursor::new(self.records.clone()),
            remaining: self.records_count,
            failed: false,
        }
    }
}

/// Iterator over a batch's records (see [`RecordBatch::records`]).
pub struct Records<'a> {
    batch: &'a RecordBatch,
    cursor: Cursor,
    remaining: i32,
    failed: bool,
}

impl Iterator for Records<'_> {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.cursor.remaining() == 0 {
                return None;
            }
            self.failed = true;
            return Some(Err(
                self.malformed("bytes left after the declared record count")
            ));
        }
        self.remaining -= 1;
        let result =
            parse_record(&mut self.cursor, self.batch).map_err(|reason| self.malformed(reason));
        self.failed = result.is_err();
        Some(result)
    }
}

impl Records<'_> {
    fn malformed(&self, reason: &'static str) -> RecordError {
        RecordError::Malformed {
            base_offset: self.batch.base_offset,
            reason,
        }
    }
}

/// Splits fetched partition data into whole batches, checking each one's CRC and decompressing
/// its records within `decompressed_bytes_max` (a budget for all batches together).
///
/// A partial batch at the end is dropped, as Kafka consumers do (a fetch may end mid-batch).
pub fn decode_batches(
    data: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<Vec<RecordBatch>, RecordError> {
    let mut batches = Vec::new();
    let mut position = 0;
    let mut budget_bytes = decompressed_bytes_max;
    while let Some(header) = data.get(position..).and_then(BatchHeader::parse) {
        let base_offset = header.base_offset.get();
        let batch_length = header.batch_length.get();
        let Some(total_len) = usize::try_from(batch_length)
            .ok()
            .filter(|length| *length >= BATCH_LENGTH_MIN)
            .map(|length| length + BATCH_OVERHEAD)
        else {
            return Err(RecordError::InvalidLength {
                base_offset,
                batch_length,
            });
        };
        if header.magic != 2 {
            return Err(RecordError::UnsupportedMagic {
                base_offset,
                magic: header.magic,
            });
        }
        let Some(end) = position
            .checked_add(total_len)
            .filter(|end| *end <= data.len())
        else {
            break; // partial batch at the end of the fetch
        };
        let batch = decode_one(data.slice(position..end), header, &mut budget_bytes)?;
        batches.push(batch);
        position = end;
    }
    Ok(batches)
}

fn decode_one(
    bytes: Bytes,
    header: &BatchHeader,
    budget_bytes: &mut usize,
) -> Result<RecordBatch, RecordError> {
    let base_offset = header.base_offset.get();
    let stored = header.crc.get();
    let computed = crc32c::crc32c(&bytes[CRC_START..]);
    if stored != computed {
        return Err(RecordError::Crc {
            base_offset,
            stored,
            computed,
        });
    }
    let attributes = header.attributes.get();
    let codec = attributes & ATTR_CODEC_MASK;
    let compression =
        Compression::from_codec(codec).ok_or(RecordError::UnknownCodec { base_offset, codec })?;
    let section = bytes.slice(BATCH_HEADER_LEN..);
    let records = if compression == Compression::None {
        section
    } else {
        let output =
            codec::decompress(compression, &section, *budget_bytes).map_err(
                |error| match error {
                    codec::CodecError::TooLarge { .. } => RecordError::TooLarge {
                        base_offset,
                        budget_bytes: *budget_bytes,
                    },
                    codec::CodecError::Codec { reason, .. } => RecordError::Decompress {
                        base_offset,
                        codec: compression,
                        reason,
                    },
                },
            )?;
        *budget_bytes -= output.len();
        Bytes::from(output)
    };
    let records_count = header.records_count.get();
    let last_offset_delta = header.last_offset_delta.get();
    let count_fits = usize::try_from(records_count)
        .is_ok_and(|count| count.saturating_mul(RECORD_BYTES_MIN) <= records.len());
    if !count_fits || last_offset_delta < 0 {
        return Err(RecordError::Malformed {
            base_offset,
            reason: "record count or last offset delta out of range",
        });
    }
    Ok(RecordBatch {
        base_offset,
        last_offset_delta,
        base_timestamp: header.base_timestamp.get(),
        max_timestamp: header.max_timestamp.get(),
        producer_id: header.producer_id.get(),
        compression,
        log_append_time: attributes & ATTR_LOG_APPEND_TIME != 0,
        transactional: attributes & ATTR_TRANSACTIONAL != 0,
        control: attributes & ATTR_CONTROL != 0,
        records_count,
        records,
    })
}

fn parse_record(cursor: &mut Cursor, batch: &RecordBatch) -> Result<Record, &'static str> {
    let length = cursor.varint()?;
    let length = usize::try_from(length).map_err(|_| "negative record length")?;
    let mut record = Cursor::new(cursor.take(length).ok_or("record runs past the batch")?);
    let _attributes = record.byte()?;
    let timestamp_delta = record.varlong()?;
    let offset_delta = record.varint()?;
    if !(0..=batch.last_offset_delta).contains(&offset_delta) {
        return Err("offset delta outside the batch");
    }
    let key = record.nullable_bytes()?;
    let value = record.nullable_bytes()?;
    let header_count = record.varint()?;
    // Each header takes at least two bytes (key length, value length).
    let header_count = usize::try_from(header_count)
        .ok()
        .filter(|count| count.saturating_mul(2) <= record.remaining())
        .ok_or("header count out of range")?;
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        let key = record.nullable_bytes()?.ok_or("null header key")?;
        let value = record.nullable_bytes()?;
        headers.push(RecordHeader { key, value });
    }
    if record.remaining() != 0 {
        return Err("bytes left inside a record");
    }
    let timestamp_ms = if batch.log_append_time {
        batch.max_timestamp
    } else {
        batch.base_timestamp.saturating_add(timestamp_delta)
    };
    Ok(Record {
        offset: batch.base_offset.saturating_add(i64::from(offset_delta)),
        timestamp_ms,
        log_append_time: batch.log_append_time,
        key,
        value,
        headers,
    })
}

/// How [`encode_batch_with`] writes a batch beyond its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Codec of the records section.
    pub compression: Compression,
    /// Idempotent producer id (from InitProducerId), or -1.
    pub producer_id: i64,
    /// Its epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record in this partition for this producer id, or -1.
    pub base_sequence: i32,
}

impl Default for BatchOptions {
    /// Uncompressed, not idempotent.
    fn default() -> BatchOptions {
        BatchOptions {
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// Encodes an uncompressed record batch v2 with base offset 0, no producer id (-1 fields) and a
/// valid CRC. The base timestamp is the first record's, as Kafka clients write it.
///
/// Panics if `records` is empty or holds more than `i32::MAX` records (caller bugs).
pub fn encode_batch(records: &[NewRecord]) -> Bytes {
    encode_batch_with(records, &BatchOptions::default())
        .expect("an uncompressed batch always encodes")
}

/// [`encode_batch`] with a codec and idempotent producer fields. Fails only if the codec's
/// encoder does (never for [`Compression::None`]).
///
/// Panics if `records` is empty or holds more than `i32::MAX` records (caller bugs).
pub fn encode_batch_with(
    records: &[NewRecord],
    options: &BatchOptions,
) -> Result<Bytes, RecordError> {
    assert!(
        !records.is_empty(),
        "a record batch needs at least one record"
    );
    let records_count = i32::try_from(records.len()).expect("at most i32::MAX records");
    let base_timestamp = records[0].timestamp_ms;
    let max_timestamp = records
        .iter()
        .map(|record| record.timestamp_ms)
        .max()
        .unwrap_or(base_timestamp);
    let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + encoded_size_hint(records));
    out.put_i64(0); // base offset, assigned by the broker
    out.put_i32(0); // batch length, filled in below
    out.put_i32(-1); // partition leader epoch
    out.put_i8(2); // magic
    out.put_u32(0); // CRC, filled in below
    out.put_i16(codec_of(options.compression)); // attributes: the codec, CreateTime
    out.put_i32(records_count - 1);
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(options.producer_id);
    out.put_i16(options.producer_epoch);
    out.put_i32(options.base_sequence);
    out.put_i32(records_count);
    debug_assert_eq!(out.len(), BATCH_HEADER_LEN);
    let mut body = Vec::new();
    for (offset_delta, record) in (0..records_count).zip(records) {
        body.clear();
        encode_record(
            &mut body,
            offset_delta,
            record.timestamp_ms.wrapping_sub(base_timestamp),
            record,
        );
        put_varlong(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    if options.compression != Compression::None {
        let compressed =
            compress(options.compression, &out[BATCH_HEADER_LEN..]).map_err(|reason| {
                RecordError::Compress {
                    codec: options.compression,
                    reason,
                }
            })?;
        out.truncate(BATCH_HEADER_LEN);
        out.extend_from_slice(&compressed);
    }
    let batch_length = i32::try_from(out.len() - BATCH_OVERHEAD).expect("batch under 2 GiB");
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

/// Attribute bits 0-2 for `compression` (the inverse of `Compression::from_codec`).
fn codec_of(compression: Compression) -> i16 {
    codec::codec_bits(compression)
}

/// Compresses a records section the way the Java client does for each codec (snappy in
/// snappy-java's xerial framing).
fn compress(compression: Compression, input: &[u8]) -> Result<Vec<u8>, String> {
    codec::compress(compression, input, codec::SnappyFraming::Xerial)
        .map_err(|error| error.to_string())
}

fn encoded_size_hint(records: &[NewRecord]) -> usize {
    let field = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, Bytes::len);
    records
        .iter()
        .map(|record| 16 + field(&record.key) + field(&record.value))
        .sum()
}

fn encode_record(out: &mut Vec<u8>, offset_delta: i32, timestamp_delta: i64, record: &NewRecord) {
    out.push(0); // record attributes, unused
    put_varlong(out, timestamp_delta);
    put_varlong(out, i64::from(offset_delta));
    put_nullable(out, record.key.as_deref());
    put_nullable(out, record.value.as_deref());
    put_varlong(out, record.headers.len() as i64);
    for header in &record.headers {
        put_nullable(out, Some(&header.key));
        put_nullable(out, header.value.as_deref());
    }
}

fn put_nullable(out: &mut impl BufMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.put_slice(bytes);
        }
        None => put_varlong(out, -1),
    }
}

/// Appends `value` as a zigzag LEB128 varlong; for values in i32 range this is also the varint.
fn put_varlong(out: &mut impl BufMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

/// A read position in a `Bytes`; every read checks what remains.
struct Cursor {
    bytes: Bytes,
    position: usize,
}

impl Cursor {
    fn new(bytes: Bytes) -> Cursor {
        Cursor { bytes, position: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        let byte = *self.bytes.get(self.position).ok_or("record truncated")?;
        self.position += 1;
        Ok(byte)
    }

    fn take(&mut self, length: usize) -> Option<Bytes> {
        if length > self.remaining() {
            return None;
        }
        let slice = self.bytes.slice(self.position..self.position + length);
        self.position += length;
        Some(slice)
    }

    /// An unsigned LEB128 value of at most `bytes_max` bytes, then zigzag-decoded.
    fn zigzag(&mut self, bytes_max: usize) -> Result<i64, &'static str> {
        let mut raw = 0u64;
        for index in 0..bytes_max {
            let byte = self.byte()?;
            raw |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varint too long")
    }

    fn varint(&mut self) -> Result<i32, &'static str> {
        i32::try_from(self.zigzag(VARINT_BYTES_MAX)?).map_err(|_| "varint out of range")
    }

    fn varlong(&mut self) -> Result<i64, &'static str> {
        self.zigzag(VARLONG_BYTES_MAX)
    }

    /// A varint length (-1 is null) followed by that many bytes.
    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            length => {
                let length = usize::try_from(length).map_err(|_| "negative length")?;
                self.take(length)
                    .map(Some)
                    .ok_or("field runs past the record")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_engine::batch::{build_batch, validate_batch, ValidationLimits};
    use std::io::Write;

    const KAFKA_PYTHON_UNCOMPRESSED: &[u8] =
        include_bytes!("../../../engine/tests/fixtures/kafka-python-uncompressed.bin");
    const KAFKA_PYTHON_GZIP: &[u8] =
        include_bytes!("../../../engine/tests/fixtures/kafka-python-gzip.bin");
    const KAFKA_PYTHON_TRANSACTIONAL: &[u8] =
        include_bytes!("../../../engine/tests/fixtures/kafka-python-transactional.bin");
    /// BASE_TIMESTAMP_MS in engine/tests/fixtures/make_fixtures.py.
    const FIXTURE_BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;
    const BUDGET: usize = 1 << 20;

    fn bytes(value: &[u8]) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(value))
    }

    fn record(key: Option<&[u8]>, value: Option<&[u8]>, timestamp_ms: i64) -> NewRecord {
        NewRecord {
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
            timestamp_ms,
        }
    }

    fn decode_all(data: &[u8]) -> Result<Vec<Record>, RecordError> {
        let mut records = Vec::new();
        for batch in decode_batches(&Bytes::copy_from_slice(data), BUDGET)? {
            for record in batch.records() {
                records.push(record?);
            }
        }
        Ok(records)
    }

    fn sample_records() -> Vec<NewRecord> {
        let mut with_headers = record(Some(b"k0"), Some(b"v0"), 1_000);
        with_headers.headers = vec![
            RecordHeader {
                key: Bytes::from_static(b"trace"),
                value: bytes(b"abc"),
            },
            RecordHeader {
                key: Bytes::from_static(b"empty"),
                value: None,
            },
        ];
        vec![
            with_headers,
            record(None, Some(b"no key"), 990),
            record(Some(b"tombstone"), None, 1_500),
            record(Some(b""), Some(&[0xff; 300]), 1_001),
        ]
    }

    #[test]
    fn encode_then_decode_round_trips_keys_values_headers_and_timestamps() {
        let records = sample_records();
        let batch = encode_batch(&records);
        let decoded = decode_all(&batch).expect("decodes");
        assert_eq!(decoded.len(), records.len());
        for (offset, (sent, got)) in records.iter().zip(&decoded).enumerate() {
            assert_eq!(got.offset, offset as i64);
            assert_eq!(got.key, sent.key);
            assert_eq!(got.value, sent.value);
            assert_eq!(got.headers, sent.headers);
            assert_eq!(got.timestamp_ms, sent.timestamp_ms);
            assert!(!got.log_append_time);
        }
    }

    #[test]
    fn encoded_batches_pass_the_brokers_validation() {
        let batch = encode_batch(&sample_records());
        let info = validate_batch(&batch, &ValidationLimits::default()).expect("valid");
        assert_eq!(info.total_len, batch.len());
        assert_eq!(info.records_count, 4);
        assert_eq!((info.base_timestamp, info.max_timestamp), (1_000, 1_500));
        assert_eq!(info.producer_id, -1);
    }

    #[test]
    fn without_headers_the_bytes_equal_the_engines_builder() {
        let records = [
            record(Some(b"k1"), Some(b"v1"), 100),
            record(None, Some(b"v2"), 150),
            record(Some(b"k3"), None, 90),
        ];
        let engine = build_batch(&[
            (Some(b"k1"), Some(b"v1"), 100),
            (None, Some(b"v2"), 150),
            (Some(b"k3"), None, 90),
        ]);
        assert_eq!(&encode_batch(&records)[..], &engine[..]);
    }

    #[test]
    fn decodes_kafka_pythons_uncompressed_batch() {
        let mut data = KAFKA_PYTHON_UNCOMPRESSED.to_vec();
        data[..8].copy_from_slice(&500i64.to_be_bytes()); // stamped by the broker
        let records = decode_all(&data).expect("decodes");
        let base = FIXTURE_BASE_TIMESTAMP_MS;
        let summary: Vec<_> = records
            .iter()
            .map(|r| (r.offset, r.timestamp_ms, r.key.clone(), r.value.is_some()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (500, base, bytes(b"key-0"), true),
                (501, base + 10, None, true),
                (502, base + 5, bytes(b"key-2"), false),
                (503, base + 30, bytes(b"key-3"), true),
            ]
        );
        assert_eq!(records[3].value.as_deref(), Some(&[b'x'; 300][..]));
        assert_eq!(
            records[2].headers,
            vec![
                RecordHeader {
                    key: Bytes::from_static(b"trace-id"),
                    value: bytes(b"abc123")
                },
                RecordHeader {
                    key: Bytes::from_static(b"empty"),
                    value: None
                },
            ]
        );
    }

    #[test]
    fn decodes_kafka_pythons_gzip_batch() {
        let records = decode_all(KAFKA_PYTHON_GZIP).expect("decodes");
        assert_eq!(records.len(), 10);
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.offset, index as i64);
            assert_eq!(record.key, bytes(format!("key-{index}").as_bytes()));
            assert_eq!(
                record.value,
                bytes("compressible payload ".repeat(20).as_bytes())
            );
            assert_eq!(
                record.timestamp_ms,
                FIXTURE_BASE_TIMESTAMP_MS + 2 * index as i64
            );
        }
    }

    #[test]
    fn transactional_batches_are_flagged() {
        let batches =
            decode_batches(&Bytes::from_static(KAFKA_PYTHON_TRANSACTIONAL), BUDGET).unwrap();
        assert_eq!(batches.len(), 1);
        assert!(batches[0].transactional && !batches[0].control);
        assert_eq!(batches[0].producer_id, 7);
    }

    /// Builds a batch whose records section is `compress(records section of an uncompressed one)`.
    fn compressed_batch(codec: i16, compress: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let plain = encode_batch(&sample_records());
        let mut out = plain[..BATCH_HEADER_LEN].to_vec();
        out.extend_from_slice(&compress(&plain[BATCH_HEADER_LEN..]));
        let batch_length = (out.len() - BATCH_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        out[21..23].copy_from_slice(&codec.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn xerial(data: &[u8]) -> Vec<u8> {
        // snappy-java's layout: magic, version 1, compatible version 1, then 2 blocks.
        let mut out = codec::XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        let (first, second) = data.split_at(data.len() / 2);
        for block in [first, second] {
            let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
            out.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
            out.extend_from_slice(&compressed);
        }
        out
    }

    fn all_codecs() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("gzip", compressed_batch(1, gzip)),
            (
                "snappy raw",
                compressed_batch(2, |d| snap::raw::Encoder::new().compress_vec(d).unwrap()),
            ),
            ("snappy xerial", compressed_batch(2, xerial)),
            ("lz4", compressed_batch(3, lz4)),
            (
                "zstd",
                compressed_batch(4, |d| zstd::bulk::compress(d, 3).unwrap()),
            ),
        ]
    }

    #[test]
    fn decompresses_every_codec() {
        let expected = decode_all(&encode_batch(&sample_records())).unwrap();
        for (name, batch) in all_codecs() {
            assert_eq!(decode_all(&batch).as_ref(), Ok(&expected), "{name}");
        }
    }

    #[test]
    fn decompression_stops_at_the_budget() {
        let plain_records_len = encode_batch(&sample_records()).len() - BATCH_HEADER_LEN;
        for (name, batch) in all_codecs() {
            let data = Bytes::from(batch);
            let result = decode_batches(&data, plain_records_len - 1);
            assert!(
                matches!(result, Err(RecordError::TooLarge { .. })),
                "{name}: {result:?}"
            );
            assert!(decode_batches(&data, plain_records_len).is_ok(), "{name}");
        }
    }

    #[test]
    fn every_codec_encodes_and_round_trips_with_producer_fields() {
        let records = sample_records();
        let expected = decode_all(&encode_batch(&records)).unwrap();
        // Large enough for several snappy and lz4 blocks.
        let big: Vec<NewRecord> = (0..40)
            .map(|index| record(None, Some(&[index as u8; 4000]), 1_000 + index))
            .collect();
        let big_expected = decode_all(&encode_batch(&big)).unwrap();
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let options = BatchOptions {
                compression,
                producer_id: 77,
                producer_epoch: 3,
                base_sequence: 12,
            };
            let batch = encode_batch_with(&records, &options).expect("encodes");
            let info = validate_batch(&batch, &ValidationLimits::default()).expect("valid");
            assert_eq!(info.compression, compression);
            assert_eq!(
                (info.producer_id, info.producer_epoch, info.base_sequence),
                (77, 3, 12)
            );
            assert_eq!(info.records_count, 4);
            assert_eq!(
                decode_all(&batch).as_ref(),
                Ok(&expected),
                "{compression:?}"
            );
            let big_batch = encode_batch_with(&big, &options).expect("encodes");
            assert_eq!(decode_all(&big_batch), Ok(big_expected.clone()));
            if compression != Compression::None {
                assert!(
                    big_batch.len() < 40 * 4000 / 4,
                    "{compression:?} compresses"
                );
            }
        }
    }

    #[test]
    fn lz4_frames_use_what_kafkas_reader_accepts() {
        let options = BatchOptions {
            compression: Compression::Lz4,
            ..BatchOptions::default()
        };
        let batch = encode_batch_with(&sample_records(), &options).unwrap();
        let frame = &batch[BATCH_HEADER_LEN..];
        assert_eq!(&frame[..4], &0x184D_2204u32.to_le_bytes(), "magic");
        // FLG: version 01, block independence, no content size, no checksums.
        assert_eq!(frame[4], 0b0110_0000);
        // BD: 64 KiB blocks.
        assert_eq!(frame[5], 4 << 4);
    }

    #[test]
    fn a_partial_batch_at_the_end_is_dropped() {
        let one = encode_batch(&sample_records());
        let mut two = one.to_vec();
        two.extend_from_slice(&one[..one.len() - 1]);
        let batches = decode_batches(&Bytes::from(two), BUDGET).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].next_offset(), 4);
        let header_only = Bytes::copy_from_slice(&one[..BATCH_HEADER_LEN - 1]);
        assert!(decode_batches(&header_only, BUDGET).unwrap().is_empty());
    }

    #[test]
    fn corrupt_batches_are_errors_not_panics() {
        let good = encode_batch(&sample_records()).to_vec();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(decode_all(&flipped), Err(RecordError::Crc { .. })));

        let mut magic = good.clone();
        magic[16] = 1;
        assert!(matches!(
            decode_all(&magic),
            Err(RecordError::UnsupportedMagic { magic: 1, .. })
        ));

        let mut short = good.clone();
        short[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            decode_all(&short),
            Err(RecordError::InvalidLength { .. })
        ));

        let mut codec = good.clone();
        codec[22] |= 7;
        let crc = crc32c::crc32c(&codec[CRC_START..]);
        codec[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_all(&codec),
            Err(RecordError::UnknownCodec { codec: 7, .. })
        ));
    }

    /// Rewrites the records section and fixes up length and CRC, so only the record parser
    /// can object.
    fn with_section(records_count: i32, section: &[u8]) -> Vec<u8> {
        let mut out = encode_batch(&[record(None, Some(b"x"), 0)])[..BATCH_HEADER_LEN].to_vec();
        out[23..27].copy_from_slice(&(records_count - 1).max(0).to_be_bytes());
        out[57..61].copy_from_slice(&records_count.to_be_bytes());
        out.extend_from_slice(section);
        let batch_length = (out.len() - BATCH_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn hostile_record_sections_are_rejected() {
        let malformed = |count, section: &[u8]| {
            let result = decode_all(&with_section(count, section));
            assert!(
                matches!(result, Err(RecordError::Malformed { .. })),
                "{section:?}: {result:?}"
            );
        };
        // One good record: len 7, attrs, ts 0, delta 0, key null (1), value len 1 "x", 0 headers.
        let good = [14, 0, 0, 0, 1, 2, b'x', 0];
        assert_eq!(decode_all(&with_section(1, &good)).unwrap().len(), 1);
        malformed(2, &good); // count says 2 but only one record fits
        malformed(-1, &good); // negative count
        malformed(i32::MAX, &good); // huge count, not allocated
        malformed(1, &[0x7e, 0, 0, 0, 1, 1, 0, 0]); // record length 63, past the end
        malformed(1, &[1, 0, 0, 0, 1, 1, 0, 0]); // negative record length
        malformed(1, &[14, 0, 0, 2, 1, 2, b'x', 0]); // offset delta 1 > last delta 0
        malformed(1, &[14, 0, 0, 0, 1, 0x7e, b'x', 0]); // value length past the record
        malformed(1, &[14, 0, 0, 0, 1, 3, b'x', 0]); // value length -2
        malformed(1, &[14, 0, 0, 0, 1, 2, b'x', 0x7e]); // header count 63, no room
        malformed(1, &[16, 0, 0, 0, 1, 2, b'x', 0, 0]); // a byte left inside the record
        malformed(1, &[14, 0, 0, 0, 1, 2, b'x', 0, 0, 0, 0, 0, 0, 0, 0]); // bytes after the records
        let overlong = [
            22, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        malformed(1, &overlong); // an 11-byte varlong
    }

    #[test]
    fn log_append_time_batches_use_the_max_timestamp() {
        let mut data = encode_batch(&sample_records()).to_vec();
        data[22] |= ATTR_LOG_APPEND_TIME as u8;
        data[35..43].copy_from_slice(&42i64.to_be_bytes());
        let crc = crc32c::crc32c(&data[CRC_START..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        let records = decode_all(&data).unwrap();
        assert!(records
            .iter()
            .all(|r| r.log_append_time && r.timestamp_ms == 42));
    }
}
