//! Log compaction (`cleanup.policy=compact`): the cleaner keeps the latest record of every key at
//! its original offset, removes tombstones only after `delete.retention.ms`, survives a crash at
//! any I/O step of a segment swap, and never pulls the bytes from under a reader's plan.
//!
//! The model test checks every read against the exact records a clean must leave: for a clean
//! that ended at `E`, a record stays when it is keyless, at or after `E`, or the newest record of
//! its key below `E`. Replay a run with `RUNNEL_TEST_SEED=<seed>`.
mod common;

use bytes::BytesMut;
use common::*;
use runnel_engine::batch::{self, Compression, BATCH_HEADER_LEN};
use runnel_engine::codec::{self, SnappyFraming};
use runnel_engine::fault::{FaultKind, FaultPlan};
use runnel_engine::{
    CleanSummary, CleanerConfig, CleanupPolicy, LogConfig, LogContext, LogError, PartitionLog,
};
use std::collections::HashMap;
use std::path::Path;

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        preallocate_bytes: 4096,
        cleanup_policy: CleanupPolicy::COMPACT,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn cleaner(dedupe_buffer_bytes: u64) -> CleanerConfig {
    CleanerConfig {
        dedupe_buffer_bytes,
        read_chunk_bytes: 1000,
        ..CleanerConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Records: building keyed (optionally compressed) batches and decoding what the log returns.

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

type Entry = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A batch of `entries` with `compression` (attribute bits, length and CRC set accordingly).
fn keyed_batch(entries: &[Entry], timestamp: i64, compression: Compression) -> BytesMut {
    let records: Vec<batch::BuildRecord<'_>> = entries
        .iter()
        .enumerate()
        .map(|(index, (key, value))| (key.as_deref(), value.as_deref(), timestamp + index as i64))
        .collect();
    let plain = batch::build_batch(&records);
    BytesMut::from(&compress_batch(plain, compression)[..])
}

fn compress_batch(plain: Vec<u8>, compression: Compression) -> Vec<u8> {
    if compression == Compression::None {
        return plain;
    }
    let framing = SnappyFraming::Raw;
    let section = codec::compress(compression, &plain[BATCH_HEADER_LEN..], framing).unwrap();
    let mut out = plain[..BATCH_HEADER_LEN].to_vec();
    out.extend_from_slice(&section);
    let batch_length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) | codec::codec_bits(compression);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn varint(bytes: &[u8], cursor: &mut usize) -> i64 {
    let mut raw = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = bytes[*cursor];
        *cursor += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    (raw >> 1) as i64 ^ -((raw & 1) as i64)
}

fn nullable(bytes: &[u8], cursor: &mut usize) -> Option<Vec<u8>> {
    let length = varint(bytes, cursor);
    if length < 0 {
        return None;
    }
    let value = bytes[*cursor..*cursor + length as usize].to_vec();
    *cursor += length as usize;
    Some(value)
}

/// The records of one whole stored batch (decompressed), checking its header invariants.
fn decode_batch(bytes: &[u8]) -> Vec<Rec> {
    let info = batch::scan_batch(bytes, 1 << 30)
        .expect("valid")
        .expect("whole");
    let base_offset = batch::read_base_offset(bytes);
    let base_timestamp = i64::from_be_bytes(bytes[27..35].try_into().unwrap());
    let section = codec::decompress(info.compression, &bytes[BATCH_HEADER_LEN..], 1 << 30)
        .expect("decompress");
    let mut cursor = 0;
    let mut out = Vec::new();
    for _ in 0..info.records_count {
        let length = varint(&section, &mut cursor) as usize;
        let end = cursor + length;
        cursor += 1; // attributes
        let timestamp_delta = varint(&section, &mut cursor);
        let offset_delta = varint(&section, &mut cursor);
        assert!((0..=i64::from(info.last_offset_delta)).contains(&offset_delta));
        let key = nullable(&section, &mut cursor);
        let value = nullable(&section, &mut cursor);
        cursor = end;
        out.push(Rec {
            offset: base_offset + offset_delta,
            key,
            value,
            timestamp: base_timestamp + timestamp_delta,
        });
    }
    assert_eq!(cursor, section.len(), "records fill the section exactly");
    out
}

/// Every record from the log start to the end, with offsets checked to increase.
fn read_records(log: &PartitionLog) -> Vec<Rec> {
    let records: Vec<Rec> = read_all(log, log.log_start_offset())
        .iter()
        .flat_map(|(_, bytes)| decode_batch(bytes))
        .collect();
    for pair in records.windows(2) {
        assert!(
            pair[0].offset < pair[1].offset,
            "offsets do not increase: {} then {}",
            pair[0].offset,
            pair[1].offset
        );
    }
    records
}

/// What a clean ending at `clean_end` must leave of `appended` (tombstones not yet expired).
fn expected_after_clean(appended: &[Rec], clean_end: i64) -> Vec<Rec> {
    let mut newest_below: HashMap<&[u8], i64> = HashMap::new();
    for record in appended.iter().filter(|record| record.offset < clean_end) {
        if let Some(key) = &record.key {
            newest_below.insert(key, record.offset);
        }
    }
    appended
        .iter()
        .filter(|record| match &record.key {
            None => true,
            Some(key) => {
                record.offset >= clean_end || newest_below[key.as_slice()] == record.offset
            }
        })
        .cloned()
        .collect()
}

/// Appends `entries` and records them in `model`.
async fn append_entries(
    log: &PartitionLog,
    model: &mut Vec<Rec>,
    entries: &[Entry],
    timestamp: i64,
    compression: Compression,
) {
    let appended = log
        .append(keyed_batch(entries, timestamp, compression))
        .await
        .expect("append");
    for (index, (key, value)) in entries.iter().enumerate() {
        model.push(Rec {
            offset: appended.base_offset + index as i64,
            key: key.clone(),
            value: value.clone(),
            timestamp: timestamp + index as i64,
        });
    }
}

fn key(index: u64) -> Option<Vec<u8>> {
    Some(format!("key-{index}").into_bytes())
}

fn value(text: String) -> Option<Vec<u8>> {
    Some(text.into_bytes())
}

/// Checks reads that start at arbitrary offsets: each returns whole batches from the one
/// covering the offset (or the next surviving one), and their records are exactly the expected
/// records from there on.
fn check_reads_from(log: &PartitionLog, expected: &[Rec], rng: &mut TestRng, reads: usize) {
    let (start, end) = (log.log_start_offset(), log.durable_end_offset());
    for _ in 0..reads {
        let from = rng.between(start, end - 1);
        let max_bytes = rng.pick(&[1u64, 300, 5000]);
        let plan = log.read(from, max_bytes).expect("read");
        let batches = split_batches(&plan.to_vec().expect("plan bytes"));
        assert!(
            !batches.is_empty(),
            "empty read at {from} below the end {end}"
        );
        let first_expected = expected.partition_point(|record| record.offset < from);
        let (first_base, first_bytes) = &batches[0];
        let first_last = last_offset_of(first_bytes);
        assert!(
            first_last >= from,
            "read at {from} starts with a batch ending at {first_last}"
        );
        assert!(
            expected[..first_expected]
                .iter()
                .all(|record| record.offset < *first_base || record.offset <= first_last),
            "read at {from} skipped records"
        );
        let got: Vec<Rec> = batches
            .iter()
            .flat_map(|(_, bytes)| decode_batch(bytes))
            .filter(|record| record.offset >= from)
            .collect();
        assert_eq!(
            got,
            expected[first_expected..first_expected + got.len()],
            "read at {from}"
        );
    }
}

// ---------------------------------------------------------------------------------------------

/// Random keyed appends (tombstones, keyless records, every codec), rolls, and cleans with large
/// and tiny offset-map budgets; after every clean and after a reopen the log must read exactly
/// as the model says.
#[test]
fn model_every_read_matches_what_compaction_must_keep() {
    let mut rng = TestRng::from_env("model_every_read_matches_what_compaction_must_keep");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted-0");
    run(async move {
        let config = compact_config();
        let mut log = open_log(&path, &config, &context()).await;
        let mut model: Vec<Rec> = Vec::new();
        let mut clean_end = 0;
        let codecs = [
            Compression::None,
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let now = wall_clock_ms();
        for round in 0..12 {
            for _ in 0..rng.between(10, 40) {
                let entries: Vec<Entry> = (0..rng.between(1, 6))
                    .map(|_| {
                        let key = if rng.percent(5) {
                            None
                        } else {
                            key(rng.below(25))
                        };
                        let value = if rng.percent(12) && key.is_some() {
                            None
                        } else {
                            value(format!("v{}-{}", round, rng.below(1_000_000)))
                        };
                        (key, value)
                    })
                    .collect();
                let compression = rng.pick(&codecs);
                append_entries(&log, &mut model, &entries, now, compression).await;
            }
            let end_before = log.log_end_offset();
            let budget = if rng.percent(30) { 300 } else { 1 << 20 };
            let summary: CleanSummary = log.clean(now, &cleaner(budget)).await.expect("clean");
            assert!(summary.completed);
            assert!(
                summary.cleaned_end >= clean_end,
                "the clean end never moves back"
            );
            clean_end = summary.cleaned_end;
            assert_eq!(log.first_dirty_offset(), clean_end);
            assert_eq!(
                log.log_end_offset(),
                end_before,
                "cleaning moved the log end"
            );
            let expected = expected_after_clean(&model, clean_end);
            assert_eq!(read_records(&log), expected, "round {round}: {summary:?}");
            check_reads_from(&log, &expected, &mut rng, 30);
            if rng.percent(30) {
                log.close().await.expect("close");
                log = open_log(&path, &config, &context()).await;
                assert_eq!(read_records(&log), expected, "round {round} after a reopen");
                assert_eq!(log.first_dirty_offset(), clean_end, "checkpoint survives");
            }
        }
        // Everything sealed and cleaned with room for every key: one record per key is left
        // below the clean end, and compaction actually shrank the log.
        let summary = log.clean(now, &cleaner(1 << 20)).await.expect("clean");
        let expected = expected_after_clean(&model, summary.cleaned_end);
        assert_eq!(read_records(&log), expected);
        assert!(
            expected.len() < model.len() / 2,
            "compaction removed little"
        );
        log.close().await.expect("close");
        let log = open_log(&path, &config, &context()).await;
        assert_eq!(read_records(&log), expected, "after the final reopen");
        log.close().await.expect("close");
    });
}

/// Tombstones are kept through cleans until `delete.retention.ms` after the first clean that
/// passed over them, then removed; record timestamps never change.
#[test]
fn tombstones_go_only_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted-0");
    run(async move {
        let config = LogConfig {
            delete_retention_ms: 60_000,
            ..compact_config()
        };
        let log = open_log(&path, &config, &context()).await;
        let mut model = Vec::new();
        let now = wall_clock_ms();
        for index in 0..40 {
            let entries = [(key(index % 10), value(format!("first-{index}")))];
            append_entries(&log, &mut model, &entries, now, Compression::None).await;
        }
        // Delete keys 0..5 (two of them in one compressed batch), then seal everything.
        let deletes: Vec<Entry> = (0..3).map(|index| (key(index), None)).collect();
        append_entries(&log, &mut model, &deletes, now, Compression::None).await;
        let deletes: Vec<Entry> = (3..5).map(|index| (key(index), None)).collect();
        append_entries(&log, &mut model, &deletes, now, Compression::Zstd).await;
        let last_tombstone = model.last().unwrap().offset;
        while log.segment_base_offsets().last().copied().unwrap() <= last_tombstone {
            let filler = [(Some(b"filler".to_vec()), value("x".repeat(500)))];
            append_entries(&log, &mut model, &filler, now, Compression::None).await;
        }
        let summary = log
            .clean(now, &cleaner(1 << 20))
            .await
            .expect("first clean");
        let tombstones = |records: &[Rec]| records.iter().filter(|r| r.value.is_none()).count();
        let after_first = read_records(&log);
        assert_eq!(
            after_first,
            expected_after_clean(&model, summary.cleaned_end)
        );
        assert_eq!(tombstones(&after_first), 5, "tombstones stay at first");
        assert_eq!(
            log.cleaning_priority(now + 59_999),
            None,
            "nothing is due yet"
        );
        let early = log.clean(now + 59_999, &cleaner(1 << 20)).await.unwrap();
        assert_eq!(early.tombstones_removed, 0);
        assert_eq!(read_records(&log), after_first);
        assert!(
            log.cleaning_priority(now + 60_000).is_some(),
            "tombstones due"
        );
        let late = log.clean(now + 60_000, &cleaner(1 << 20)).await.unwrap();
        assert_eq!(late.tombstones_removed, 5);
        let after_expiry = read_records(&log);
        let mut expected = after_first.clone();
        expected.retain(|record| record.value.is_some());
        assert_eq!(
            after_expiry, expected,
            "only the tombstones went, timestamps unchanged"
        );
        for deleted in 0..5 {
            assert!(after_expiry.iter().all(|record| record.key != key(deleted)));
        }
        log.close().await.unwrap();
        let log = open_log(&path, &config, &context()).await;
        assert_eq!(read_records(&log), expected);
        log.close().await.unwrap();
    });
}

/// A segment younger than `min.compaction.lag.ms` is not cleaned; the dirty ratio gates the
/// background cleaner.
#[test]
fn compaction_lag_and_dirty_ratio_decide_what_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted-0");
    run(async move {
        let config = LogConfig {
            min_compaction_lag_ms: 3_600_000,
            min_cleanable_dirty_ratio: 0.5,
            ..compact_config()
        };
        let log = open_log(&path, &config, &context()).await;
        let mut model = Vec::new();
        let now = wall_clock_ms();
        for index in 0..200 {
            let entries = [(key(index % 3), value(format!("{index:0>40}")))];
            append_entries(&log, &mut model, &entries, now, Compression::None).await;
        }
        assert!(log.segment_count() > 3);
        let young = log.clean(now, &cleaner(1 << 20)).await.unwrap();
        assert_eq!((young.cleaned_end, young.segments_replaced), (0, 0));
        assert_eq!(read_records(&log), model);
        assert_eq!(log.cleaning_priority(now), None, "nothing old enough");
        let later = now + 2 * 3_600_000;
        let ratio = log.cleaning_priority(later).expect("all dirty: ratio 1");
        assert!((ratio - 1.0).abs() < 1e-9);
        let old = log.clean(later, &cleaner(1 << 20)).await.unwrap();
        assert!(old.segments_replaced > 1 && old.records_removed > 0);
        assert_eq!(
            read_records(&log),
            expected_after_clean(&model, old.cleaned_end)
        );
        assert_eq!(log.cleaning_priority(later), None, "clean now");
        log.close().await.unwrap();
    });
}

/// A plan taken before a swap still reads the old segment's bytes afterwards (the descriptor
/// outlives the rename over its name); a new read sees the cleaned segment.
#[test]
fn a_read_plan_taken_before_a_swap_still_reads_the_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted-0");
    run(async move {
        let config = compact_config();
        // No tail cache: every read is a file range of a segment.
        let context = LogContext::direct(0);
        let log = open_log(&path, &config, &context).await;
        let mut model = Vec::new();
        let now = wall_clock_ms();
        for index in 0..120 {
            let entries = [(key(index % 4), value(format!("{index:0>30}")))];
            append_entries(&log, &mut model, &entries, now, Compression::None).await;
        }
        let plan = log.read(0, 1 << 20).expect("read");
        assert!(plan
            .chunks
            .iter()
            .all(|chunk| matches!(chunk, runnel_engine::ReadChunk::File(_))));
        let before = plan.to_vec().unwrap();
        let summary = log.clean(now, &cleaner(1 << 20)).await.unwrap();
        assert!(summary.segments_replaced > 0);
        assert_eq!(
            plan.to_vec().unwrap(),
            before,
            "the old bytes under the old plan"
        );
        let old_records: Vec<Rec> = split_batches(&before)
            .iter()
            .flat_map(|(_, bytes)| decode_batch(bytes))
            .collect();
        assert_eq!(old_records, model[..old_records.len()]);
        let mut socket_plan = plan.clone();
        socket_plan.chunks.truncate(1);
        let (sender, receiver) = loopback_pair();
        let drained = drain_to_end(receiver);
        runnel_engine::send_plan(
            socket_plan.clone(),
            std::os::fd::AsRawFd::as_raw_fd(&sender),
        )
        .await
        .expect("sendfile from the replaced segment");
        drop(sender);
        assert_eq!(drained.join().unwrap(), socket_plan.to_vec().unwrap());
        assert_eq!(
            read_records(&log),
            expected_after_clean(&model, summary.cleaned_end)
        );
        log.close().await.unwrap();
    });
}

/// An idempotent producer's last batch survives as an empty batch when all its records are
/// superseded, so its sequence state can be rebuilt from the segments alone.
#[test]
fn a_producers_emptied_last_batch_is_kept_for_its_sequence_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted-0");
    run(async move {
        let config = compact_config();
        let log = open_log(&path, &config, &context()).await;
        let now = wall_clock_ms();
        let producer_batch = |key: &[u8], sequence: i32| {
            let records = [(Some(key), Some(&b"from the producer"[..]), now)];
            BytesMut::from(&batch::build_batch_with_producer(&records, 77, 0, sequence)[..])
        };
        log.append(producer_batch(b"a", 0)).await.unwrap();
        let last = log.append(producer_batch(b"b", 1)).await.unwrap();
        let mut model = Vec::new();
        append_entries(
            &log,
            &mut model,
            &[(Some(b"b".to_vec()), value("newer".into()))],
            now,
            Compression::None,
        )
        .await;
        while log.segment_count() < 3 {
            let filler = [(Some(b"filler".to_vec()), value("x".repeat(500)))];
            append_entries(&log, &mut model, &filler, now, Compression::None).await;
        }
        log.clean(now, &cleaner(1 << 20)).await.unwrap();
        let batches = read_all(&log, 0);
        let kept = batches
            .iter()
            .find(|(base, _)| *base == last.base_offset)
            .expect("the producer's last batch is kept");
        let info = batch::scan_batch(&kept.1, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (info.records_count, info.producer_id, info.base_sequence),
            (0, 77, 1)
        );
        log.close().await.unwrap();
        // Rebuild the producer state from the segments alone.
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().ends_with(".snapshot") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let log = open_log(&path, &config, &context()).await;
        log.append(producer_batch(b"c", 2))
            .await
            .expect("the next sequence continues the emptied batch");
        log.close().await.unwrap();
    });
}

/// Truncating into a gap the cleaner left ends the log at that offset and seals the cleaned
/// segment again, so a crash right after loses nothing.
#[test]
fn truncation_into_a_cleaned_segment_keeps_it_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted-0");
    run(async move {
        let config = compact_config();
        let log = open_log(&path, &config, &context()).await;
        let mut model = Vec::new();
        let now = wall_clock_ms();
        for index in 0..150 {
            // Every tenth key is never written again: its record survives between gaps.
            let key = if index % 10 == 0 {
                key(1000 + index)
            } else {
                key(index % 5)
            };
            let entries = [(key, value(format!("{index:0>30}")))];
            append_entries(&log, &mut model, &entries, now, Compression::None).await;
        }
        let summary = log.clean(now, &cleaner(1 << 20)).await.unwrap();
        let survivors = expected_after_clean(&model, summary.cleaned_end);
        // An offset in a gap, with a survivor before it in the same cleaned segment.
        let gap = survivors
            .windows(2)
            .find(|pair| pair[1].offset > pair[0].offset + 1 && pair[0].offset > 0)
            .map(|pair| pair[0].offset + 1)
            .expect("a gap");
        assert_eq!(log.truncate_to(gap).await.unwrap(), gap);
        assert_eq!(log.log_end_offset(), gap);
        let mut expected: Vec<Rec> = survivors.into_iter().filter(|r| r.offset < gap).collect();
        append_entries(
            &log,
            &mut expected,
            &[(key(99), value("after".into()))],
            now,
            Compression::None,
        )
        .await;
        assert_eq!(expected.last().unwrap().offset, gap);
        assert_eq!(read_records(&log), expected);
        drop(log); // a crash: no clean close
        let log = open_log(&path, &config, &context()).await;
        assert_eq!(
            read_records(&log),
            expected,
            "recovery kept the cleaned segment whole"
        );
        log.close().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// Builds a compacted log of small segments (so a clean merges several into one) with many
/// superseded records and compressed batches, closes it, and returns the model of what was
/// appended.
fn build_pristine(path: &Path) -> Vec<Rec> {
    let path = path.to_path_buf();
    run(async move {
        let small_segments = LogConfig {
            segment_bytes: 1024,
            ..compact_config()
        };
        let log = open_log(&path, &small_segments, &context()).await;
        let mut model = Vec::new();
        let now = wall_clock_ms();
        for index in 0..160u64 {
            let compression = if index % 7 == 0 {
                Compression::Lz4
            } else {
                Compression::None
            };
            // Keyless records and keys written once survive any clean, all through the log.
            let third = match index % 5 {
                0 => (None, value(format!("keyless {index}"))),
                1 => (key(1000 + index), value(format!("once {index}"))),
                _ => (key(index % 3), value(format!("{index}"))),
            };
            let tombstone = index % 13 == 0;
            let entries = [
                (key(index % 6), value(format!("{index:0>25}"))),
                (
                    key(index % 11),
                    if tombstone {
                        None
                    } else {
                        value(format!("{index}"))
                    },
                ),
                third,
            ];
            append_entries(&log, &mut model, &entries, now, compression).await;
        }
        log.close().await.unwrap();
        model
    })
}

/// Fails the Nth I/O operation of a clean (and every later one) for N = 1, 2, ... until a clean
/// needs no failure; after each, the machine "loses power" and the log reopens. Every reopened
/// log reads as the uncleaned or the cleaned log, group by group: same end, offsets increasing,
/// each record unchanged at its offset, and every record a complete clean keeps still there.
#[test]
fn a_crash_at_any_step_of_a_clean_leaves_the_old_or_the_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let model = build_pristine(&pristine);
    let end = model.last().unwrap().offset + 1;
    let active_base = segment_logs(&pristine).last().unwrap().0;
    let must_survive = expected_after_clean(&model, active_base);
    // Cleaned segments of up to 4 KiB: groups of several source segments.
    let config = LogConfig {
        segment_bytes: 4096,
        ..compact_config()
    };
    let mut swaps_finished_by_recovery = 0;
    let mut poisoned_runs = 0;
    for fail_at in 1..400u64 {
        let path = dir.path().join(format!("run-{fail_at}"));
        copy_dir(&pristine, &path);
        let (storage, faulty) = faulty_context(1 << 20);
        let (failures, result, swap_left) = run({
            let path = path.clone();
            let storage = storage.clone();
            let config = config.clone();
            async move {
                let log = open_log(&path, &config, &faulty).await;
                storage.set_plan(Some(FaultPlan {
                    kind: FaultKind::Any,
                    fail_at_op: fail_at,
                }));
                let result = log.clean(wall_clock_ms(), &cleaner(1 << 20)).await;
                if let Err(LogError::Poisoned(_)) = &result {
                    assert!(log.poisoned().is_some());
                    let appended = log
                        .append(keyed_batch(
                            &[(key(1), value("late".into()))],
                            0,
                            Compression::None,
                        ))
                        .await;
                    assert!(matches!(appended, Err(LogError::Poisoned(_))));
                }
                drop(log); // crash: no close
                storage.power_loss().unwrap();
                let swap_left = std::fs::read_dir(&path).unwrap().any(|entry| {
                    entry
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".swap")
                });
                (storage.failures(), result, swap_left)
            }
        });
        if let Err(error) = &result {
            assert!(
                failures > 0,
                "fail_at {fail_at}: a clean failed with no fault: {error}"
            );
            poisoned_runs += usize::from(matches!(error, LogError::Poisoned(_)));
        }
        swaps_finished_by_recovery += usize::from(swap_left);
        let records = run({
            let path = path.clone();
            let config = config.clone();
            async move {
                let log = open_log(&path, &config, &context()).await;
                assert_eq!(log.log_end_offset(), end, "fail_at {fail_at}: log end");
                assert!(log.poisoned().is_none());
                let records = read_records(&log);
                log.close().await.unwrap();
                records
            }
        });
        let by_offset: HashMap<i64, &Rec> = model.iter().map(|r| (r.offset, r)).collect();
        for record in &records {
            assert_eq!(
                Some(&record),
                by_offset.get(&record.offset),
                "fail_at {fail_at}: offset {} holds a record never appended there",
                record.offset
            );
        }
        let read: HashMap<i64, &Rec> = records.iter().map(|r| (r.offset, r)).collect();
        for record in &must_survive {
            assert_eq!(
                read.get(&record.offset),
                Some(&record),
                "fail_at {fail_at}: a record every clean keeps is gone"
            );
        }
        std::fs::remove_dir_all(&path).unwrap();
        if failures == 0 {
            let summary = result.expect("the unfailed clean");
            assert!(
                summary.segments_replaced > summary.segments_written,
                "nothing merged"
            );
            assert!(
                records.len() < model.len(),
                "the unfailed clean removed nothing"
            );
            assert!(
                swaps_finished_by_recovery > 0,
                "no run crashed between the commit point and the end of a swap"
            );
            assert!(poisoned_runs > 0);
            return;
        }
    }
    panic!("a clean never completed without a fault");
}
