//! Segment rolls (by size and by age), retention (by time and by size), DeleteRecords
//! (`delete_before`) across clean and crash restarts, the per-shard retention task, and read plans
//! that outlive the segments they read.
mod common;

use common::*;
use runnel_engine::fault::{FaultKind, FaultPlan};
use runnel_engine::retention::RetentionSet;
use runnel_engine::segment::SegmentPaths;
use runnel_engine::ReadChunk;
use runnel_engine::{send_plan, AppendResult, LogConfig, LogContext, LogError, PartitionLog};
use std::path::Path;
use std::time::{Duration, Instant};

const HOUR_MS: i64 = 3_600_000;

/// Segments of 8 KiB; nothing expires unless a test says so.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 1024,
        preallocate_bytes: 8192,
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    }
}

/// Appends a batch of `records` records of `value_bytes` each, stamped `timestamp_ms`; returns
/// the result and the bytes the log stores for it.
async fn append(
    log: &PartitionLog,
    tag: u64,
    records: usize,
    value_bytes: usize,
    timestamp_ms: i64,
) -> (AppendResult, Vec<u8>) {
    let batch = tagged_batch(tag, records, value_bytes, timestamp_ms);
    let result = log.append(batch.clone()).await.expect("append");
    (result, stamped(&batch, result.base_offset))
}

/// Appends `count` one-KiB batches of 2 records; returns (base offset, stored bytes) of each.
async fn append_many(
    log: &PartitionLog,
    first_tag: u64,
    count: u64,
    timestamp_ms: i64,
) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for tag in first_tag..first_tag + count {
        let (result, bytes) = append(log, tag, 2, 500, timestamp_ms).await;
        out.push((result.base_offset, bytes));
    }
    out
}

fn segment_files_exist(dir: &Path, base: i64) -> [bool; 3] {
    let paths = SegmentPaths::new(dir, base);
    [paths.log, paths.index, paths.time_index].map(|path| path.exists())
}

/// Sealed segments are trimmed to their data; the active one's share is what is left.
fn segment_sizes(log: &PartitionLog) -> Vec<(i64, u64)> {
    let bases = log.segment_base_offsets();
    let (active, sealed) = bases.split_last().expect("an active segment");
    let mut sizes: Vec<(i64, u64)> = sealed
        .iter()
        .map(|&base| {
            let path = SegmentPaths::new(log.dir(), base).log;
            (base, std::fs::metadata(path).expect("sealed segment").len())
        })
        .collect();
    let sealed_bytes: u64 = sizes.iter().map(|(_, size)| size).sum();
    sizes.push((*active, log.size_bytes() - sealed_bytes));
    sizes
}

#[test]
fn segments_roll_when_the_next_batch_would_pass_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roll-size-0");
    run(async move {
        let log = PartitionLog::open(&path, config(), context())
            .await
            .unwrap();
        // Mostly ~1-3 KiB batches; one far larger than a segment, which must sit alone.
        let value_sizes = [
            900, 2500, 40, 1800, 3000, 700, 20_000, 10, 2200, 1500, 2900, 600,
        ];
        let mut stored = Vec::new();
        for (tag, &value_bytes) in value_sizes.iter().cycle().take(60).enumerate() {
            let (result, bytes) = append(&log, tag as u64, 2, value_bytes, 1000).await;
            stored.push((result.base_offset, bytes));
        }
        // The rule: a batch starts a new segment when the active one is non-empty and the batch
        // would take it past segment_bytes.
        let mut expected: Vec<Vec<(i64, Vec<u8>)>> = Vec::new();
        let mut segment_bytes = 0u64;
        for (base, bytes) in &stored {
            let size = bytes.len() as u64;
            if expected.is_empty() || (segment_bytes > 0 && segment_bytes + size > 8192) {
                expected.push(Vec::new());
                segment_bytes = 0;
            }
            segment_bytes += size;
            expected.last_mut().unwrap().push((*base, bytes.clone()));
        }
        let expected_bases: Vec<i64> = expected.iter().map(|segment| segment[0].0).collect();
        assert!(expected_bases.len() >= 10);
        assert_eq!(log.segment_base_offsets(), expected_bases);
        // Sealed files hold exactly their batches, trimmed (no preallocated tail).
        let (_, sealed) = expected.split_last().unwrap();
        for segment in sealed {
            let path = SegmentPaths::new(log.dir(), segment[0].0).log;
            let on_disk: Vec<(i64, Vec<u8>)> = file_batches(&path)
                .into_iter()
                .map(|found| (found.base_offset, found.bytes))
                .collect();
            assert_eq!(&on_disk, segment);
            let data_bytes: usize = segment.iter().map(|(_, bytes)| bytes.len()).sum();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), data_bytes as u64);
            assert!(data_bytes <= 8192 || segment.len() == 1, "overfull segment");
        }
        assert_eq!(read_all(&log, 0), stored);
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, config(), context())
            .await
            .unwrap();
        assert_eq!(log.segment_base_offsets(), expected_bases);
        assert_eq!(read_all(&log, 0), stored);
        log.close().await.unwrap();
    });
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roll-age-0");
    run(async move {
        let config = LogConfig {
            segment_ms: 200,
            ..config()
        };
        let log = PartitionLog::open(&path, config, context()).await.unwrap();
        let now = wall_clock_ms();
        let (first, _) = append(&log, 0, 1, 10, now).await;
        let (second, _) = append(&log, 1, 1, 10, now).await;
        assert_eq!(log.segment_base_offsets(), vec![first.base_offset]);
        glommio::timer::sleep(Duration::from_millis(250)).await;
        let (rolled, _) = append(&log, 2, 1, 10, now).await;
        assert_eq!(log.segment_base_offsets(), vec![0, rolled.base_offset]);
        assert_eq!(rolled.base_offset, second.base_offset + 1);
        // The new segment's clock starts at its own first append.
        let (_, _) = append(&log, 3, 1, 10, now).await;
        assert_eq!(log.segment_count(), 2);
        glommio::timer::sleep(Duration::from_millis(250)).await;
        let (again, _) = append(&log, 4, 1, 10, now).await;
        assert_eq!(
            log.segment_base_offsets(),
            vec![0, rolled.base_offset, again.base_offset]
        );
        assert_eq!(read_all(&log, 0).len(), 5);
        log.close().await.unwrap();
    });
}

#[test]
fn time_retention_deletes_expired_sealed_segments_and_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retain-time-0");
    run(async move {
        let config = LogConfig {
            retention_ms: 60_000,
            ..config()
        };
        let log = PartitionLog::open(&path, config, context()).await.unwrap();
        let now = wall_clock_ms();
        let old_ms = now - HOUR_MS;
        let old = append_many(&log, 0, 30, old_ms).await;
        let fresh_start = log.log_end_offset();
        let fresh = append_many(&log, 100, 12, now).await;
        let bases = log.segment_base_offsets();
        // Kept: from the segment holding the first fresh batch (its newest timestamp is fresh).
        let kept_first = *bases.iter().rfind(|&&base| base <= fresh_start).unwrap();
        let doomed: Vec<i64> = bases.iter().copied().filter(|&b| b < kept_first).collect();
        assert!(doomed.len() >= 2, "{bases:?}");
        assert!(
            bases.last() > Some(&kept_first),
            "fresh data must span segments"
        );

        // Expired means strictly older than retention.ms.
        assert_eq!(
            log.apply_retention(old_ms + 60_000, usize::MAX)
                .await
                .unwrap(),
            0
        );
        assert_eq!(log.segment_base_offsets(), bases);
        // At most `segments_max` per pass.
        assert_eq!(log.apply_retention(old_ms + 60_001, 1).await.unwrap(), 1);
        assert_eq!(log.log_start_offset(), doomed[1]);
        let deleted = log.apply_retention(now, usize::MAX).await.unwrap();
        assert_eq!(deleted, doomed.len() - 1);
        assert_eq!(log.apply_retention(now, usize::MAX).await.unwrap(), 0);

        assert_eq!(log.segment_base_offsets()[0], kept_first);
        assert_eq!(log.log_start_offset(), kept_first);
        for base in &doomed {
            assert_eq!(segment_files_exist(log.dir(), *base), [false; 3]);
        }
        assert_eq!(segment_files_exist(log.dir(), kept_first), [true; 3]);
        assert_out_of_range(log.read(kept_first - 1, 1 << 20));
        assert_out_of_range(log.read(0, 1 << 20));
        let expected: Vec<(i64, Vec<u8>)> = old
            .iter()
            .chain(&fresh)
            .filter(|(base, _)| *base >= kept_first)
            .cloned()
            .collect();
        assert_eq!(read_all(&log, kept_first), expected);

        // Much later everything has expired, yet the active segment stays, readable.
        let active_base = *log.segment_base_offsets().last().unwrap();
        let far_future = now + 10 * HOUR_MS;
        let deleted = log.apply_retention(far_future, usize::MAX).await.unwrap();
        assert!(deleted >= 1);
        assert_eq!(log.segment_base_offsets(), vec![active_base]);
        assert_eq!(log.log_start_offset(), active_base);
        assert_eq!(
            log.apply_retention(far_future, usize::MAX).await.unwrap(),
            0
        );
        let tail: Vec<(i64, Vec<u8>)> = expected
            .into_iter()
            .filter(|(base, _)| *base >= active_base)
            .collect();
        assert!(!tail.is_empty());
        assert_eq!(read_all(&log, active_base), tail);
        let (after, _) = append(&log, 999, 1, 10, now).await;
        assert_eq!(after.base_offset, fresh_start + 2 * 12);
        assert_eq!(after.log_start_offset, active_base);
        log.close().await.unwrap();
    });
}

#[test]
fn time_retention_after_a_restart_uses_the_sealed_segments_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retain-restart-0");
    run(async move {
        let config = LogConfig {
            retention_ms: 60_000,
            ..config()
        };
        let now = wall_clock_ms();
        let log = PartitionLog::open(&path, config.clone(), context())
            .await
            .unwrap();
        append_many(&log, 0, 20, now - HOUR_MS).await;
        let fresh_start = log.log_end_offset();
        append_many(&log, 100, 10, now).await;
        let bases = log.segment_base_offsets();
        log.close().await.unwrap();
        drop(log);

        let log = PartitionLog::open(&path, config, context()).await.unwrap();
        assert_eq!(log.segment_base_offsets(), bases);
        // Nothing is older than its own newest timestamp: no deletion at that instant.
        assert_eq!(
            log.apply_retention(now - HOUR_MS, usize::MAX)
                .await
                .unwrap(),
            0
        );
        let kept_first = *bases.iter().rfind(|&&base| base <= fresh_start).unwrap();
        let deleted = log.apply_retention(now, usize::MAX).await.unwrap();
        assert_eq!(deleted, bases.iter().filter(|&&b| b < kept_first).count());
        assert!(deleted >= 2);
        assert_eq!(log.log_start_offset(), kept_first);
        assert_out_of_range(log.read(kept_first - 1, 1 << 20));
        log.close().await.unwrap();
    });
}

#[test]
fn size_retention_deletes_the_oldest_segments_beyond_retention_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retain-size-0");
    run(async move {
        let retention_bytes = 20_000u64;
        let config = LogConfig {
            retention_bytes: retention_bytes as i64,
            ..config()
        };
        let log = PartitionLog::open(&path, config, context()).await.unwrap();
        let stored = append_many(&log, 0, 60, wall_clock_ms()).await;
        let sizes = segment_sizes(&log);
        assert_eq!(
            sizes.iter().map(|(_, size)| size).sum::<u64>(),
            log.size_bytes()
        );
        // Kafka's rule: delete the oldest while what remains would still be >= retention.bytes.
        let mut remaining = log.size_bytes();
        let mut doomed = 0;
        while doomed + 1 < sizes.len() && remaining - sizes[doomed].1 >= retention_bytes {
            remaining -= sizes[doomed].1;
            doomed += 1;
        }
        assert!(doomed >= 3, "{sizes:?}");
        let now = wall_clock_ms();
        assert_eq!(log.apply_retention(now, 2).await.unwrap(), 2);
        assert_eq!(
            log.apply_retention(now, usize::MAX).await.unwrap(),
            doomed - 2
        );
        assert_eq!(log.apply_retention(now, usize::MAX).await.unwrap(), 0);
        let kept: Vec<i64> = sizes[doomed..].iter().map(|(base, _)| *base).collect();
        assert_eq!(log.segment_base_offsets(), kept);
        assert_eq!(log.size_bytes(), remaining);
        assert!(log.size_bytes() >= retention_bytes);
        assert!(log.size_bytes() - sizes[doomed].1 < retention_bytes);
        assert_eq!(log.log_start_offset(), kept[0]);
        for (base, _) in &sizes[..doomed] {
            assert_eq!(segment_files_exist(log.dir(), *base), [false; 3]);
        }
        assert_out_of_range(log.read(kept[0] - 1, 1 << 20));
        let tail: Vec<(i64, Vec<u8>)> = stored
            .into_iter()
            .filter(|(base, _)| *base >= kept[0])
            .collect();
        assert_eq!(read_all(&log, kept[0]), tail);
        log.close().await.unwrap();
    });
}

/// Checks the log start and what reads around it return.
fn assert_log_start(log: &PartitionLog, log_start: i64, stored: &[(i64, Vec<u8>)]) {
    assert_eq!(log.log_start_offset(), log_start);
    assert_out_of_range(log.read(log_start - 1, 1 << 20));
    let plan = log.read(log_start, 1 << 20).unwrap();
    assert_eq!(plan.log_start_offset, log_start);
    if log_start == log.durable_end_offset() {
        assert!(plan.is_empty());
        return;
    }
    // The first batch returned is the one holding log_start, whole.
    let batches = split_batches(&plan.to_vec().unwrap());
    let (first_base, first_bytes) = &batches[0];
    assert!(*first_base <= log_start && last_offset_of(first_bytes) >= log_start);
    let expected: Vec<(i64, Vec<u8>)> = stored
        .iter()
        .filter(|(base, bytes)| *base >= *first_base && last_offset_of(bytes) >= log_start)
        .cloned()
        .collect();
    assert_eq!(read_all(log, log_start), expected);
}

#[test]
fn delete_before_moves_the_log_start_exactly_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("delete-records-0");
    run(async move {
        let log = PartitionLog::open(&path, config(), context())
            .await
            .unwrap();
        let mut stored = Vec::new();
        for tag in 0..40 {
            let (result, bytes) = append(&log, tag, 3, 500, 1000).await;
            stored.push((result.base_offset, bytes));
        }
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 7, "{bases:?}");
        let checkpoint = path.join("log-start-offset");
        assert!(!checkpoint.exists());
        let end = log.durable_end_offset();
        assert_out_of_range(log.delete_before(end + 1).await);
        assert_out_of_range(log.delete_before(-1).await);

        // Inside the second batch of the fourth segment.
        let target = bases[3] + 4;
        assert_eq!(log.delete_before(target).await.unwrap(), target);
        assert!(checkpoint.exists());
        assert_eq!(log.segment_base_offsets(), bases[3..].to_vec());
        for base in &bases[..3] {
            assert_eq!(segment_files_exist(&path, *base), [false; 3]);
        }
        assert_log_start(&log, target, &stored);
        // Never backwards.
        assert_eq!(log.delete_before(target - 2).await.unwrap(), target);
        assert_log_start(&log, target, &stored);
        let (result, bytes) = append(&log, 100, 3, 500, 1000).await;
        assert_eq!(result.log_start_offset, target);
        stored.push((result.base_offset, bytes));

        // Clean restart.
        log.close().await.unwrap();
        drop(log);
        let log = PartitionLog::open(&path, config(), context())
            .await
            .unwrap();
        assert_eq!(log.segment_base_offsets()[0], bases[3]);
        assert_log_start(&log, target, &stored);

        // Exactly a segment base: the segments below go, that one stays.
        let target = bases[5];
        assert_eq!(log.delete_before(target).await.unwrap(), target);
        assert_eq!(log.segment_base_offsets()[0], bases[5]);
        assert_eq!(segment_files_exist(&path, bases[4]), [false; 3]);
        // Crash restart: no close, no clean-shutdown marker.
        drop(log);
        let log = PartitionLog::open(&path, config(), context())
            .await
            .unwrap();
        assert_eq!(log.segment_base_offsets()[0], bases[5]);
        assert_log_start(&log, target, &stored);

        // Up to the end: every sealed segment goes, the active one stays, empty to readers.
        let end = log.durable_end_offset();
        let active_base = *log.segment_base_offsets().last().unwrap();
        assert_eq!(log.delete_before(end).await.unwrap(), end);
        assert_eq!(log.segment_base_offsets(), vec![active_base]);
        assert_log_start(&log, end, &stored);
        drop(log);
        let log = PartitionLog::open(&path, config(), context())
            .await
            .unwrap();
        assert_log_start(&log, end, &stored);
        let (result, _) = append(&log, 200, 1, 10, 1000).await;
        assert_eq!((result.base_offset, result.log_start_offset), (end, end));
        log.close().await.unwrap();
    });
}

/// A crash (or a failed unlink) after DeleteRecords persisted its checkpoint but before it
/// removed the segments below it leaves those segments on disk; the next retention pass must
/// delete them even when neither retention.ms nor retention.bytes is set (as Kafka deletes
/// segments that fall below the log start offset).
#[test]
fn segments_left_below_the_log_start_by_an_interrupted_delete_before_are_deleted_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("delete-records-interrupted-0");
    run(async move {
        let (storage, faulty) = faulty_context(1 << 20);
        let log = PartitionLog::open(&path, config(), faulty).await.unwrap();
        let mut stored = Vec::new();
        for tag in 0..40 {
            let (result, bytes) = append(&log, tag, 3, 500, 1000).await;
            stored.push((result.base_offset, bytes));
        }
        let bases = log.segment_base_offsets();
        let target = bases[3] + 1;
        // Operation 1 (the checkpoint) succeeds, operation 2 (the first unlink) fails.
        storage.set_plan(Some(FaultPlan {
            kind: FaultKind::Any,
            fail_at_op: 2,
        }));
        assert!(log.delete_before(target).await.is_err());
        storage.set_plan(None);
        drop(log); // crash

        let log = PartitionLog::open(&path, config(), context())
            .await
            .unwrap();
        assert_log_start(&log, target, &stored);
        assert_eq!(
            log.segment_base_offsets(),
            bases,
            "the unlinks never happened"
        );
        assert_eq!(
            log.apply_retention(wall_clock_ms(), usize::MAX)
                .await
                .unwrap(),
            3
        );
        assert_eq!(log.segment_base_offsets(), bases[3..].to_vec());
        for base in &bases[..3] {
            assert_eq!(segment_files_exist(&path, *base), [false; 3]);
        }
        assert_log_start(&log, target, &stored);
        assert_eq!(
            log.apply_retention(wall_clock_ms(), usize::MAX)
                .await
                .unwrap(),
            0
        );
        log.close().await.unwrap();
    });
}

#[test]
fn retention_set_passes_and_the_spawned_task() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig {
            retention_ms: 60_000,
            ..config()
        };
        let old_ms = wall_clock_ms() - HOUR_MS;
        let mut logs = Vec::new();
        for name in ["a-0", "b-0", "c-0"] {
            let log = PartitionLog::open(root.join(name), config.clone(), context())
                .await
                .unwrap();
            append_many(&log, 0, 30, old_ms).await;
            assert!(log.segment_count() >= 4);
            logs.push(log);
        }
        let counts: Vec<usize> = logs.iter().map(PartitionLog::segment_count).collect();
        let set = RetentionSet::new();
        for log in &logs {
            set.add(log.clone());
        }
        set.remove(&logs[2]);
        let now = wall_clock_ms();
        assert_eq!(set.run_once(now, 1).await, 2);
        let rest = counts[0] + counts[1] - 2 - 2;
        assert_eq!(set.run_once(now, usize::MAX).await, rest);
        assert_eq!(logs[0].segment_count(), 1);
        assert_eq!(logs[1].segment_count(), 1);
        assert_eq!(
            logs[2].segment_count(),
            counts[2],
            "a removed log is left alone"
        );

        // The background task: a pass every interval.
        let interval = Duration::from_millis(20);
        let background = RetentionSet::new();
        background.add(logs[2].clone());
        background.spawn(interval, 100);
        let started = Instant::now();
        while logs[2].segment_count() > 1 {
            assert!(
                started.elapsed() < interval * 25,
                "the retention task did not run"
            );
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        println!("retention task deleted within {:?}", started.elapsed());
        // Dropping the set stops the task (let a pass in flight finish first).
        drop(background);
        glommio::timer::sleep(interval * 3).await;
        append_many(&logs[2], 100, 20, old_ms).await;
        let count = logs[2].segment_count();
        assert!(count >= 3);
        glommio::timer::sleep(interval * 8).await;
        assert_eq!(logs[2].segment_count(), count);
        for log in &logs {
            log.close().await.unwrap();
        }
    });
}

/// RetentionSet's contract: a closed log left in the set is skipped; its files may already
/// belong to a log reopened on the same directory.
#[test]
fn a_closed_log_left_in_a_retention_set_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("closed-0");
    run(async move {
        let config = LogConfig {
            retention_ms: 60_000,
            ..config()
        };
        let log = PartitionLog::open(&path, config.clone(), context())
            .await
            .unwrap();
        append_many(&log, 0, 30, wall_clock_ms() - HOUR_MS).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4);
        let set = RetentionSet::new();
        set.add(log.clone());
        log.close().await.unwrap();
        assert_eq!(set.run_once(wall_clock_ms(), usize::MAX).await, 0);
        assert!(matches!(
            log.apply_retention(wall_clock_ms(), usize::MAX).await,
            Err(LogError::Closed)
        ));
        assert!(matches!(
            log.delete_before(bases[2]).await,
            Err(LogError::Closed)
        ));
        for base in &bases {
            assert_eq!(segment_files_exist(&path, *base), [true; 3]);
        }
        let reopened = PartitionLog::open(&path, config, context()).await.unwrap();
        assert_eq!(reopened.segment_base_offsets(), bases);
        assert_eq!(reopened.log_start_offset(), 0);
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_plan_taken_before_its_segment_is_deleted_still_sends_the_right_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lease-0");
    run(async move {
        // No tail cache: every plan is a file range holding a lease on its segment.
        let log = PartitionLog::open(&path, config(), LogContext::direct(0))
            .await
            .unwrap();
        let stored = append_many(&log, 0, 40, 1000).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 5);
        let first_plan = log.read(0, 1 << 20).unwrap();
        assert!(matches!(first_plan.chunks[..], [ReadChunk::File(_)]));
        let expected_first: Vec<u8> = stored
            .iter()
            .filter(|(base, _)| *base < bases[1])
            .flat_map(|(_, bytes)| bytes.clone())
            .collect();
        assert_eq!(first_plan.to_vec().unwrap(), expected_first);
        let spanning_plan = plan_to_end(&log, bases[1], 4096);
        let expected_rest: Vec<u8> = stored
            .iter()
            .filter(|(base, _)| *base >= bases[1])
            .flat_map(|(_, bytes)| bytes.clone())
            .collect();

        // DeleteRecords removes the first segment under the first plan.
        log.delete_before(bases[1]).await.unwrap();
        assert_eq!(segment_files_exist(&path, bases[0]), [false; 3]);
        // Size retention removes every other sealed segment under the second plan.
        log.set_config(LogConfig {
            retention_bytes: 0,
            ..config()
        })
        .unwrap();
        let deleted = log
            .apply_retention(wall_clock_ms(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(deleted, bases.len() - 2);
        assert_eq!(segment_files_exist(&path, bases[1]), [false; 3]);
        assert_out_of_range(log.read(0, 1 << 20));

        for (plan, expected) in [(first_plan, expected_first), (spanning_plan, expected_rest)] {
            assert_eq!(plan.to_vec().unwrap(), expected);
            let (sender, receiver) = loopback_pair();
            let reader = drain_to_end(receiver);
            let sent = send_plan(plan, std::os::fd::AsRawFd::as_raw_fd(&sender))
                .await
                .unwrap();
            drop(sender);
            assert_eq!(sent, expected.len() as u64);
            assert_eq!(reader.join().unwrap(), expected);
        }
        log.close().await.unwrap();
    });
}
