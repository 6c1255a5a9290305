//! `PartitionLog::append` of 16 KiB batches into a fresh log in a temp dir, on a glommio executor
//! started per sample (criterion's closures are synchronous; an executor cannot be re-entered).
//!
//! Variants: flush policy `Never` (ack after the direct write) and `EveryCommit` (ack after
//! fdatasync), with 1 append in flight (the latency of one append) and 8 in flight (group commit
//! can merge them). Opening and closing the log are outside the timed region.
//!
//! Each sample writes `iters` batches to the machine's temp directory; set `TMPDIR` to put it on
//! the disk under test.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use runnel_benches::batch_of_exact_size;
use runnel_engine::{FlushPolicy, LogConfig, LogContext, PartitionLog};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const BATCH_BYTES: usize = 16 * 1024;
const RECORD_BYTES: usize = 1024;
const TAIL_CACHE_BYTES: u64 = 64 << 20;

fn append(criterion: &mut Criterion) {
    let batch =
        BytesMut::from(&batch_of_exact_size(BATCH_BYTES, RECORD_BYTES, 1_700_000_000_000)[..]);
    let mut group = criterion.benchmark_group("partition_log_append_16KiB");
    group
        .throughput(Throughput::Bytes(BATCH_BYTES as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, flush) in [
        ("never", FlushPolicy::Never),
        ("every_commit", FlushPolicy::EveryCommit),
    ] {
        for in_flight in [1usize, 8] {
            group.bench_with_input(
                BenchmarkId::new(name, format!("in_flight_{in_flight}")),
                &in_flight,
                |bencher, &in_flight| {
                    bencher.iter_custom(|iters| timed_appends(&batch, flush, in_flight, iters))
                },
            );
        }
    }
    group.finish();
}

/// Runs `iters` appends with `in_flight` appenders on a fresh executor and log; returns the time
/// from the first append to the last acknowledgement.
fn timed_appends(batch: &BytesMut, flush: FlushPolicy, in_flight: usize, iters: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench-0");
    let batch = batch.clone();
    let executor = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    executor.run(async move {
        let config = LogConfig {
            flush,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&path, config, LogContext::direct(TAIL_CACHE_BYTES))
            .await
            .expect("open log");
        let remaining = Rc::new(Cell::new(iters));
        let started = Instant::now();
        let appenders: Vec<_> = (0..in_flight)
            .map(|_| {
                let (log, batch, remaining) = (log.clone(), batch.clone(), remaining.clone());
                glommio::spawn_local(async move {
                    while remaining.get() > 0 {
                        remaining.set(remaining.get() - 1);
                        log.append(batch.clone()).await.expect("append");
                    }
                })
            })
            .collect();
        for appender in appenders {
            appender.await;
        }
        let elapsed = started.elapsed();
        log.close().await.expect("close log");
        elapsed
    })
}

criterion_group!(benches, append);
criterion_main!(benches);
