//! `validate_batch` on client-sized batches of 1 KiB records: a header parse plus one CRC-32C
//! pass over the batch, so the figure to watch is bytes per second against the CRC's own speed.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use runnel_benches::batch_of_exact_size;
use runnel_engine::batch::{validate_batch, ValidationLimits};

const RECORD_BYTES: usize = 1024;

fn validate(criterion: &mut Criterion) {
    let limits = ValidationLimits::default();
    let mut group = criterion.benchmark_group("validate_batch");
    for batch_bytes in [16 * 1024, 256 * 1024] {
        let batch = batch_of_exact_size(batch_bytes, RECORD_BYTES, 1_700_000_000_000);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KiB", batch_bytes / 1024)),
            &batch,
            |bencher, batch| {
                bencher.iter(|| validate_batch(black_box(batch), &limits).expect("valid batch"))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
