//! Recovery checkpoints: after an unclean shutdown, open trusts the synced prefix a checkpoint
//! records and reads only what follows it; a torn or damaged tail after it is still cut at the
//! last valid batch; a missing, corrupt or stale checkpoint falls back to scanning the whole
//! segment and never loses or resurrects a batch; idempotent producers are still deduplicated.
mod common;

use bytes::BytesMut;
use common::*;
use runnel_engine::batch;
use runnel_engine::fault::FaultyStorage;
use runnel_engine::{FlushPolicy, LogConfig, LogContext, LogError, PartitionLog, RecoveryMode};
use std::path::Path;

const CHECKPOINT_FILE: &str = "recovery-checkpoint";
const INDEX_INTERVAL_BYTES: u64 = 1024;
const PREALLOCATE_BYTES: u64 = 16 << 10;
/// The largest batch [`batch_for`] builds, with room to spare.
const BATCH_BYTES_MAX: u64 = 8 << 10;

/// One segment (no roll), a fine index and little preallocation, so the bytes an open reads are
/// easy to bound.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        index_interval_bytes: INDEX_INTERVAL_BYTES,
        preallocate_bytes: PREALLOCATE_BYTES,
        ..LogConfig::default()
    }
}

/// The batch appended for `tag` (shape derived from the tag, so sizes vary).
fn batch_for(tag: u64) -> BytesMut {
    let records = 1 + (tag % 4) as usize;
    let value_bytes = 100 + (tag.wrapping_mul(7919) % 1200) as usize;
    tagged_batch(tag, records, value_bytes, 1_700_000_000_000 + tag as i64)
}

/// What the log must hold: (base offset, stored bytes) in offset order.
type Expected = Vec<(i64, Vec<u8>)>;

async fn append_tags(log: &PartitionLog, tags: std::ops::Range<u64>, expected: &mut Expected) {
    for tag in tags {
        let batch = batch_for(tag);
        let sent = batch.to_vec();
        let result = log.append(batch).await.expect("append");
        expected.push((result.base_offset, stamped(&sent, result.base_offset)));
    }
}

fn end_of(expected: &[(i64, Vec<u8>)]) -> i64 {
    expected
        .last()
        .map_or(0, |(_, bytes)| last_offset_of(bytes) + 1)
}

fn assert_holds(log: &PartitionLog, expected: &[(i64, Vec<u8>)], context: &str) {
    assert_eq!(log.log_end_offset(), end_of(expected), "{context}: log end");
    let stored = read_all(log, 0);
    assert_eq!(stored.len(), expected.len(), "{context}: batch count");
    for ((base, bytes), (expected_base, expected_bytes)) in stored.iter().zip(expected) {
        assert_eq!(base, expected_base, "{context}: batch base offset");
        assert!(
            bytes == expected_bytes,
            "{context}: the batch at {base} is not the one appended"
        );
    }
}

fn segment_path(dir: &Path) -> std::path::PathBuf {
    let logs = segment_logs(dir);
    assert_eq!(logs.len(), 1, "the tests use one segment");
    logs[0].1.clone()
}

/// Appends `before` batches, checkpoints, appends `after` more (all synced: EveryCommit), then
/// drops the log without closing it and loses power. Returns the expected contents and the log
/// size at the checkpoint.
async fn crash_after_checkpoint(
    path: &Path,
    storage: &FaultyStorage,
    context: &LogContext,
    before: u64,
    after: u64,
) -> (Expected, u64) {
    let log = open_log(path, &config(), context).await;
    let mut expected = Vec::new();
    append_tags(&log, 0..before, &mut expected).await;
    assert!(
        log.checkpoint().await.expect("checkpoint"),
        "a checkpoint is written"
    );
    assert!(
        !log.checkpoint().await.expect("checkpoint"),
        "nothing new: no second checkpoint"
    );
    let checkpointed_bytes = log.size_bytes();
    append_tags(&log, before..before + after, &mut expected).await;
    drop(log);
    storage.power_loss().expect("power loss");
    (expected, checkpointed_bytes)
}

/// The most an open may read after a checkpoint at `checkpointed` of a log of `total` bytes:
/// the check of the last indexed batches before the checkpoint, then everything after it up to
/// the end of the file (which runs past the data by the preallocation).
fn tail_read_bound(checkpointed: u64, total: u64) -> u64 {
    (total - checkpointed) + PREALLOCATE_BYTES + 4096 + INDEX_INTERVAL_BYTES + 2 * BATCH_BYTES_MAX
}

#[test]
fn restart_after_a_checkpoint_reads_only_what_follows_it() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    run(async move {
        let (storage, context) = faulty_context(0);
        let (expected, checkpointed) =
            crash_after_checkpoint(&path, &storage, &context, 3000, 20).await;
        let total: u64 = expected.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        assert!(total > 2 << 20 && total - checkpointed < 64 << 10);

        let log = open_log(&path, &config(), &context).await;
        let stats = log.recovery_stats();
        eprintln!("{total} bytes, checkpoint at {checkpointed}: {stats:?}");
        assert_eq!(stats.mode, RecoveryMode::Checkpoint);
        assert_eq!(stats.trusted_bytes, checkpointed);
        let bound = tail_read_bound(checkpointed, total);
        assert!(
            stats.scanned_bytes <= bound,
            "read {} bytes to recover a {} byte tail (bound {bound})",
            stats.scanned_bytes,
            total - checkpointed
        );
        assert!(
            stats.producer_replay_bytes <= bound,
            "producer state replayed {} bytes (bound {bound}): the checkpoint's snapshot was \
             not used",
            stats.producer_replay_bytes
        );
        assert_holds(&log, &expected, "after the checkpointed restart");
        let appended = log.append(batch_for(99_999)).await.expect("append");
        assert_eq!(appended.base_offset, end_of(&expected));
        drop(log);

        // The same log without the checkpoint: the whole segment is read (the counters count).
        storage.power_loss().expect("power loss");
        std::fs::remove_file(path.join(CHECKPOINT_FILE)).expect("remove the checkpoint");
        let log = open_log(&path, &config(), &context).await;
        let stats = log.recovery_stats();
        assert_eq!(stats.mode, RecoveryMode::FullScan);
        assert_eq!(stats.trusted_bytes, 0);
        assert!(stats.scanned_bytes >= total, "{stats:?}");
        assert!(
            stats.producer_replay_bytes >= total - BATCH_BYTES_MAX,
            "{stats:?}"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn checkpoints_extend_the_journal_and_survive_clean_restarts() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    let killed = root.path().join("killed");
    run(async move {
        let (storage, context) = faulty_context(0);
        let mut expected = Vec::new();
        let log = open_log(&path, &config(), &context).await;
        // Many checkpoints, each after a few appends: the journal is appended to and rewritten
        // when it grows; the newest record always wins.
        let mut checkpointed = Vec::new();
        for round in 0..60u64 {
            append_tags(&log, round * 20..round * 20 + 20, &mut expected).await;
            assert!(log.checkpoint().await.expect("checkpoint"));
            checkpointed.push(log.size_bytes());
        }
        let journal_bytes = std::fs::metadata(path.join(CHECKPOINT_FILE)).unwrap().len();
        append_tags(&log, 5000..5003, &mut expected).await;
        drop(log);
        // A process crash keeps every write: the newest record is there.
        copy_dir(&path, &killed);
        let log = open_log(&killed, &config(), &LogContext::direct(0)).await;
        let stats = log.recovery_stats();
        assert_eq!(stats.mode, RecoveryMode::Checkpoint, "{stats:?}");
        assert_eq!(stats.trusted_bytes, *checkpointed.last().unwrap());
        assert_holds(&log, &expected, "kill after 60 checkpoints");
        log.close().await.expect("close");
        // A power loss keeps at least the synced fresh record the appended ones extend.
        storage.power_loss().expect("power loss");
        let log = open_log(&path, &config(), &context).await;
        let stats = log.recovery_stats();
        assert_eq!(stats.mode, RecoveryMode::Checkpoint, "{stats:?}");
        assert!(checkpointed.contains(&stats.trusted_bytes), "{stats:?}");
        assert_holds(&log, &expected, "power loss after 60 checkpoints");
        // The journal stays within about twice a fresh record (entries of the prefix).
        let entries_bytes = checkpointed.last().unwrap() / INDEX_INTERVAL_BYTES * 20;
        assert!(
            journal_bytes <= 2 * entries_bytes + (192 << 10),
            "journal of {journal_bytes} bytes for {entries_bytes} bytes of index entries"
        );
        // A clean close and reopen trusts the indexes; a crash after it still finds the
        // checkpoint (it describes the same bytes).
        log.close().await.expect("close");
        let log = open_log(&path, &config(), &context).await;
        assert_eq!(log.recovery_stats().mode, RecoveryMode::Clean);
        append_tags(&log, 6000..6002, &mut expected).await;
        drop(log);
        storage.power_loss().expect("power loss");
        let log = open_log(&path, &config(), &context).await;
        assert_eq!(log.recovery_stats().mode, RecoveryMode::Checkpoint);
        assert_holds(&log, &expected, "crash after a clean restart");
        log.close().await.expect("close");
    });
}

#[test]
fn power_loss_after_a_checkpoint_loses_only_unsynced_batches() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    run(async move {
        let (storage, context) = faulty_context(0);
        let log = open_log(&path, &config(), &context).await;
        let mut expected = Vec::new();
        append_tags(&log, 0..500, &mut expected).await;
        assert!(log.checkpoint().await.expect("checkpoint"));
        let checkpointed = log.size_bytes();
        // Acknowledged but never synced: no checkpoint may cover them.
        log.set_config(LogConfig {
            flush: FlushPolicy::Never,
            ..config()
        })
        .expect("set config");
        let mut unsynced = Vec::new();
        append_tags(&log, 500..700, &mut unsynced).await;
        assert!(
            !log.checkpoint().await.expect("checkpoint"),
            "a checkpoint must not cover unsynced batches"
        );
        drop(log);
        storage.power_loss().expect("power loss");

        let log = open_log(&path, &config(), &context).await;
        let stats = log.recovery_stats();
        assert_eq!(stats.mode, RecoveryMode::Checkpoint, "{stats:?}");
        assert_eq!(stats.trusted_bytes, checkpointed);
        assert_holds(&log, &expected, "after losing the unsynced tail");
        let appended = log.append(batch_for(900)).await.expect("append");
        assert_eq!(appended.base_offset, end_of(&expected));
        log.close().await.expect("close");
    });
}

/// How a test damages the tail after the checkpoint.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// The file ends at the position (a torn write of the file size).
    Truncate,
    /// Random bytes from the position on (a torn write of the data).
    Garbage,
    /// One bit flipped at the position.
    FlipBit,
    /// Zeros from the position on (blocks never written).
    Zeros,
}

#[test]
fn a_damaged_tail_after_a_checkpoint_is_cut_at_the_last_valid_batch() {
    let mut rng = TestRng::from_env("damaged_tail_after_checkpoint");
    let root = tempfile::tempdir().unwrap();
    for round in 0..16u64 {
        let damage = [
            Damage::Truncate,
            Damage::Garbage,
            Damage::FlipBit,
            Damage::Zeros,
        ][(round % 4) as usize];
        let before = 50 + rng.below(300);
        let after = 1 + rng.below(60);
        let path = root.path().join(format!("topic-{round}"));
        let (expected, checkpointed) = run({
            let path = path.clone();
            async move {
                let (storage, context) = faulty_context(0);
                crash_after_checkpoint(&path, &storage, &context, before, after).await
            }
        });
        // Damage at a random byte after the checkpoint (sometimes exactly at it).
        let segment = segment_path(&path);
        let total: u64 = expected.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let mut position = if rng.percent(20) {
            checkpointed
        } else {
            checkpointed + rng.below(total - checkpointed)
        };
        // partitionLeaderEpoch (bytes 12..16 of a batch) lies outside the CRC: flip the CRC.
        let batch_start = batch_starts(&expected)
            .into_iter()
            .take_while(|start| *start <= position)
            .last()
            .expect("a batch at or before the position");
        if matches!(damage, Damage::FlipBit) && (12..16).contains(&(position - batch_start)) {
            position = batch_start + 17;
        }
        damage_at(&segment, position, damage, &mut rng);
        // The batches before the first one the damage changed survive, nothing after it.
        let damaged = std::fs::read(&segment).expect("read the segment");
        let kept: Expected = expected
            .iter()
            .zip(batch_starts(&expected))
            .take_while(|((_, bytes), start)| {
                let start = *start as usize;
                damaged.get(start..start + bytes.len()) == Some(bytes.as_slice())
            })
            .map(|(batch, _)| batch.clone())
            .collect();
        assert!(kept.len() < expected.len() || matches!(damage, Damage::Zeros | Damage::Garbage));
        let context =
            format!("round {round}: {damage:?} at {position} (checkpoint {checkpointed})");
        run(async move {
            let log = open_log(&path, &config(), &LogContext::direct(0)).await;
            let stats = log.recovery_stats();
            assert_eq!(stats.mode, RecoveryMode::Checkpoint, "{context}: {stats:?}");
            assert_eq!(stats.trusted_bytes, checkpointed, "{context}");
            assert_holds(&log, &kept, &context);
            let appended = log.append(batch_for(1 << 30)).await.expect("append");
            assert_eq!(appended.base_offset, end_of(&kept), "{context}");
            log.close().await.expect("close");
        });
    }
}

/// File positions of the batches of a one-segment log.
fn batch_starts(expected: &[(i64, Vec<u8>)]) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut position = 0u64;
    for (_, bytes) in expected {
        starts.push(position);
        position += bytes.len() as u64;
    }
    starts
}

fn damage_at(segment: &Path, position: u64, damage: Damage, rng: &mut TestRng) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .expect("open the segment");
    let file_bytes = file.metadata().expect("size").len();
    match damage {
        Damage::Truncate => file.set_len(position).expect("truncate"),
        Damage::Garbage | Damage::Zeros => {
            let mut bytes = vec![0u8; (file_bytes - position).min(3000) as usize];
            if matches!(damage, Damage::Garbage) {
                rng.fill(&mut bytes);
            }
            file.write_all_at(&bytes, position).expect("overwrite");
        }
        Damage::FlipBit => {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, position)
                .expect("read a byte");
            byte[0] ^= 1 << rng.below(8);
            file.write_all_at(&byte, position).expect("flip a bit");
        }
    }
}

#[test]
fn a_missing_or_corrupt_checkpoint_falls_back_to_a_full_scan() {
    let mut rng = TestRng::from_env("corrupt_checkpoint");
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    let (expected, checkpointed) = run({
        let path = pristine.clone();
        async move {
            let (storage, context) = faulty_context(0);
            crash_after_checkpoint(&path, &storage, &context, 800, 30).await
        }
    });
    let journal = std::fs::read(pristine.join(CHECKPOINT_FILE)).expect("a checkpoint file");
    for round in 0..24u64 {
        let path = root.path().join(format!("copy-{round}"));
        copy_dir(&pristine, &path);
        let target = path.join(CHECKPOINT_FILE);
        let what = match round % 6 {
            0 => {
                std::fs::remove_file(&target).unwrap();
                "missing".to_string()
            }
            1 => {
                let cut = rng.below(journal.len() as u64) as usize;
                std::fs::write(&target, &journal[..cut]).unwrap();
                format!("cut to {cut} bytes")
            }
            2 | 3 => {
                let mut bytes = journal.clone();
                let at = rng.below(journal.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
                std::fs::write(&target, &bytes).unwrap();
                format!("bit flipped at {at}")
            }
            4 => {
                let mut bytes = vec![0u8; journal.len()];
                rng.fill(&mut bytes);
                std::fs::write(&target, &bytes).unwrap();
                "random bytes".to_string()
            }
            _ => {
                std::fs::write(&target, vec![0u8; 8192]).unwrap();
                "zeros".to_string()
            }
        };
        let context = format!("round {round}: checkpoint {what}");
        let expected = expected.clone();
        run(async move {
            let log = open_log(&path, &config(), &LogContext::direct(0)).await;
            let stats = log.recovery_stats();
            // A damaged journal may still hold the valid record before the damage; it can
            // never claim more than was checkpointed.
            match stats.mode {
                RecoveryMode::FullScan => assert_eq!(stats.trusted_bytes, 0, "{context}"),
                RecoveryMode::Checkpoint => {
                    assert!(stats.trusted_bytes <= checkpointed, "{context}: {stats:?}")
                }
                RecoveryMode::Clean => panic!("{context}: no clean shutdown happened"),
            }
            if round % 6 == 0 || round % 6 >= 4 {
                assert_eq!(stats.mode, RecoveryMode::FullScan, "{context}");
            }
            assert_holds(&log, &expected, &context);
            log.close().await.expect("close");
        });
    }
}

#[test]
fn a_checkpoint_past_the_end_of_the_segment_is_not_trusted() {
    // Synced data lost after all (a disk that lied): the file ends before the checkpoint.
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    let (expected, checkpointed) = run({
        let path = path.clone();
        async move {
            let (storage, context) = faulty_context(0);
            crash_after_checkpoint(&path, &storage, &context, 400, 0).await
        }
    });
    let segment = segment_path(&path);
    let keep = expected.len() / 2;
    let cut: u64 = expected[..keep]
        .iter()
        .map(|(_, bytes)| bytes.len() as u64)
        .sum();
    assert!(cut < checkpointed);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    run(async move {
        let log = open_log(&path, &config(), &LogContext::direct(0)).await;
        assert_eq!(log.recovery_stats().mode, RecoveryMode::FullScan);
        assert_holds(&log, &expected[..keep], "file cut before the checkpoint");
        log.close().await.expect("close");
    });
}

#[test]
fn a_stale_checkpoint_never_resurrects_truncated_batches() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    let saved = root.path().join("saved-checkpoint");
    run({
        let path = path.clone();
        async move {
            let (storage, context) = faulty_context(0);
            let log = open_log(&path, &config(), &context).await;
            let mut expected = Vec::new();
            append_tags(&log, 0..600, &mut expected).await;
            assert!(log.checkpoint().await.expect("checkpoint"));
            std::fs::copy(path.join(CHECKPOINT_FILE), &saved).expect("save the checkpoint");
            // A replica truncating to its leader: the checkpoint goes with the cut.
            let cut_at = expected[200].0;
            let new_end = log.truncate_to(cut_at).await.expect("truncate");
            assert_eq!(new_end, cut_at);
            assert!(
                !path.join(CHECKPOINT_FILE).exists(),
                "truncation must remove the checkpoint"
            );
            expected.truncate(200);
            // Different batches (other sizes) take the truncated offsets, past the old
            // checkpoint's position.
            for tag in 10_000..10_900u64 {
                let batch = tagged_batch(tag, 2, 333, 1_700_000_000_000);
                let sent = batch.to_vec();
                let result = log.append(batch).await.expect("append");
                expected.push((result.base_offset, stamped(&sent, result.base_offset)));
            }
            drop(log);
            storage.power_loss().expect("power loss");
            // The old checkpoint comes back (say, its removal was lost).
            std::fs::copy(&saved, path.join(CHECKPOINT_FILE)).expect("restore");
            let log = open_log(&path, &config(), &context).await;
            assert_eq!(
                log.recovery_stats().mode,
                RecoveryMode::FullScan,
                "the stale checkpoint must not match the rewritten segment"
            );
            assert_holds(&log, &expected, "after the stale checkpoint came back");
            log.close().await.expect("close");
        }
    });
}

#[test]
fn a_checkpoint_of_a_segment_since_rolled_is_ignored() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    run(async move {
        let (storage, context) = faulty_context(0);
        let small = LogConfig {
            segment_bytes: 64 << 10,
            ..config()
        };
        let log = open_log(&path, &small, &context).await;
        let mut expected = Vec::new();
        append_tags(&log, 0..50, &mut expected).await;
        assert!(log.checkpoint().await.expect("checkpoint"));
        append_tags(&log, 50..400, &mut expected).await;
        assert!(log.segment_count() > 2);
        drop(log);
        storage.power_loss().expect("power loss");
        let log = open_log(&path, &small, &context).await;
        let stats = log.recovery_stats();
        assert_eq!(stats.mode, RecoveryMode::FullScan);
        assert_holds(&log, &expected, "checkpoint of an older segment");
        // The next checkpoint describes the newest segment.
        assert!(log.checkpoint().await.expect("checkpoint"));
        drop(log);
        storage.power_loss().expect("power loss");
        let log = open_log(&path, &small, &context).await;
        assert_eq!(log.recovery_stats().mode, RecoveryMode::Checkpoint);
        assert_holds(&log, &expected, "checkpoint after the roll");
        log.close().await.expect("close");
    });
}

// ---------------------------------------------------------------------------------------------
// Idempotent producers.

const PRODUCER: i64 = 77;
const OTHER_PRODUCER: i64 = 78;

fn producer_batch(producer_id: i64, epoch: i16, sequence: i32) -> BytesMut {
    let values: Vec<Vec<u8>> = (0..2)
        .map(|index| {
            format!(
                "{producer_id}:{epoch}:{}-{}",
                sequence + index,
                "v".repeat(300)
            )
        })
        .map(String::into_bytes)
        .collect();
    let entries: Vec<batch::BuildRecord<'_>> = values
        .iter()
        .map(|value| (None, Some(value.as_slice()), 1_000))
        .collect();
    BytesMut::from(&batch::build_batch_with_producer(&entries, producer_id, epoch, sequence)[..])
}

#[test]
fn idempotent_producers_are_deduplicated_after_a_checkpointed_restart() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    run(async move {
        let (storage, context) = faulty_context(0);
        let log = open_log(&path, &config(), &context).await;
        // Sequences advance by 2 (two records per batch).
        let mut offsets = Vec::new();
        for batch_index in 0..400 {
            let result = log
                .append(producer_batch(PRODUCER, 0, batch_index * 2))
                .await
                .expect("append");
            offsets.push(result.base_offset);
        }
        let other = log
            .append(producer_batch(OTHER_PRODUCER, 3, 0))
            .await
            .expect("append");
        assert!(log.checkpoint().await.expect("checkpoint"));
        let checkpointed = log.size_bytes();
        for batch_index in 400..403 {
            let result = log
                .append(producer_batch(PRODUCER, 0, batch_index * 2))
                .await
                .expect("append");
            offsets.push(result.base_offset);
        }
        let end = log.log_end_offset();
        drop(log);
        storage.power_loss().expect("power loss");
        let without_checkpoint = root.path().join("without-checkpoint");
        copy_dir(&path, &without_checkpoint);
        std::fs::remove_file(without_checkpoint.join(CHECKPOINT_FILE)).expect("remove");

        let log = open_log(&path, &config(), &context).await;
        let stats = log.recovery_stats();
        assert_eq!(stats.mode, RecoveryMode::Checkpoint, "{stats:?}");
        let total = log.size_bytes();
        assert!(
            stats.producer_replay_bytes <= tail_read_bound(checkpointed, total),
            "the checkpoint's producer snapshot was not used: {stats:?}"
        );
        assert_dedupe(&log, &offsets, other.base_offset, end).await;
        drop(log);

        // The same log without the checkpoint file (a full scan and replay) answers the same.
        let log = open_log(&without_checkpoint, &config(), &context).await;
        assert_eq!(log.recovery_stats().mode, RecoveryMode::FullScan);
        assert_dedupe(&log, &offsets, other.base_offset, end).await;
        log.close().await.expect("close");
    });
}

/// Retries of the producers' last batches (some before the checkpoint, some after it) get the
/// original offsets and append nothing; the next sequence appends; gaps and old epochs fail.
async fn assert_dedupe(log: &PartitionLog, offsets: &[i64], other_offset: i64, end: i64) {
    assert_eq!(log.log_end_offset(), end);
    // The last five batches: two from before the checkpoint, three after.
    for batch_index in 398..403 {
        let retry = log
            .append(producer_batch(PRODUCER, 0, batch_index * 2))
            .await
            .unwrap_or_else(|error| panic!("retry of batch {batch_index}: {error}"));
        assert_eq!(
            retry.base_offset, offsets[batch_index as usize],
            "retry of batch {batch_index} must get its original offset"
        );
    }
    let retry = log
        .append(producer_batch(OTHER_PRODUCER, 3, 0))
        .await
        .expect("retry of the other producer's batch");
    assert_eq!(retry.base_offset, other_offset);
    assert_eq!(log.log_end_offset(), end, "retries appended nothing");
    // Too old to be remembered, and not next: out of order.
    let stale = log.append(producer_batch(PRODUCER, 0, 396 * 2)).await;
    assert!(
        matches!(stale, Err(LogError::OutOfOrderSequence(_))),
        "{stale:?}"
    );
    let gap = log.append(producer_batch(PRODUCER, 0, 404 * 2)).await;
    assert!(
        matches!(gap, Err(LogError::OutOfOrderSequence(_))),
        "{gap:?}"
    );
    let fenced = log.append(producer_batch(OTHER_PRODUCER, 2, 2)).await;
    assert!(
        matches!(fenced, Err(LogError::InvalidProducerEpoch(_))),
        "{fenced:?}"
    );
    let next = log
        .append(producer_batch(PRODUCER, 0, 403 * 2))
        .await
        .expect("the next sequence appends");
    assert_eq!(next.base_offset, end);
}

#[test]
fn under_interval_flushes_a_checkpoint_covers_what_the_timed_sync_made_durable() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    run(async move {
        let (storage, context) = faulty_context(0);
        let interval = LogConfig {
            flush: FlushPolicy::IntervalMs(20),
            ..config()
        };
        let log = open_log(&path, &interval, &context).await;
        let mut expected = Vec::new();
        append_tags(&log, 0..300, &mut expected).await;
        // The flusher syncs once the interval has passed with nothing new to write.
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        assert!(log.checkpoint().await.expect("checkpoint"));
        drop(log);
        storage.power_loss().expect("power loss");
        let log = open_log(&path, &interval, &context).await;
        let stats = log.recovery_stats();
        assert_eq!(stats.mode, RecoveryMode::Checkpoint, "{stats:?}");
        assert_eq!(stats.trusted_bytes, log.size_bytes(), "{stats:?}");
        assert_holds(&log, &expected, "after the timed sync");
        log.close().await.expect("close");
    });
}

#[test]
fn a_failed_checkpoint_write_poisons_the_log() {
    use runnel_engine::fault::{FaultKind, FaultPlan};
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("topic-0");
    run(async move {
        let (storage, context) = faulty_context(0);
        let log = open_log(&path, &config(), &context).await;
        let mut expected = Vec::new();
        append_tags(&log, 0..50, &mut expected).await;
        storage.set_plan(Some(FaultPlan {
            kind: FaultKind::Any,
            fail_at_op: 1,
        }));
        let failed = log.checkpoint().await;
        assert!(matches!(failed, Err(LogError::Io(_))), "{failed:?}");
        assert!(log.poisoned().is_some(), "the failure must stop the log");
        let refused = log.append(batch_for(50)).await;
        assert!(matches!(refused, Err(LogError::Poisoned(_))), "{refused:?}");
        assert!(!log.checkpoint().await.expect("a poisoned log is skipped"));
        drop(log);
        // Nothing acknowledged is lost; the log reopens.
        storage.power_loss().expect("power loss");
        let log = open_log(&path, &config(), &context).await;
        assert_holds(&log, &expected, "after the failed checkpoint");
        log.close().await.expect("close");
    });
}
