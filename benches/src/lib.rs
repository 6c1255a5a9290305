//! Micro-benchmarks of runnel hot paths live under `benches/benches/`; run
//! `cargo bench -p runnel-benches` (add `-- --quick` for a fast pass).
//!
//! This library holds only what the benchmarks and `runnel-load` share: building record batches
//! of an exact size, so a "16 KiB batch" is 16,384 bytes on disk and throughput figures compare directly
//! with a block-device baseline of the same block size.

use runnel_engine::batch;

/// A record's bytes beyond its value are at most this many (length, attributes, deltas, key and
/// value lengths, header count: varints).
const RECORD_OVERHEAD_BYTES_MAX: usize = 32;

/// Builds a record batch v2 of exactly `batch_bytes` bytes whose records carry values of
/// `record_bytes` (no key), the last value shortened to make the batch length exact.
///
/// Panics if `batch_bytes` cannot hold one record of at least an empty value, or if no value
/// length gives the exact size (varint length fields make a few sizes unreachable; none of the
/// power-of-two sizes the benchmarks use).
pub fn batch_of_exact_size(batch_bytes: usize, record_bytes: usize, timestamp_ms: i64) -> Vec<u8> {
    assert!(record_bytes > 0, "records need a value");
    // Size one and two records to learn the header and per-record bytes, then fill with whole
    // records and give the remainder to the last one (shorter, or longer when the remainder is
    // too small to hold a record of its own).
    let one = build(1, record_bytes, record_bytes, timestamp_ms).len();
    let per_record = build(2, record_bytes, record_bytes, timestamp_ms).len() - one;
    let header_bytes = one - per_record;
    assert!(
        batch_bytes > header_bytes + per_record / 2,
        "batch too small for a record"
    );
    let whole = (batch_bytes - header_bytes) / per_record;
    let remainder = (batch_bytes - header_bytes) % per_record;
    let records = if remainder >= RECORD_OVERHEAD_BYTES_MAX {
        whole + 1
    } else {
        whole.max(1)
    };
    let mut last_value_bytes = record_bytes;
    // Each round moves the last value by the size error; varint widths change by at most a few
    // bytes per round, so a handful of rounds converge. Bounded so a bad size cannot loop.
    for _ in 0..8 {
        let built = build(records, record_bytes, last_value_bytes, timestamp_ms);
        if built.len() == batch_bytes {
            return built;
        }
        let error = built.len() as i64 - batch_bytes as i64;
        let adjusted = last_value_bytes as i64 - error;
        assert!(
            adjusted >= 0,
            "batch of {batch_bytes} bytes cannot hold {records} records of {record_bytes} bytes"
        );
        last_value_bytes = adjusted as usize;
    }
    panic!("no value length gives a batch of exactly {batch_bytes} bytes");
}

fn build(
    records: usize,
    record_bytes: usize,
    last_value_bytes: usize,
    timestamp_ms: i64,
) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|index| {
            let value_bytes = if index + 1 == records {
                last_value_bytes
            } else {
                record_bytes
            };
            // Not all zeros, so nothing downstream can special-case the payload.
            (0..value_bytes)
                .map(|byte| (byte * 31 + index) as u8)
                .collect()
        })
        .collect();
    let entries: Vec<batch::BuildRecord<'_>> = values
        .iter()
        .map(|value| (None, Some(value.as_slice()), timestamp_ms))
        .collect();
    batch::build_batch(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_validate() {
        let limits = batch::ValidationLimits::default();
        for batch_bytes in [4096, 16 * 1024, 64 * 1024, 256 * 1024, 1 << 20] {
            let built = batch_of_exact_size(batch_bytes, 1024, 1_700_000_000_000);
            assert_eq!(built.len(), batch_bytes);
            let info = batch::validate_batch(&built, &limits).expect("valid batch");
            assert_eq!(info.total_len, batch_bytes);
        }
    }
}
