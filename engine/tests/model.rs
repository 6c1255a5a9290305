//! Model-based test of the partition log: seeded random sequences of appends, reads, config
//! changes (rolls), recovery checkpoints, clean and crash restarts, truncation, DeleteRecords,
//! retention and timestamp lookups, applied both to the log and to a plain in-memory model,
//! compared after every step.
//!
//! The model knows batches (offsets, timestamp, exact stored bytes), segments (base offset and
//! size: a batch rolls a new segment when it would take a non-empty active segment past
//! `segment.bytes`) and the log start offset. After every operation the log's start, durable end,
//! segment list, total size and full contents must equal the model's.
//!
//! Replay one seed with `RUNNEL_MODEL_SEED=<seed> cargo test -p runnel-engine --test model`.
mod common;

use common::*;
use runnel_engine::fault::FaultyStorage;
use runnel_engine::{FlushPolicy, LogConfig, LogContext, LogError, PartitionLog, RecoveryMode};
use std::path::PathBuf;

const SEEDS: u64 = 30;
const OPS_PER_SEED: usize = 150;

/// Seeds run on this many threads at once: the test waits on fsyncs far more than it computes.
const WORKER_THREADS: usize = 4;

#[test]
fn every_commit_with_clean_and_crash_restarts() {
    run_seeds(FlushPolicy::EveryCommit);
}

#[test]
fn flush_never_with_clean_restarts() {
    run_seeds(FlushPolicy::Never);
}

fn run_seeds(flush: FlushPolicy) {
    let seeds: Vec<u64> = match std::env::var("RUNNEL_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("RUNNEL_MODEL_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let checkpoint_recoveries = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..WORKER_THREADS {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&seed) = seeds.get(index) else { break };
                let recoveries = run_seed(seed, flush);
                checkpoint_recoveries.fetch_add(recoveries, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    // The crash restarts must have exercised recovery from a checkpoint, not only full scans.
    let checkpoint_recoveries = checkpoint_recoveries.into_inner();
    eprintln!("{flush:?}: {checkpoint_recoveries} crash restarts recovered from a checkpoint");
    if flush == FlushPolicy::EveryCommit && seeds.len() > 1 {
        assert!(
            checkpoint_recoveries > 0,
            "no crash restart used a checkpoint"
        );
    }
}

/// Returns how many crash restarts recovered from a checkpoint.
fn run_seed(seed: u64, flush: FlushPolicy) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("topic-0");
    run(async move {
        let mut harness = Harness::open(seed, flush, path).await;
        for step in 0..OPS_PER_SEED {
            harness.step = step;
            harness.random_op().await;
            harness.check_against_model();
        }
        harness.log().close().await.expect("final close");
        harness.checkpoint_recoveries
    })
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug)]
struct ModelBatch {
    base_offset: i64,
    last_offset: i64,
    timestamp_ms: i64,
    bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct ModelSegment {
    base_offset: i64,
    size_bytes: u64,
}

/// What the log should hold. Batches below the first segment are dropped; batches below the log
/// start but in a kept segment stay (a read at the log start returns the batch containing it).
#[derive(Debug)]
struct Model {
    batches: Vec<ModelBatch>,
    segments: Vec<ModelSegment>,
    log_start: i64,
    log_end: i64,
}

/// The model's answer where the log should return `OffsetOutOfRange`.
#[derive(Debug, PartialEq, Eq)]
struct OutOfRange;

impl Model {
    fn new() -> Self {
        Self {
            batches: Vec::new(),
            segments: vec![ModelSegment {
                base_offset: 0,
                size_bytes: 0,
            }],
            log_start: 0,
            log_end: 0,
        }
    }

    fn append(&mut self, bytes: Vec<u8>, records: i64, timestamp_ms: i64, segment_bytes: u64) {
        let size = bytes.len() as u64;
        let active = self.segments.last().expect("an active segment");
        if active.size_bytes > 0 && active.size_bytes + size > segment_bytes {
            self.segments.push(ModelSegment {
                base_offset: self.log_end,
                size_bytes: 0,
            });
        }
        self.segments.last_mut().expect("active").size_bytes += size;
        self.batches.push(ModelBatch {
            base_offset: self.log_end,
            last_offset: self.log_end + records - 1,
            timestamp_ms,
            bytes,
        });
        self.log_end += records;
    }

    /// Index of the batch holding `offset` (which must lie in the log).
    fn batch_index(&self, offset: i64) -> usize {
        let index = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        assert!(
            index < self.batches.len() && self.batches[index].base_offset <= offset,
            "model has no batch holding {offset}"
        );
        index
    }

    /// Index of the segment holding `offset`.
    fn segment_index(&self, offset: i64) -> usize {
        let count = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset);
        assert!(count > 0, "offset {offset} below the first segment");
        count - 1
    }

    fn visible_batches(&self) -> &[ModelBatch] {
        let first = self
            .batches
            .partition_point(|batch| batch.last_offset < self.log_start);
        &self.batches[first..]
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }

    fn segment_bases(&self) -> Vec<i64> {
        self.segments
            .iter()
            .map(|segment| segment.base_offset)
            .collect()
    }

    /// Newest batch timestamp of segment `index` (`None` when it holds no batch).
    fn segment_max_timestamp(&self, index: usize) -> Option<i64> {
        let base = self.segments[index].base_offset;
        let end = self
            .segments
            .get(index + 1)
            .map_or(self.log_end, |next| next.base_offset);
        self.batches
            .iter()
            .filter(|batch| batch.base_offset >= base && batch.base_offset < end)
            .map(|batch| batch.timestamp_ms)
            .max()
    }

    /// Drops the batch holding `offset` and everything after it.
    fn truncate_to(&mut self, offset: i64) -> Result<i64, OutOfRange> {
        if offset < self.log_start {
            return Err(OutOfRange);
        }
        if offset >= self.log_end {
            return Ok(self.log_end);
        }
        let cut = self.batch_index(offset);
        let new_end = self.batches[cut].base_offset;
        self.batches.truncate(cut);
        self.segments
            .retain(|segment| segment.base_offset <= offset);
        let active = self
            .segments
            .last_mut()
            .expect("a segment holds the offset");
        active.size_bytes = self
            .batches
            .iter()
            .filter(|batch| batch.base_offset >= active.base_offset)
            .map(|batch| batch.bytes.len() as u64)
            .sum();
        self.log_end = new_end;
        // A log never starts after its end: the start follows the end down.
        self.log_start = self.log_start.min(new_end);
        Ok(new_end)
    }

    fn delete_before(&mut self, offset: i64) -> Result<i64, OutOfRange> {
        if offset < 0 || offset > self.log_end {
            return Err(OutOfRange);
        }
        if offset <= self.log_start {
            return Ok(self.log_start);
        }
        self.log_start = offset;
        while self.segments.len() > 1 && self.segments[1].base_offset <= offset {
            self.remove_first_segment();
        }
        Ok(offset)
    }

    /// Kafka's rules: oldest sealed segments first, stop at the first one to keep; a sealed
    /// segment wholly below the log start always goes.
    fn apply_retention(
        &mut self,
        now_ms: i64,
        segments_max: usize,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> usize {
        let mut remaining_bytes = self.total_bytes();
        let mut deleted = 0;
        while deleted < segments_max && self.segments.len() > 1 {
            let size = self.segments[0].size_bytes;
            let below_log_start = self.segments[1].base_offset <= self.log_start;
            let expired = retention_ms >= 0
                && self
                    .segment_max_timestamp(0)
                    .is_some_and(|newest| now_ms.saturating_sub(newest) > retention_ms);
            let oversized = retention_bytes >= 0
                && remaining_bytes.saturating_sub(size) >= retention_bytes as u64;
            if !(below_log_start || expired || oversized) {
                break;
            }
            remaining_bytes -= size;
            self.remove_first_segment();
            deleted += 1;
        }
        deleted
    }

    fn remove_first_segment(&mut self) {
        self.segments.remove(0);
        let first = self.segments[0].base_offset;
        self.batches.retain(|batch| batch.base_offset >= first);
        self.log_start = self.log_start.max(first);
    }

    /// (offset, batch max timestamp) of the first record at or after the log start whose
    /// timestamp is `>= target_ms`.
    fn offset_for_timestamp(&self, target_ms: i64) -> Option<(i64, i64)> {
        self.visible_batches()
            .iter()
            .find(|batch| batch.timestamp_ms >= target_ms)
            .map(|batch| (batch.base_offset.max(self.log_start), batch.timestamp_ms))
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: drives the log and the model side by side.

struct Harness {
    seed: u64,
    step: usize,
    last_op: String,
    flush: FlushPolicy,
    path: PathBuf,
    storage: FaultyStorage,
    context: LogContext,
    log: Option<PartitionLog>,
    model: Model,
    rng: TestRng,
    clock_ms: i64,
    next_tag: u64,
    checkpoint_recoveries: usize,
}

impl Harness {
    async fn open(seed: u64, flush: FlushPolicy, path: PathBuf) -> Self {
        // xorshift64* mixes poorly from tiny seeds: spread them first.
        let mut rng = TestRng::new(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let cache_bytes = rng.pick(&[0, 16 << 10, 1 << 20]);
        let (storage, context) = faulty_context(cache_bytes);
        let config = LogConfig {
            segment_bytes: 8 << 10,
            index_interval_bytes: 1024,
            preallocate_bytes: 16 << 10,
            retention_ms: -1,
            retention_bytes: -1,
            flush,
            ..LogConfig::default()
        };
        let log = open_log(&path, &config, &context).await;
        Self {
            seed,
            step: 0,
            last_op: "open".into(),
            flush,
            path,
            storage,
            context,
            log: Some(log),
            model: Model::new(),
            rng,
            clock_ms: 1_000_000,
            next_tag: 0,
            checkpoint_recoveries: 0,
        }
    }

    fn log(&self) -> &PartitionLog {
        self.log.as_ref().expect("log is open")
    }

    /// Where a failure happened, for every assertion message.
    fn at(&self) -> String {
        format!(
            "seed {} ({:?}) step {} after `{}`",
            self.seed, self.flush, self.step, self.last_op
        )
    }

    async fn random_op(&mut self) {
        let crash_allowed = self.flush == FlushPolicy::EveryCommit;
        match self.rng.below(100) {
            0..=49 => self.append().await,
            50..=58 => self.read(),
            59..=61 => self.checkpoint().await,
            62..=65 => self.reconfigure(),
            66..=68 => self.clean_restart().await,
            69..=71 if crash_allowed => self.crash_restart().await,
            69..=71 => self.clean_restart().await,
            72..=75 => self.truncate().await,
            76..=78 => self.delete_before().await,
            79..=86 => self.retention().await,
            _ => self.offset_for_timestamp(),
        }
    }

    async fn append(&mut self) {
        let records = self.rng.between(1, 19);
        let value_bytes = match self.rng.below(100) {
            0..=49 => self.rng.below(100),
            50..=84 => self.rng.below(1000),
            _ => self.rng.below(3000),
        } as usize;
        self.clock_ms += self.rng.between(0, 100);
        let timestamp_ms = self.clock_ms + self.rng.between(-2_000, 2_000);
        let tag = self.next_tag;
        self.next_tag += 1;
        self.last_op =
            format!("append tag {tag} records {records} value {value_bytes} ts {timestamp_ms}");
        let batch = tagged_batch(tag, records as usize, value_bytes, timestamp_ms);
        let sent = batch.to_vec();
        let result = self.log().append(batch).await.unwrap_or_else(|error| {
            panic!("{}: append failed: {error}", self.at());
        });
        let expected_base = self.model.log_end;
        let segment_bytes = self.log().config().segment_bytes;
        self.model.append(
            stamped(&sent, expected_base),
            records,
            timestamp_ms,
            segment_bytes,
        );
        let at = self.at();
        assert_eq!(result.base_offset, expected_base, "{at}: base offset");
        assert_eq!(
            result.last_offset,
            expected_base + records - 1,
            "{at}: last offset"
        );
        assert_eq!(result.log_append_time_ms, -1, "{at}: CreateTime");
        assert_eq!(
            result.log_start_offset, self.model.log_start,
            "{at}: log start in the append result"
        );
    }

    fn read(&mut self) {
        let (start, end) = (self.model.log_start, self.model.log_end);
        let offset = match self.rng.below(10) {
            0 => start - 1,
            1 => end + 1,
            2 => end,
            3 => start,
            _ => self.rng.between(start, end),
        };
        let max_bytes = match self.rng.below(5) {
            0 => self.rng.below(2),
            1 => 1 << 20,
            2 if offset >= start && offset < end => {
                // Exactly the size of the next few batches, or one byte short of it.
                let first = self.model.batch_index(offset);
                let count = self.rng.between(1, 5) as usize;
                let exact: u64 = self.model.batches[first..]
                    .iter()
                    .take(count)
                    .map(|batch| batch.bytes.len() as u64)
                    .sum();
                exact - self.rng.below(2)
            }
            _ => self.rng.below(20_000),
        };
        self.last_op = format!("read at {offset} max {max_bytes}");
        self.check_read(offset, max_bytes);
    }

    /// A read must return whole batches from the one holding `offset`, in order, equal to the
    /// model's, within `max_bytes` unless only one batch, and must not stop early inside a
    /// segment while the next batch still fits.
    fn check_read(&self, offset: i64, max_bytes: u64) {
        let at = self.at();
        let model = &self.model;
        let result = self.log().read(offset, max_bytes);
        if offset < model.log_start || offset > model.log_end || offset < 0 {
            assert!(
                matches!(result, Err(LogError::OffsetOutOfRange { .. })),
                "{at}: read outside [{}, {}] gave {result:?}",
                model.log_start,
                model.log_end
            );
            return;
        }
        let plan = result.unwrap_or_else(|error| panic!("{at}: read failed: {error}"));
        assert_eq!(plan.durable_end_offset, model.log_end, "{at}: plan end");
        assert_eq!(plan.log_start_offset, model.log_start, "{at}: plan start");
        let batches = split_batches(&plan.to_vec().expect("plan bytes"));
        if offset == model.log_end {
            assert!(batches.is_empty(), "{at}: a read at the end must be empty");
            return;
        }
        assert!(!batches.is_empty(), "{at}: empty plan below the end");
        let first = model.batch_index(offset);
        let mut total_bytes = 0u64;
        for (position, (base, bytes)) in batches.iter().enumerate() {
            let expected = model.batches.get(first + position).unwrap_or_else(|| {
                panic!("{at}: plan holds a batch at {base} past the model's end")
            });
            assert_eq!(*base, expected.base_offset, "{at}: batch {position} base");
            assert!(
                *bytes == expected.bytes,
                "{at}: bytes of the batch at {base} differ from what was appended"
            );
            total_bytes += bytes.len() as u64;
        }
        if batches.len() > 1 {
            assert!(
                total_bytes <= max_bytes,
                "{at}: plan of {} batches is {total_bytes} bytes, over max {max_bytes}",
                batches.len()
            );
        }
        let next = first + batches.len();
        if let Some(next_batch) = model.batches.get(next) {
            let last_segment = model.segment_index(model.batches[next - 1].base_offset);
            let next_segment = model.segment_index(next_batch.base_offset);
            assert!(
                last_segment != next_segment
                    || total_bytes + next_batch.bytes.len() as u64 > max_bytes,
                "{at}: plan stopped at {} bytes although the next batch ({} bytes, same \
                 segment) fits in {max_bytes}",
                total_bytes,
                next_batch.bytes.len()
            );
        }
    }

    fn reconfigure(&mut self) {
        let before = self.log().config();
        let mut config = before.clone();
        if self.rng.percent(10) {
            // Invalid: rejected, and the old configuration stays.
            config.segment_bytes = self.rng.pick(&[0, 1, 1023]);
            self.last_op = format!("set_config invalid segment_bytes {}", config.segment_bytes);
            let result = self.log().set_config(config);
            let at = self.at();
            assert!(result.is_err(), "{at}: invalid config accepted");
            assert_eq!(
                self.log().config().segment_bytes,
                before.segment_bytes,
                "{at}: a rejected config must not apply"
            );
            return;
        }
        config.segment_bytes = self.rng.pick(&[1024, 2 << 10, 8 << 10, 8 << 10, 32 << 10]);
        config.index_interval_bytes = self.rng.pick(&[1, 512, 1024, 4096]);
        config.preallocate_bytes = self.rng.pick(&[0, 4 << 10, 16 << 10]);
        self.last_op = format!(
            "set_config segment_bytes {} index_interval {} preallocate {}",
            config.segment_bytes, config.index_interval_bytes, config.preallocate_bytes
        );
        self.set_config(config);
    }

    fn set_config(&self, config: LogConfig) {
        self.log()
            .set_config(config)
            .unwrap_or_else(|error| panic!("{}: set_config failed: {error}", self.at()));
    }

    /// A recovery checkpoint: changes nothing visible, but the next crash restart trusts it.
    async fn checkpoint(&mut self) {
        self.last_op = "checkpoint".into();
        if let Err(error) = self.log().checkpoint().await {
            panic!("{}: checkpoint failed: {error}", self.at());
        }
    }

    async fn clean_restart(&mut self) {
        self.last_op = "clean restart".into();
        let log = self.log.take().expect("log is open");
        let config = log.config();
        log.close().await.unwrap_or_else(|error| {
            panic!("{}: close failed: {error}", self.at());
        });
        drop(log);
        self.log = Some(open_log(&self.path, &config, &self.context).await);
    }

    /// Drops the log without closing it, loses everything not synced, and recovers. Under
    /// EveryCommit every acknowledged batch was synced, so the model does not change.
    async fn crash_restart(&mut self) {
        self.last_op = "crash restart".into();
        let log = self.log.take().expect("log is open");
        let config = log.config();
        drop(log);
        self.storage.power_loss().expect("power loss");
        let log = open_log(&self.path, &config, &self.context).await;
        let stats = log.recovery_stats();
        if stats.mode == RecoveryMode::Checkpoint {
            self.checkpoint_recoveries += 1;
            let active_bytes = self.model.segments.last().expect("a segment").size_bytes;
            assert!(
                stats.trusted_bytes <= active_bytes,
                "{}: trusted {} bytes of a {active_bytes} byte segment",
                self.at(),
                stats.trusted_bytes
            );
        }
        self.log = Some(log);
    }

    async fn truncate(&mut self) {
        let (start, end) = (self.model.log_start, self.model.log_end);
        // Mostly a short tail, as a replica truncating to its leader; sometimes at the log
        // start, which may sit inside a batch after DeleteRecords.
        let batches = &self.model.batches;
        let offset = match self.rng.below(10) {
            0 | 1 => start,
            2 => start - 1,
            3 => end + 3,
            4 | 5 => self.rng.between(start, end),
            _ => {
                let from = batches.len().saturating_sub(3);
                let low = batches.get(from).map_or(end, |batch| batch.base_offset);
                self.rng.between(low.max(start), end)
            }
        };
        self.last_op = format!("truncate_to {offset}");
        let result = self.log().truncate_to(offset).await;
        let expected = self.model.truncate_to(offset);
        let at = self.at();
        match (result, expected) {
            (Ok(new_end), Ok(expected_end)) => {
                assert_eq!(new_end, expected_end, "{at}: new end");
            }
            (Err(LogError::OffsetOutOfRange { .. }), Err(OutOfRange)) => {}
            (result, expected) => panic!("{at}: truncate gave {result:?}, model {expected:?}"),
        }
    }

    async fn delete_before(&mut self) {
        let (start, end) = (self.model.log_start, self.model.log_end);
        let offset = match self.rng.below(10) {
            0 => end + 1,
            1 => start - 1,
            2 => end,
            _ => self.rng.between(start, end),
        };
        self.last_op = format!("delete_before {offset}");
        let result = self.log().delete_before(offset).await;
        let expected = self.model.delete_before(offset);
        let at = self.at();
        match (result, expected) {
            (Ok(new_start), Ok(expected_start)) => {
                assert_eq!(new_start, expected_start, "{at}: new log start");
            }
            (Err(LogError::OffsetOutOfRange { .. }), Err(OutOfRange)) => {}
            (result, expected) => panic!("{at}: delete_before gave {result:?}, model {expected:?}"),
        }
    }

    async fn retention(&mut self) {
        let retention_bytes = self.rng.pick(&[-1, -1, 0, 40 << 10, 120 << 10, 250 << 10]);
        let retention_ms = self.rng.pick(&[-1, -1, -1, 3_000, 10_000]);
        let segments_max = self.rng.pick(&[1, 2, usize::MAX]);
        let now_ms = self.clock_ms;
        self.last_op = format!(
            "apply_retention now {now_ms} max {segments_max} retention.ms {retention_ms} \
             retention.bytes {retention_bytes}"
        );
        let mut config = self.log().config();
        config.retention_bytes = retention_bytes;
        config.retention_ms = retention_ms;
        self.set_config(config);
        let deleted = self
            .log()
            .apply_retention(now_ms, segments_max)
            .await
            .unwrap_or_else(|error| panic!("{}: retention failed: {error}", self.at()));
        let expected =
            self.model
                .apply_retention(now_ms, segments_max, retention_ms, retention_bytes);
        assert_eq!(deleted, expected, "{}: segments deleted", self.at());
    }

    fn offset_for_timestamp(&mut self) {
        let visible = self.model.visible_batches();
        let target_ms = if visible.is_empty() || self.rng.percent(20) {
            self.clock_ms + self.rng.between(-5_000, 3_000)
        } else {
            let batch = &visible[self.rng.below(visible.len() as u64) as usize];
            batch.timestamp_ms + self.rng.between(-1, 1)
        };
        self.last_op = format!("offset_for_timestamp {target_ms}");
        let found = self
            .log()
            .offset_for_timestamp(target_ms)
            .unwrap_or_else(|error| panic!("{}: timestamp lookup failed: {error}", self.at()))
            .map(|found| (found.offset, found.batch_max_timestamp));
        let expected = self.model.offset_for_timestamp(target_ms);
        assert_eq!(
            found,
            expected,
            "{}: (offset, batch max timestamp)",
            self.at()
        );
    }

    /// The log and the model agree on every observable: offsets, segments, size and contents.
    fn check_against_model(&self) {
        let at = self.at();
        let log = self.log();
        let model = &self.model;
        assert!(log.poisoned().is_none(), "{at}: log poisoned");
        assert_eq!(log.log_start_offset(), model.log_start, "{at}: log start");
        assert_eq!(log.durable_end_offset(), model.log_end, "{at}: durable end");
        assert_eq!(log.log_end_offset(), model.log_end, "{at}: log end");
        assert_eq!(
            log.segment_base_offsets(),
            model.segment_bases(),
            "{at}: segment bases"
        );
        assert_eq!(log.size_bytes(), model.total_bytes(), "{at}: total bytes");
        let contents = read_all(log, model.log_start);
        let expected = model.visible_batches();
        assert_eq!(
            contents.iter().map(|(base, _)| *base).collect::<Vec<_>>(),
            expected
                .iter()
                .map(|batch| batch.base_offset)
                .collect::<Vec<_>>(),
            "{at}: batch base offsets"
        );
        for ((base, bytes), batch) in contents.iter().zip(expected) {
            assert!(*bytes == batch.bytes, "{at}: bytes of the batch at {base}");
        }
        if model.log_start > 0 {
            assert!(
                matches!(
                    log.read(model.log_start - 1, 1),
                    Err(LogError::OffsetOutOfRange { .. })
                ),
                "{at}: a read below the log start must be out of range"
            );
        }
    }
}
