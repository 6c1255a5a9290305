//! Idempotent producers against a real log: retries of any of a producer's last five batches
//! are answered with the original offsets and not appended again (also while the original is
//! still queued, after a clean restart, after a power loss, and when producer snapshots are
//! damaged); gaps and new epochs not starting at 0 get OUT_OF_ORDER_SEQUENCE_NUMBER (45); older
//! epochs get INVALID_PRODUCER_EPOCH (47); truncation and lost tails forget what they removed.
mod common;

use bytes::BytesMut;
use common::*;
use runnel_engine::batch;
use runnel_engine::fault::{FaultKind, FaultPlan};
use runnel_engine::{AppendResult, FlushPolicy, LogConfig, LogContext, LogError, PartitionLog};
use std::path::Path;

const PRODUCER: i64 = 4242;

/// A batch of `records` records of `producer_id` starting at `sequence`, values tagged with the
/// sequence so a reader can tell batches apart.
fn producer_batch(producer_id: i64, epoch: i16, sequence: i32, records: usize) -> BytesMut {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|index| {
            let mut value = format!("{producer_id}:{epoch}:{}-", sequence as usize + index);
            value.push_str(&"x".repeat(100)); // segments of 2 KiB roll every few batches
            value.into_bytes()
        })
        .collect();
    let entries: Vec<batch::BuildRecord<'_>> = values
        .iter()
        .map(|value| (None, Some(value.as_slice()), 1_000))
        .collect();
    let bytes = batch::build_batch_with_producer(&entries, producer_id, epoch, sequence);
    BytesMut::from(&bytes[..])
}

async fn append(log: &PartitionLog, producer_id: i64, epoch: i16, sequence: i32) -> AppendResult {
    log.append(producer_batch(producer_id, epoch, sequence, 2))
        .await
        .unwrap_or_else(|error| panic!("append {producer_id}/{epoch}/{sequence}: {error}"))
}

async fn try_append(
    log: &PartitionLog,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
) -> Result<AppendResult, LogError> {
    log.append(producer_batch(producer_id, epoch, sequence, 2))
        .await
}

/// Every record value in the log, in offset order.
fn values(log: &PartitionLog) -> Vec<String> {
    let mut out = Vec::new();
    for (_, bytes) in read_all(log, log.log_start_offset()) {
        // Uncompressed records: each value is the only ASCII run of the form "p:e:s".
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for word in text.split(|c: char| !(c.is_ascii_digit() || c == ':')) {
            let well_formed = word.split(':').all(|part| !part.is_empty());
            if word.matches(':').count() == 2 && well_formed {
                out.push(word.to_string());
            }
        }
    }
    out
}

fn expected_values(producer_id: i64, epoch: i16, sequences: std::ops::Range<i32>) -> Vec<String> {
    sequences
        .map(|sequence| format!("{producer_id}:{epoch}:{sequence}"))
        .collect()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        preallocate_bytes: 4096,
        ..LogConfig::default()
    }
}

#[test]
fn retries_of_the_last_five_batches_get_their_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    run(async move {
        let log = PartitionLog::open(dir.path(), LogConfig::default(), context())
            .await
            .unwrap();
        let mut originals = Vec::new();
        for sequence in (0..12).step_by(2) {
            originals.push(append(&log, PRODUCER, 0, sequence).await);
        }
        let end = log.log_end_offset();
        // The newest five are remembered: a retry gets the original offsets.
        for (index, original) in originals.iter().enumerate().skip(1) {
            let retry = append(&log, PRODUCER, 0, index as i32 * 2).await;
            assert_eq!(retry.base_offset, original.base_offset);
            assert_eq!(retry.last_offset, original.last_offset);
        }
        // The sixth newest is forgotten, and out of order now.
        let forgotten = try_append(&log, PRODUCER, 0, 0).await;
        assert!(matches!(forgotten, Err(LogError::OutOfOrderSequence(_))));
        assert_eq!(log.log_end_offset(), end, "no retry was appended");
        // A plain (non-idempotent) batch in between changes nothing for the producer.
        log.append(tagged_batch(1, 1, 10, 1_000)).await.unwrap();
        let next = append(&log, PRODUCER, 0, 12).await;
        assert_eq!(next.base_offset, end + 1);
        let mut expected = expected_values(PRODUCER, 0, 0..12);
        expected.extend(expected_values(PRODUCER, 0, 12..14));
        assert_eq!(values(&log), expected, "every record once, in order");
        log.close().await.unwrap();
    });
}

#[test]
fn a_retry_of_a_still_queued_batch_waits_for_it_and_gets_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    run(async move {
        let log = PartitionLog::open(dir.path(), LogConfig::default(), context())
            .await
            .unwrap();
        append(&log, PRODUCER, 0, 0).await;
        // `zip` polls the original first (it is queued and waits for the flusher), then the
        // retry, which finds the original among the queued batches.
        let (original, retry) = futures_lite::future::zip(
            try_append(&log, PRODUCER, 0, 2),
            try_append(&log, PRODUCER, 0, 2),
        )
        .await;
        let (original, retry) = (original.unwrap(), retry.unwrap());
        assert_eq!(original, retry);
        assert_eq!(original.base_offset, 2);
        assert!(
            log.durable_end_offset() > retry.last_offset,
            "answered once durable"
        );
        // Out of order against a queued batch is refused at once.
        let (queued, gap) = futures_lite::future::zip(
            try_append(&log, PRODUCER, 0, 4),
            try_append(&log, PRODUCER, 0, 7),
        )
        .await;
        assert!(queued.is_ok());
        assert!(matches!(gap, Err(LogError::OutOfOrderSequence(_))));
        assert_eq!(values(&log), expected_values(PRODUCER, 0, 0..6));
        log.close().await.unwrap();
    });
}

#[test]
fn gaps_are_out_of_order_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    run(async move {
        let log = PartitionLog::open(dir.path(), LogConfig::default(), context())
            .await
            .unwrap();
        append(&log, PRODUCER, 0, 0).await;
        for sequence in [3, 1, 2_000_000] {
            let error = try_append(&log, PRODUCER, 0, sequence).await.unwrap_err();
            assert!(matches!(error, LogError::OutOfOrderSequence(_)), "{error}");
            assert_eq!(error.kafka_error_code(), 45);
        }
        assert_eq!(log.log_end_offset(), 2);
        // An unknown producer may start anywhere (Kafka 4: no UNKNOWN_PRODUCER_ID).
        let other = append(&log, PRODUCER + 1, 0, 500).await;
        assert_eq!(other.base_offset, 2);
        append(&log, PRODUCER, 0, 2).await;
        log.close().await.unwrap();
    });
}

#[test]
fn older_epochs_are_fenced_and_a_new_epoch_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    run(async move {
        let log = PartitionLog::open(dir.path(), LogConfig::default(), context())
            .await
            .unwrap();
        append(&log, PRODUCER, 5, 0).await;
        let error = try_append(&log, PRODUCER, 6, 2).await.unwrap_err();
        assert!(matches!(error, LogError::OutOfOrderSequence(_)), "{error}");
        append(&log, PRODUCER, 6, 0).await;
        for (epoch, sequence) in [(5, 2), (5, 0), (0, 0)] {
            let error = try_append(&log, PRODUCER, epoch, sequence)
                .await
                .unwrap_err();
            assert!(
                matches!(error, LogError::InvalidProducerEpoch(_)),
                "{error}"
            );
            assert_eq!(error.kafka_error_code(), 47);
        }
        assert_eq!(log.log_end_offset(), 4);
        log.close().await.unwrap();
    });
}

#[test]
fn duplicates_are_recognised_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        // Small segments: the snapshot taken at the roll and the one taken at close both count.
        let log = open_log(&path, &small_segments(), &context()).await;
        let mut originals = Vec::new();
        for sequence in (0..60).step_by(2) {
            originals.push(append(&log, PRODUCER, 1, sequence).await);
        }
        append(&log, PRODUCER + 1, 0, 0).await; // only in the newest segment
        assert!(log.segment_count() > 3);
        log.close().await.unwrap();
        let log = open_log(&path, &small_segments(), &context()).await;
        for (index, original) in originals.iter().enumerate().skip(25) {
            let retry = append(&log, PRODUCER, 1, index as i32 * 2).await;
            assert_eq!(&retry, original);
        }
        assert!(matches!(
            try_append(&log, PRODUCER, 1, 61).await,
            Err(LogError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            try_append(&log, PRODUCER, 0, 60).await,
            Err(LogError::InvalidProducerEpoch(_))
        ));
        assert!(matches!(
            try_append(&log, PRODUCER + 1, 0, 5).await,
            Err(LogError::OutOfOrderSequence(_))
        ));
        append(&log, PRODUCER, 1, 60).await;
        assert_eq!(values(&log).len(), 60 + 2 + 2);
        log.close().await.unwrap();
    });
}

#[test]
fn duplicates_are_recognised_after_a_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (storage, context) = faulty_context(1 << 20);
        let log = open_log(&path, &small_segments(), &context).await;
        let mut originals = Vec::new();
        for sequence in (0..50).step_by(2) {
            originals.push(append(&log, PRODUCER, 0, sequence).await);
        }
        assert!(log.segment_count() > 2);
        drop(log);
        storage.power_loss().unwrap();
        let log = open_log(&path, &small_segments(), &context).await;
        // The newest five were acknowledged after fdatasync: all are still known.
        for (index, original) in originals.iter().enumerate().skip(20) {
            let retry = append(&log, PRODUCER, 0, index as i32 * 2).await;
            assert_eq!(&retry, original);
        }
        let next = append(&log, PRODUCER, 0, 50).await;
        assert_eq!(next.base_offset, originals.last().unwrap().last_offset + 1);
        assert_eq!(values(&log), expected_values(PRODUCER, 0, 0..52));
        log.close().await.unwrap();
    });
}

#[test]
fn a_batch_lost_in_a_power_loss_is_appended_again_not_answered_as_a_duplicate() {
    // FlushPolicy::Never acknowledges after the write: a power loss may take acknowledged
    // batches. The rebuilt state must not remember them, or their retries would be answered
    // with offsets that hold nothing (or another producer's records).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (storage, context) = faulty_context(1 << 20);
        let config = LogConfig {
            flush: FlushPolicy::Never,
            ..LogConfig::default()
        };
        let log = open_log(&path, &config, &context).await;
        append(&log, PRODUCER, 0, 0).await;
        log.close().await.unwrap(); // durable, with a snapshot at offset 2
        let log = open_log(&path, &config, &context).await;
        append(&log, PRODUCER, 0, 2).await; // written, never synced
        drop(log);
        storage.power_loss().unwrap();
        let log = open_log(&path, &config, &context).await;
        assert_eq!(log.log_end_offset(), 2, "the unsynced batch is gone");
        let retry = append(&log, PRODUCER, 0, 2).await;
        assert_eq!(retry.base_offset, 2, "appended again");
        assert_eq!(values(&log), expected_values(PRODUCER, 0, 0..4));
        log.close().await.unwrap();
    });
}

#[test]
fn after_a_failed_sync_only_durable_batches_count_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (storage, context) = faulty_context(1 << 20);
        let log = open_log(&path, &LogConfig::default(), &context).await;
        let first = append(&log, PRODUCER, 0, 0).await;
        storage.set_plan(Some(FaultPlan {
            kind: FaultKind::Sync,
            fail_at_op: 1,
        }));
        let failed = try_append(&log, PRODUCER, 0, 2).await;
        assert!(matches!(failed, Err(LogError::Poisoned(_))), "{failed:?}");
        // The poisoned log refuses the retry too (it is not answered from the queued state).
        assert!(matches!(
            try_append(&log, PRODUCER, 0, 2).await,
            Err(LogError::Poisoned(_))
        ));
        drop(log);
        storage.power_loss().unwrap();
        let log = open_log(&path, &LogConfig::default(), &context).await;
        assert_eq!(append(&log, PRODUCER, 0, 0).await, first);
        let retry = append(&log, PRODUCER, 0, 2).await;
        assert_eq!(
            retry.base_offset, 2,
            "the unacknowledged batch is appended once"
        );
        assert_eq!(values(&log), expected_values(PRODUCER, 0, 0..4));
        log.close().await.unwrap();
    });
}

#[test]
fn truncation_forgets_the_batches_it_removes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open_log(&path, &small_segments(), &context()).await;
        let mut originals = Vec::new();
        for sequence in (0..40).step_by(2) {
            originals.push(append(&log, PRODUCER, 0, sequence).await);
        }
        let segments_before = log.segment_count();
        // Cut back into an older segment: sequences 20.. are gone.
        let cut = originals[10].base_offset;
        assert_eq!(log.truncate_to(cut).await.unwrap(), cut);
        assert!(log.segment_count() < segments_before);
        assert!(matches!(
            try_append(&log, PRODUCER, 0, 40).await,
            Err(LogError::OutOfOrderSequence(_))
        ));
        let again = append(&log, PRODUCER, 0, 20).await;
        assert_eq!(
            again.base_offset, cut,
            "not a duplicate: appended at the new end"
        );
        assert_eq!(append(&log, PRODUCER, 0, 18).await, originals[9]);
        log.close().await.unwrap();
        // The snapshots taken before the truncation are not used after a restart.
        let log = open_log(&path, &small_segments(), &context()).await;
        assert_eq!(append(&log, PRODUCER, 0, 20).await, again);
        append(&log, PRODUCER, 0, 22).await;
        assert_eq!(values(&log), expected_values(PRODUCER, 0, 0..24));
        log.close().await.unwrap();
    });
}

/// Snapshot files of the log in `dir`, oldest first.
fn snapshot_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "snapshot"))
        .collect();
    files.sort();
    files
}

/// A log whose producer 1 wrote only into the oldest segment and producer 2 throughout.
async fn log_with_an_old_producer(path: &Path, context: &LogContext) -> Vec<AppendResult> {
    let log = open_log(path, &small_segments(), context).await;
    append(&log, 1, 0, 0).await;
    append(&log, 1, 0, 2).await;
    let mut originals = Vec::new();
    for sequence in (0..60).step_by(2) {
        originals.push(append(&log, 2, 0, sequence).await);
    }
    assert!(log.segment_count() > 4);
    log.close().await.unwrap();
    originals
}

async fn check_producers_known(path: &Path, context: &LogContext, originals: &[AppendResult]) {
    let log = open_log(path, &small_segments(), context).await;
    for (index, original) in originals.iter().enumerate().skip(25) {
        assert_eq!(&append(&log, 2, 0, index as i32 * 2).await, original);
    }
    // Producer 1 is still known from the oldest segment: a gap is refused.
    assert!(matches!(
        try_append(&log, 1, 0, 9).await,
        Err(LogError::OutOfOrderSequence(_))
    ));
    append(&log, 1, 0, 4).await;
    log.close().await.unwrap();
}

#[test]
fn a_corrupt_snapshot_falls_back_to_an_older_one_or_a_scan() {
    for damage in ["newest", "all", "missing"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            let originals = log_with_an_old_producer(&path, &context()).await;
            let snapshots = snapshot_files(&path);
            assert_eq!(snapshots.len(), 2, "the newest two are kept");
            let damaged = match damage {
                "newest" => &snapshots[1..],
                _ => &snapshots[..],
            };
            for file in damaged {
                if damage == "missing" {
                    std::fs::remove_file(file).unwrap();
                } else {
                    let mut bytes = std::fs::read(file).unwrap();
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 0x40;
                    std::fs::write(file, bytes).unwrap();
                }
            }
            check_producers_known(&path, &context(), &originals).await;
        });
    }
}

#[test]
fn a_good_snapshot_spares_reading_sealed_segments() {
    // Zero the oldest segment (producer 1's only batches) after a clean close: with the
    // snapshots intact, producer 1 is still known, so nothing read that segment. Without them
    // the scan finds nothing there, and producer 1 is new again (any sequence accepted).
    for keep_snapshots in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            log_with_an_old_producer(&path, &context()).await;
            let oldest = path.join(format!("{:020}.log", 0));
            let size = std::fs::metadata(&oldest).unwrap().len();
            std::fs::write(&oldest, vec![0u8; size as usize]).unwrap();
            if !keep_snapshots {
                for file in snapshot_files(&path) {
                    std::fs::remove_file(file).unwrap();
                }
            }
            let log = open_log(&path, &small_segments(), &context()).await;
            let gap = try_append(&log, 1, 0, 9).await;
            if keep_snapshots {
                assert!(
                    matches!(gap, Err(LogError::OutOfOrderSequence(_))),
                    "{gap:?}"
                );
            } else {
                assert!(gap.is_ok(), "{gap:?}");
            }
            log.close().await.unwrap();
        });
    }
}

#[test]
fn a_snapshot_past_the_log_end_is_never_used() {
    // A truncation removes snapshots past its cut, but a crash before the directory sync can
    // bring one back. Open must delete it before appends carry the log past its offset again,
    // or a later open would take the pre-truncation state for the truth.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig::default(); // one segment: snapshots only at close
        let log = open_log(&path, &config, &context()).await;
        for sequence in (0..20).step_by(2) {
            append(&log, PRODUCER, 0, sequence).await;
        }
        log.close().await.unwrap();
        let stale = snapshot_files(&path).pop().unwrap();
        let stale_bytes = std::fs::read(&stale).unwrap();
        let log = open_log(&path, &config, &context()).await;
        log.truncate_to(10).await.unwrap();
        assert!(
            !stale.exists(),
            "truncation removed the snapshot past its cut"
        );
        log.close().await.unwrap();
        std::fs::write(&stale, stale_bytes).unwrap(); // as if the removal was lost
        let log = open_log(&path, &config, &context()).await;
        // The producer restarts with a new epoch; its batches pass the stale snapshot's offset.
        let mut originals = Vec::new();
        for sequence in (0..14).step_by(2) {
            originals.push(append(&log, PRODUCER, 1, sequence).await);
        }
        assert!(log.log_end_offset() > 20);
        drop(log); // a crash: no new snapshot
        let log = open_log(&path, &config, &context()).await;
        for (index, original) in originals.iter().enumerate().skip(2) {
            assert_eq!(&append(&log, PRODUCER, 1, index as i32 * 2).await, original);
        }
        log.close().await.unwrap();
    });
}
