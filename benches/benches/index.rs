//! `SegmentIndex` lookups on a full-size active segment: 1 GiB of 4 KiB batches with an entry
//! per batch (`index.interval.bytes` = 4096, the default) is 262,144 offset and time entries.
//! Keys are spread pseudo-randomly so the binary search does not run on a warm path.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use runnel_engine::index::SegmentIndex;

const ENTRIES: u32 = 262_144;
const BATCH_BYTES: u32 = 4096;
const RECORDS_PER_BATCH: u32 = 4;
const INDEX_INTERVAL_BYTES: u64 = 4096;
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;
/// Lookup keys per iteration batch; a power of two so the key cursor wraps with a mask.
const KEYS: usize = 4096;

fn full_index() -> SegmentIndex {
    let mut index = SegmentIndex::new();
    for batch in 0..=ENTRIES {
        index.record_batch(
            batch * RECORDS_PER_BATCH,
            batch * BATCH_BYTES,
            BATCH_BYTES,
            BASE_TIMESTAMP_MS + i64::from(batch) * 10,
            INDEX_INTERVAL_BYTES,
        );
    }
    index
}

/// A fixed xorshift sequence: the same keys every run, no dependency on a RNG crate.
fn pseudo_random(count: usize, bound: u64) -> Vec<u64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        })
        .collect()
}

fn lookups(criterion: &mut Criterion) {
    let index = full_index();
    assert_eq!(index.offsets.len(), ENTRIES as usize);
    let span_offsets = u64::from(ENTRIES * RECORDS_PER_BATCH);
    let offset_keys: Vec<u32> = pseudo_random(KEYS, span_offsets)
        .into_iter()
        .map(|key| key as u32)
        .collect();
    let time_keys: Vec<i64> = pseudo_random(KEYS, u64::from(ENTRIES) * 10)
        .into_iter()
        .map(|key| BASE_TIMESTAMP_MS + key as i64)
        .collect();

    let mut group = criterion.benchmark_group(format!("segment_index_{}k_entries", ENTRIES / 1024));
    let mut cursor = 0usize;
    group.bench_function("lookup_offset", |bencher| {
        bencher.iter(|| {
            cursor = (cursor + 1) & (KEYS - 1);
            index.lookup_offset(black_box(offset_keys[cursor]))
        })
    });
    group.bench_function("lookup_time", |bencher| {
        bencher.iter(|| {
            cursor = (cursor + 1) & (KEYS - 1);
            index.lookup_time(black_box(time_keys[cursor]))
        })
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
