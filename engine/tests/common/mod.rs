//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use bytes::BytesMut;
use runnel_engine::batch;
use runnel_engine::{LogConfig, LogContext, PartitionLog, ReadPlan};
use std::future::Future;

/// Runs `future` on a fresh glommio executor.
pub fn run<T>(future: impl Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("make executor")
        .run(future)
}

/// A batch of `records` records whose values encode `tag` and the record index, so a reader can
/// tell which batch it is.
pub fn tagged_batch(tag: u64, records: usize, value_bytes: usize, timestamp_ms: i64) -> BytesMut {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|index| {
            let mut value = format!("{tag}:{index}:").into_bytes();
            value.resize(value_bytes.max(value.len()), b'x');
            value
        })
        .collect();
    let keys: Vec<Vec<u8>> = (0..records)
        .map(|index| format!("k{index}").into_bytes())
        .collect();
    let entries: Vec<batch::BuildRecord<'_>> = values
        .iter()
        .zip(&keys)
        .map(|(value, key)| (Some(key.as_slice()), Some(value.as_slice()), timestamp_ms))
        .collect();
    BytesMut::from(&batch::build_batch(&entries)[..])
}

/// Splits the bytes of a plan into (base offset, whole batch bytes), checking every CRC.
pub fn split_batches(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let info = batch::scan_batch(&bytes[position..], 1 << 30)
            .expect("valid batch")
            .expect("whole batch");
        let batch_bytes = bytes[position..position + info.total_len].to_vec();
        out.push((batch::read_base_offset(&batch_bytes), batch_bytes));
        position += info.total_len;
    }
    out
}

/// Reads everything from `offset` to the durable end, batch by batch.
pub fn read_all(log: &PartitionLog, mut offset: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let end = log.durable_end_offset();
    while offset < end {
        let plan: ReadPlan = log.read(offset, 256 * 1024).expect("read");
        let batches = split_batches(&plan.to_vec().expect("plan bytes"));
        assert!(
            !batches.is_empty(),
            "empty plan at {offset} below end {end}"
        );
        for (base, bytes) in batches {
            let info = batch::scan_batch(&bytes, 1 << 30).unwrap().unwrap();
            offset = base + i64::from(info.last_offset_delta) + 1;
            out.push((base, bytes));
        }
    }
    out
}

/// Small segments so tests roll often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        preallocate_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

pub fn context() -> LogContext {
    LogContext::direct(1 << 20)
}
