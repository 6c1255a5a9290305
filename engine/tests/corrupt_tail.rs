//! Torn and corrupt tails, lost and damaged indexes.
//!
//! Every case copies a pristine log the test wrote, damages the copy, opens it and checks that
//! recovery kept exactly the batches it should (byte for byte, nothing invalid served, the bad
//! tail cut from the file), that reads and timestamp lookups answer correctly, that damaged
//! indexes are rebuilt, and that the log then takes an append at the recovered end which
//! survives another crash.
//!
//! Pristine logs end in one of three ways: dropped without `close` (a crash: no marker, the
//! newest segment followed by preallocated zeros, no index files for it), closed and then the
//! clean-shutdown marker removed (a crash right after a clean start: stale index files for the
//! newest segment that must be ignored), or closed cleanly (the marker trusted, unless the files
//! disagree).
mod common;

use bytes::BytesMut;
use common::*;
use runnel_engine::batch::{BatchHeader, BATCH_HEADER_LEN};
use runnel_engine::index::SegmentIndex;
use runnel_engine::segment::SegmentPaths;
use runnel_engine::{LogConfig, PartitionLog};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Batches in a pristine log: about 11 segments of 16 KiB, so more sealed segments than the log
/// keeps indexes loaded for (8), and a newest segment holding several batches.
const BATCHES: u64 = 262;
const TIMESTAMP_BASE_MS: i64 = 1_600_000_000_000;
/// Batch timestamps are this far apart, so a lookup between two batches has one right answer.
const TIMESTAMP_STEP_MS: i64 = 10;
/// Tags of batches appended after a recovery (never in a pristine log).
const APPENDED_TAG: u64 = 1_000_000;
/// Bytes 12..16 of a batch are the partition leader epoch, which Kafka's format leaves outside
/// the CRC so a broker can stamp it: a flipped bit there is undetectable by design.
const EPOCH_BYTES: Range<usize> = 12..16;

fn tail_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        ..small_config()
    }
}

fn timestamp_of(tag: u64) -> i64 {
    TIMESTAMP_BASE_MS + TIMESTAMP_STEP_MS * tag as i64
}

fn fixture_batch(tag: u64) -> BytesMut {
    let records = 1 + (tag % 4) as usize;
    let value_bytes = 40 + (tag * 131 % 400) as usize;
    tagged_batch(tag, records, value_bytes, timestamp_of(tag))
}

/// A batch the log must hold: where and exactly what.
#[derive(Clone, Debug)]
struct Expected {
    base_offset: i64,
    last_offset: i64,
    timestamp_ms: i64,
    bytes: Vec<u8>,
}

impl Expected {
    fn from_stored(bytes: Vec<u8>) -> Self {
        let header = BatchHeader::parse(&bytes).expect("batch header");
        Self {
            base_offset: header.base_offset.get(),
            last_offset: last_offset_of(&bytes),
            timestamp_ms: header.max_timestamp.get(),
            bytes,
        }
    }

    fn fixture(tag: u64, base_offset: i64) -> Self {
        Self::from_stored(stamped(&fixture_batch(tag), base_offset))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Dropped without `close`.
    Crashed,
    /// Closed cleanly, then the marker removed.
    ClosedMarkerRemoved,
    /// Closed cleanly.
    Closed,
}

/// An undamaged log and what is where in it.
struct Pristine {
    _root: tempfile::TempDir,
    dir: PathBuf,
    batches: Vec<Expected>,
    /// Segment base offsets, oldest first; the last is the newest (active) segment.
    segment_bases: Vec<i64>,
    /// How many of `batches` lie in sealed segments (the rest are in the newest).
    sealed_batches: usize,
    /// The newest segment's batches as found in its file.
    newest: Vec<FileBatch>,
}

impl Pristine {
    async fn write(ending: Ending) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("topic-0");
        let (log, batches) = append_fixtures(&dir, 0..BATCHES).await;
        end_log(log, &dir, ending).await;
        Self::describe(root, dir, batches)
    }

    fn describe(root: tempfile::TempDir, dir: PathBuf, batches: Vec<Expected>) -> Self {
        let segment_bases: Vec<i64> = segment_logs(&dir).iter().map(|(base, _)| *base).collect();
        assert!(
            segment_bases.len() > 9,
            "want more sealed segments than loaded indexes, got {segment_bases:?}"
        );
        let newest_base = *segment_bases.last().expect("segments");
        let newest = file_batches(&SegmentPaths::new(&dir, newest_base).log);
        assert!(
            newest.len() >= 4,
            "the newest segment must hold several batches, holds {}",
            newest.len()
        );
        let sealed_batches = batches.len() - newest.len();
        assert_eq!(batches[sealed_batches].base_offset, newest_base);
        for (found, expected) in newest.iter().zip(&batches[sealed_batches..]) {
            assert!(found.bytes == expected.bytes, "pristine newest segment");
        }
        Self {
            _root: root,
            dir,
            batches,
            segment_bases,
            sealed_batches,
            newest,
        }
    }

    /// A fresh copy of the pristine log to damage (the temp dir owns it).
    fn copy(&self) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("topic-0");
        copy_dir(&self.dir, &dir);
        (root, dir)
    }

    fn newest_base(&self) -> i64 {
        *self.segment_bases.last().expect("segments")
    }

    fn newest_paths(&self, dir: &Path) -> SegmentPaths {
        SegmentPaths::new(dir, self.newest_base())
    }

    /// Where the newest segment's data ends (its file may go on with zeros).
    fn data_end(&self) -> u64 {
        let last = self.newest.last().expect("newest batches");
        last.position + last.bytes.len() as u64
    }

    /// The batches a log keeps when its newest segment is cut at `position`: those wholly before.
    fn kept_before(&self, position: u64) -> &[Expected] {
        let whole = self
            .newest
            .iter()
            .take_while(|batch| batch.position + batch.bytes.len() as u64 <= position)
            .count();
        &self.batches[..self.sealed_batches + whole]
    }
}

async fn append_fixtures(dir: &Path, tags: Range<u64>) -> (PartitionLog, Vec<Expected>) {
    let log = open_log(dir, &tail_config(), &context()).await;
    let mut batches = Vec::new();
    for tag in tags {
        let result = log.append(fixture_batch(tag)).await.expect("append");
        let expected = Expected::fixture(tag, result.base_offset);
        assert_eq!(result.last_offset, expected.last_offset);
        batches.push(expected);
    }
    (log, batches)
}

async fn end_log(log: PartitionLog, dir: &Path, ending: Ending) {
    match ending {
        Ending::Crashed => drop(log),
        Ending::ClosedMarkerRemoved => {
            log.close().await.expect("close");
            remove_clean_marker(dir);
        }
        Ending::Closed => log.close().await.expect("close"),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the cases.

/// The whole log read back equals `expected`, batch for batch and byte for byte (every CRC
/// checked on the way).
fn assert_log_holds(log: &PartitionLog, expected: &[Expected], label: &str) {
    let stored = read_all(log, 0);
    assert_eq!(
        stored.len(),
        expected.len(),
        "{label}: batch count (stored ends at {:?})",
        stored.last().map(|(base, _)| base)
    );
    for ((base_offset, bytes), expected) in stored.iter().zip(expected) {
        assert_eq!(*base_offset, expected.base_offset, "{label}: batch order");
        assert!(
            *bytes == expected.bytes,
            "{label}: batch at {base_offset} differs from what was written"
        );
    }
}

/// Opens a damaged log and checks recovery kept exactly `kept` and cut the rest from the file,
/// then appends (it must land at the recovered end), crashes again and checks it all survived.
async fn assert_recovers_to(dir: &Path, kept: &[Expected], label: &str) {
    let log = open_log(dir, &tail_config(), &context()).await;
    let end = kept
        .last()
        .expect("sealed batches are never lost")
        .last_offset
        + 1;
    assert_eq!(log.log_end_offset(), end, "{label}: recovered log end");
    assert_eq!(
        log.durable_end_offset(),
        end,
        "{label}: recovered durable end"
    );
    assert_log_holds(&log, kept, label);
    let (_, newest_log) = segment_logs(dir).pop().expect("segments");
    let file_bytes = std::fs::metadata(&newest_log).expect("newest").len();
    let valid_bytes = file_batches(&newest_log)
        .last()
        .map_or(0, |batch| batch.position + batch.bytes.len() as u64);
    assert_eq!(
        file_bytes, valid_bytes,
        "{label}: the newest segment file must end at its last valid batch"
    );
    assert_appends_at_end_and_survives_crash(log, dir, kept, label).await;
}

/// Appends one batch (it must get offset `end`), drops the log without closing, reopens and
/// checks the log holds `kept` and the new batch; closes cleanly.
async fn assert_appends_at_end_and_survives_crash(
    log: PartitionLog,
    dir: &Path,
    kept: &[Expected],
    label: &str,
) {
    let end = log.log_end_offset();
    let result = log
        .append(fixture_batch(APPENDED_TAG))
        .await
        .unwrap_or_else(|error| panic!("{label}: append after recovery: {error}"));
    assert_eq!(result.base_offset, end, "{label}: append lands at the end");
    drop(log);
    let log = open_log(dir, &tail_config(), &context()).await;
    let mut with_new = kept.to_vec();
    with_new.push(Expected::fixture(APPENDED_TAG, end));
    assert_eq!(log.log_end_offset(), result.last_offset + 1, "{label}");
    assert_log_holds(
        &log,
        &with_new,
        &format!("{label}, after the append and a crash"),
    );
    log.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// File damage.

fn truncate_file(path: &Path, length: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
    file.set_len(length).expect("truncate");
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
    file.write_all(bytes).expect("append");
}

fn flip_bit(path: &Path, position: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, position).expect("read");
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, position).expect("write");
}

// ---------------------------------------------------------------------------------------------
// (a) torn tails.

#[test]
fn torn_tail_keeps_exactly_the_batches_before_the_cut() {
    let mut rng = TestRng::from_env("torn_tail");
    run(async move {
        for ending in [Ending::Crashed, Ending::ClosedMarkerRemoved] {
            let pristine = Pristine::write(ending).await;
            let cuts = cut_positions(&pristine, &mut rng);
            for cut in cuts {
                let (_root, dir) = pristine.copy();
                truncate_file(&pristine.newest_paths(&dir).log, cut);
                let label = format!("{ending:?}, newest segment cut at byte {cut}");
                assert_recovers_to(&dir, pristine.kept_before(cut), &label).await;
            }
        }
    });
}

/// Cuts at the start, inside the first header, inside every header field and the payload of the
/// last batch, at and just before every batch boundary, and at random bytes.
fn cut_positions(pristine: &Pristine, rng: &mut TestRng) -> Vec<u64> {
    let data_end = pristine.data_end();
    let last = pristine.newest.last().expect("newest batches");
    let last_bytes = last.bytes.len() as u64;
    let mut cuts = vec![0, 1, 7, 8, 11, 12, 13, 60, 61, 62];
    for inside_header in [1, 8, 11, 12, 16, 17, 21, 23, 27, 35, 43, 51, 53, 57, 60] {
        cuts.push(last.position + inside_header);
    }
    cuts.extend([
        last.position + BATCH_HEADER_LEN as u64,
        last.position + BATCH_HEADER_LEN as u64 + 1,
        last.position + last_bytes / 2,
        data_end - 1,
        data_end,
    ]);
    for batch in &pristine.newest {
        cuts.extend([
            batch.position,
            batch.position + 1,
            batch.position.saturating_sub(1),
        ]);
    }
    for _ in 0..20 {
        cuts.push(rng.below(data_end + 1));
    }
    cuts.retain(|cut| *cut <= data_end);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

// ---------------------------------------------------------------------------------------------
// (b) zeros and (c) garbage after the data.

#[test]
fn zeros_after_the_data_are_cut() {
    run(async {
        for ending in [Ending::Crashed, Ending::ClosedMarkerRemoved] {
            let pristine = Pristine::write(ending).await;
            for zeros in [1, 12, 61, 4096, 1 << 20] {
                let (_root, dir) = pristine.copy();
                append_to_file(&pristine.newest_paths(&dir).log, &vec![0u8; zeros]);
                let label = format!("{ending:?}, {zeros} zero bytes appended");
                assert_recovers_to(&dir, &pristine.batches, &label).await;
            }
        }
    });
}

#[test]
fn garbage_after_the_data_is_cut() {
    let mut rng = TestRng::from_env("garbage_tail");
    run(async move {
        let pristine = Pristine::write(Ending::ClosedMarkerRemoved).await;
        let end = pristine.batches.last().expect("batches").last_offset + 1;
        let mut tails: Vec<(String, Vec<u8>)> = Vec::new();
        for length in [1, 7, 12, 13, 61, 500, 4096, 70_000] {
            let mut garbage = vec![0u8; length];
            rng.fill(&mut garbage);
            tails.push((format!("{length} random bytes"), garbage));
        }
        // Garbage that starts like a batch at the right offset: a length running past the end of
        // the file, a plausible length with a wrong CRC, impossible lengths.
        for (name, batch_length, body_bytes) in [
            ("torn plausible batch", 1000, 300),
            ("plausible batch, bad CRC", 300, 300),
            ("huge length", i32::MAX, 100),
            ("negative length", -1, 100),
            ("length below a header", 20, 100),
        ] {
            let mut garbage = end.to_be_bytes().to_vec();
            garbage.extend_from_slice(&i32::to_be_bytes(batch_length));
            let mut body = vec![0u8; body_bytes];
            rng.fill(&mut body);
            body[4] = 2; // magic
            garbage.extend_from_slice(&body);
            tails.push((name.to_string(), garbage));
        }
        for (name, garbage) in tails {
            let (_root, dir) = pristine.copy();
            append_to_file(&pristine.newest_paths(&dir).log, &garbage);
            assert_recovers_to(&dir, &pristine.batches, &name).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// (d) bit flips.

#[test]
fn flipped_bit_drops_that_batch_and_everything_after_it() {
    let mut rng = TestRng::from_env("bit_flip");
    run(async move {
        for ending in [Ending::ClosedMarkerRemoved, Ending::Crashed] {
            let pristine = Pristine::write(ending).await;
            let newest_count = pristine.newest.len();
            // Every header byte of the last batch but the epoch, and random payload bytes; then
            // random bytes of a batch in the middle of the segment.
            let last = newest_count - 1;
            let mut flips: Vec<(usize, usize)> = (0..BATCH_HEADER_LEN)
                .filter(|byte| !EPOCH_BYTES.contains(byte))
                .map(|byte| (last, byte))
                .collect();
            let last_bytes = pristine.newest[last].bytes.len();
            for _ in 0..25 {
                let byte =
                    BATCH_HEADER_LEN + rng.below((last_bytes - BATCH_HEADER_LEN) as u64) as usize;
                flips.push((last, byte));
            }
            let middle = newest_count / 2;
            let middle_bytes = pristine.newest[middle].bytes.len();
            for _ in 0..15 {
                let byte = rng.below(middle_bytes as u64) as usize;
                if !EPOCH_BYTES.contains(&byte) {
                    flips.push((middle, byte));
                }
            }
            // The crashed ending repeats a random sample: what differs there is only the zeros
            // after the data, which every flip case shares.
            if ending == Ending::Crashed {
                while flips.len() > 30 {
                    flips.swap_remove(rng.below(flips.len() as u64) as usize);
                }
            }
            for (victim, byte) in flips {
                let bit = rng.below(8) as u8;
                let (_root, dir) = pristine.copy();
                let position = pristine.newest[victim].position + byte as u64;
                flip_bit(&pristine.newest_paths(&dir).log, position, bit);
                let kept = &pristine.batches[..pristine.sealed_batches + victim];
                let label = format!(
                    "{ending:?}, bit {bit} of byte {byte} flipped in batch {victim} of {newest_count}"
                );
                assert_recovers_to(&dir, kept, &label).await;
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// (e) a valid batch at the wrong offset.

#[test]
fn valid_batch_with_a_wrong_base_offset_is_dropped() {
    run(async {
        let pristine = Pristine::write(Ending::ClosedMarkerRemoved).await;
        let all = &pristine.batches;
        let last = all.last().expect("batches");
        let end = last.last_offset + 1;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("copy of the first batch", all[0].bytes.clone()),
            (
                "copy of a batch of the newest segment",
                all[pristine.sealed_batches].bytes.clone(),
            ),
            ("copy of the last batch", last.bytes.clone()),
            (
                "new batch one offset early",
                stamped(&fixture_batch(7), end - 1),
            ),
            (
                "new batch leaving a gap",
                stamped(&fixture_batch(7), end + 5),
            ),
            (
                "new batch at a negative offset",
                stamped(&fixture_batch(7), -1),
            ),
        ];
        for (name, bytes) in cases {
            let (_root, dir) = pristine.copy();
            append_to_file(&pristine.newest_paths(&dir).log, &bytes);
            assert_recovers_to(&dir, all, name).await;
        }
        // Control: the same kind of batch at the right offset is a valid tail and is kept.
        let (_root, dir) = pristine.copy();
        let right = Expected::fixture(7, end);
        append_to_file(&pristine.newest_paths(&dir).log, &right.bytes);
        let mut with_right = all.clone();
        with_right.push(right);
        assert_recovers_to(&dir, &with_right, "new batch at the right offset").await;
    });
}

// ---------------------------------------------------------------------------------------------
// (f) lost and damaged indexes.

#[derive(Clone, Copy, Debug)]
enum IndexTarget {
    EverySealed,
    OneSealed,
    Active,
}

#[derive(Clone, Copy, Debug)]
enum IndexFiles {
    Offsets,
    Times,
    Both,
}

#[derive(Clone, Copy, Debug)]
enum IndexDamage {
    Deleted,
    Emptied,
    HalfCut,
    LastByteCut,
    ByteFlipped,
    /// Replaced by another segment's (valid) index files.
    OtherSegments,
}

#[test]
fn lost_or_damaged_indexes_are_rebuilt_and_answer_correctly() {
    run(async {
        let pristine = Pristine::write(Ending::Closed).await;
        for target in [
            IndexTarget::EverySealed,
            IndexTarget::OneSealed,
            IndexTarget::Active,
        ] {
            for damage in [
                IndexDamage::Deleted,
                IndexDamage::Emptied,
                IndexDamage::HalfCut,
                IndexDamage::LastByteCut,
                IndexDamage::ByteFlipped,
                IndexDamage::OtherSegments,
            ] {
                // Cuts hit both files alike; the others differ by which file is damaged.
                let file_choices: &[IndexFiles] = match damage {
                    IndexDamage::Emptied | IndexDamage::HalfCut | IndexDamage::LastByteCut => {
                        &[IndexFiles::Both]
                    }
                    _ => &[IndexFiles::Offsets, IndexFiles::Times, IndexFiles::Both],
                };
                for &files in file_choices {
                    for keep_marker in [true, false] {
                        let (_root, dir) = pristine.copy();
                        damage_indexes(&pristine, &dir, target, files, damage);
                        if !keep_marker {
                            remove_clean_marker(&dir);
                        }
                        let label = format!(
                            "{damage:?} {files:?} of {target:?}, clean marker {keep_marker}"
                        );
                        assert_indexes_answer_and_are_rebuilt(&pristine, &dir, &label).await;
                    }
                }
            }
        }
    });
}

fn damage_indexes(
    pristine: &Pristine,
    dir: &Path,
    target: IndexTarget,
    files: IndexFiles,
    damage: IndexDamage,
) {
    let sealed = &pristine.segment_bases[..pristine.segment_bases.len() - 1];
    let bases: Vec<i64> = match target {
        IndexTarget::EverySealed => sealed.to_vec(),
        IndexTarget::OneSealed => vec![sealed[sealed.len() / 2]],
        IndexTarget::Active => vec![pristine.newest_base()],
    };
    for base in bases {
        // Another segment's files: the next one (the first for the newest segment).
        let position = pristine.segment_bases.iter().position(|b| *b == base);
        let other_base = pristine.segment_bases
            [(position.expect("known segment") + 1) % (pristine.segment_bases.len() - 1)];
        let paths = SegmentPaths::new(dir, base);
        let other = SegmentPaths::new(&pristine.dir, other_base);
        let chosen: Vec<(&Path, &Path)> = match files {
            IndexFiles::Offsets => vec![(&paths.index, &other.index)],
            IndexFiles::Times => vec![(&paths.time_index, &other.time_index)],
            IndexFiles::Both => vec![
                (&paths.index, &other.index),
                (&paths.time_index, &other.time_index),
            ],
        };
        for (path, other_path) in chosen {
            let length = std::fs::metadata(path).expect("index file").len();
            match damage {
                IndexDamage::Deleted => std::fs::remove_file(path).expect("delete index"),
                IndexDamage::Emptied => truncate_file(path, 0),
                IndexDamage::HalfCut => truncate_file(path, length / 2),
                IndexDamage::LastByteCut => truncate_file(path, length - 1),
                IndexDamage::ByteFlipped => flip_bit(path, length / 3, 2),
                IndexDamage::OtherSegments => {
                    std::fs::copy(other_path, path).expect("copy another segment's index");
                }
            }
        }
    }
}

/// Opens the log and checks every read and timestamp lookup, then the index files on disk
/// (rebuilt for sealed segments by the reads, written for the active one by a clean close), then
/// appends, restarts cleanly and after a crash.
async fn assert_indexes_answer_and_are_rebuilt(pristine: &Pristine, dir: &Path, label: &str) {
    let all = &pristine.batches;
    let log = open_log(dir, &tail_config(), &context()).await;
    let end = all.last().expect("batches").last_offset + 1;
    assert_eq!(log.log_end_offset(), end, "{label}: log end");
    assert_reads_and_lookups(&log, all, label);
    assert_log_holds(&log, all, label);
    for pair in pristine.segment_bases.windows(2) {
        assert_index_files_valid(dir, pair[0], pair[1], label);
    }
    let result = log
        .append(fixture_batch(APPENDED_TAG))
        .await
        .unwrap_or_else(|error| panic!("{label}: append: {error}"));
    assert_eq!(result.base_offset, end, "{label}: append lands at the end");
    log.close().await.expect("close");
    let bases: Vec<i64> = segment_logs(dir).iter().map(|(base, _)| *base).collect();
    let ends: Vec<i64> = bases[1..]
        .iter()
        .copied()
        .chain([result.last_offset + 1])
        .collect();
    for (base, next_offset) in bases.iter().zip(ends) {
        assert_index_files_valid(dir, *base, next_offset, &format!("{label}, after close"));
    }
    let mut with_new = all.clone();
    with_new.push(Expected::fixture(APPENDED_TAG, end));
    let log = open_log(dir, &tail_config(), &context()).await;
    assert_reads_and_lookups(&log, &with_new, &format!("{label}, clean restart"));
    drop(log);
    let log = open_log(dir, &tail_config(), &context()).await;
    assert_log_holds(&log, &with_new, &format!("{label}, restart after a crash"));
    log.close().await.expect("close");
}

/// A read at each batch's first and last offset starts with that batch; a timestamp lookup for
/// each batch's timestamp, and for one just below it, finds the batch; none finds a later one.
fn assert_reads_and_lookups(log: &PartitionLog, batches: &[Expected], label: &str) {
    for expected in batches {
        for offset in [expected.base_offset, expected.last_offset] {
            let plan = log
                .read(offset, 1)
                .unwrap_or_else(|error| panic!("{label}: read at {offset}: {error}"));
            let found = split_batches(&plan.to_vec().expect("plan bytes"));
            let (base_offset, bytes) = found
                .first()
                .unwrap_or_else(|| panic!("{label}: empty read at {offset}"));
            assert_eq!(
                *base_offset, expected.base_offset,
                "{label}: read at {offset}"
            );
            assert!(
                *bytes == expected.bytes,
                "{label}: read at {offset}: wrong bytes"
            );
        }
        for target in [
            expected.timestamp_ms,
            expected.timestamp_ms - TIMESTAMP_STEP_MS / 2,
        ] {
            let found = log
                .offset_for_timestamp(target)
                .unwrap_or_else(|error| panic!("{label}: lookup of {target}: {error}"))
                .unwrap_or_else(|| panic!("{label}: lookup of {target} found nothing"));
            assert_eq!(
                (found.offset, found.batch_max_timestamp),
                (expected.base_offset, expected.timestamp_ms),
                "{label}: offset for timestamp {target}"
            );
        }
    }
    let newest = batches.iter().map(|batch| batch.timestamp_ms).max();
    let after = newest.expect("batches") + 1;
    assert_eq!(
        log.offset_for_timestamp(after).expect("lookup"),
        None,
        "{label}: nothing is newer than the newest batch"
    );
}

/// The segment's `.index` and `.timeindex` exist, pass their checks, describe the segment file
/// exactly (footer) and point only at real batch boundaries with the right offsets and times.
fn assert_index_files_valid(dir: &Path, base: i64, next_offset: i64, label: &str) {
    let paths = SegmentPaths::new(dir, base);
    let read = |path: &Path| {
        std::fs::read(path)
            .unwrap_or_else(|error| panic!("{label}: {} not rebuilt: {error}", path.display()))
    };
    let (index, footer) = SegmentIndex::decode(base, &read(&paths.index), &read(&paths.time_index))
        .unwrap_or_else(|error| panic!("{label}: index of segment {base} invalid: {error}"));
    let batches = file_batches(&paths.log);
    let file_bytes = std::fs::metadata(&paths.log).expect("segment").len();
    let data_bytes = batches
        .last()
        .map_or(0, |batch| batch.position + batch.bytes.len() as u64);
    assert_eq!(
        data_bytes, file_bytes,
        "{label}: segment {base} holds only batches"
    );
    let max_timestamps: Vec<i64> = batches
        .iter()
        .map(|batch| {
            BatchHeader::parse(&batch.bytes)
                .expect("header")
                .max_timestamp
                .get()
        })
        .collect();
    assert_eq!(
        footer.next_offset, next_offset,
        "{label}: footer of segment {base}"
    );
    assert_eq!(
        footer.size_bytes, file_bytes,
        "{label}: footer of segment {base}"
    );
    assert_eq!(
        footer.max_timestamp,
        max_timestamps.iter().copied().max().unwrap_or(-1),
        "{label}: footer of segment {base}"
    );
    for entry in &index.offsets {
        let hit = batches.iter().any(|batch| {
            batch.position == u64::from(entry.position)
                && batch.base_offset - base == i64::from(entry.relative_offset)
        });
        assert!(
            hit,
            "{label}: segment {base}: entry {entry:?} is not a batch start"
        );
    }
    for entry in &index.times {
        let at = batches
            .iter()
            .position(|batch| batch.base_offset - base == i64::from(entry.relative_offset))
            .unwrap_or_else(|| panic!("{label}: segment {base}: time entry {entry:?} off a batch"));
        let before_max = max_timestamps[..at].iter().copied().max().unwrap_or(-1);
        assert!(
            before_max <= entry.timestamp,
            "{label}: segment {base}: time entry {entry:?} skips a batch with timestamp {before_max}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (h) a clean-shutdown marker next to a corrupt active index or a modified segment file.

/// Damage done to the files of one segment.
type Damage = Box<dyn Fn(&SegmentPaths)>;

#[test]
fn clean_marker_with_corrupt_active_index_falls_back_to_a_scan() {
    run(async {
        // Two clean sessions into the same active segment: the first session's index files are
        // a stale but valid index of that segment.
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("topic-0");
        let (log, mut batches) = append_fixtures(&dir, 0..BATCHES - 2).await;
        let active_base = *log.segment_base_offsets().last().expect("segments");
        log.close().await.expect("close");
        let stale = SegmentPaths::new(&dir, active_base);
        let stale_index = std::fs::read(&stale.index).expect("index");
        let stale_times = std::fs::read(&stale.time_index).expect("time index");
        let (log, more) = append_fixtures(&dir, BATCHES - 2..BATCHES).await;
        assert_eq!(
            log.segment_base_offsets().last(),
            Some(&active_base),
            "the second session must not roll"
        );
        log.close().await.expect("close");
        batches.extend(more);
        let pristine = Pristine::describe(root, dir, batches);
        let active = pristine.newest_paths(&pristine.dir);
        let index_bytes = std::fs::metadata(&active.index).expect("index").len();
        let times_bytes = std::fs::metadata(&active.time_index)
            .expect("time index")
            .len();
        let sealed = SegmentPaths::new(&pristine.dir, pristine.segment_bases[0]);

        let mut cases: Vec<(String, Damage)> = Vec::new();
        // Flips across the entries and every footer field, and in the time index.
        for position in [
            0,
            index_bytes - 32,
            index_bytes - 24,
            index_bytes - 16,
            index_bytes - 8,
            index_bytes - 1,
        ] {
            cases.push((
                format!(".index byte {position} flipped"),
                Box::new(move |paths: &SegmentPaths| flip_bit(&paths.index, position, 0)),
            ));
        }
        for position in [0, times_bytes - 8, times_bytes - 1] {
            cases.push((
                format!(".timeindex byte {position} flipped"),
                Box::new(move |paths: &SegmentPaths| flip_bit(&paths.time_index, position, 7)),
            ));
        }
        cases.push((
            ".index zero-filled".into(),
            Box::new(move |paths: &SegmentPaths| {
                std::fs::write(&paths.index, vec![0u8; index_bytes as usize]).expect("write")
            }),
        ));
        cases.push((
            ".index cut in half".into(),
            Box::new(move |paths: &SegmentPaths| truncate_file(&paths.index, index_bytes / 2)),
        ));
        cases.push((
            ".timeindex deleted".into(),
            Box::new(|paths: &SegmentPaths| std::fs::remove_file(&paths.time_index).expect("rm")),
        ));
        let sealed_index = sealed.index.clone();
        let sealed_times = sealed.time_index.clone();
        cases.push((
            "indexes of a sealed segment".into(),
            Box::new(move |paths: &SegmentPaths| {
                std::fs::copy(&sealed_index, &paths.index).expect("copy");
                std::fs::copy(&sealed_times, &paths.time_index).expect("copy");
            }),
        ));
        cases.push((
            "stale indexes of an earlier clean shutdown".into(),
            Box::new(move |paths: &SegmentPaths| {
                std::fs::write(&paths.index, &stale_index).expect("write");
                std::fs::write(&paths.time_index, &stale_times).expect("write");
            }),
        ));
        for (name, damage) in &cases {
            let (_root, dir) = pristine.copy();
            damage(&pristine.newest_paths(&dir));
            assert!(dir.join(CLEAN_SHUTDOWN_MARKER).exists());
            let label = format!("clean marker, active segment's {name}");
            assert_indexes_answer_and_are_rebuilt(&pristine, &dir, &label).await;
        }

        // The marker and valid indexes, but the segment file changed after the clean shutdown:
        // the file, not the index, decides.
        let data_end = pristine.data_end();
        let last = pristine.newest.last().expect("newest");
        let (_root, dir) = pristine.copy();
        truncate_file(&pristine.newest_paths(&dir).log, last.position + 30);
        let kept = pristine.kept_before(last.position + 30);
        assert_recovers_to(&dir, kept, "clean marker, last batch torn").await;
        let (_root, dir) = pristine.copy();
        append_to_file(&pristine.newest_paths(&dir).log, &[0xa5; 100]);
        assert_recovers_to(
            &dir,
            &pristine.batches,
            "clean marker, garbage after the data",
        )
        .await;
        assert_eq!(data_end, std::fs::metadata(&active.log).expect("log").len());
    });
}
