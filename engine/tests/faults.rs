//! Fault injection: a failed write or fsync poisons the log, nothing is acknowledged after it,
//! and after a power loss every acknowledged batch is back at its offset while no offset holds a
//! batch it did not hold before (reliability.md, fault 4 and "the standard check").
//!
//! Every case runs on [`FaultyStorage`]: fail the Nth counted operation (and every later one),
//! then drop the log without closing it and roll every file back to its last sync.
mod common;

use common::*;
use runnel_engine::fault::{FaultKind, FaultPlan, FaultyStorage};
use runnel_engine::{LogConfig, LogContext, LogError, PartitionLog};
use std::collections::BTreeMap;
use std::path::Path;

/// Tiny segments so the workloads roll every few batches.
fn fault_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        preallocate_bytes: 8192,
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    }
}

fn fail_from(kind: FaultKind, fail_at_op: u64) -> Option<FaultPlan> {
    Some(FaultPlan { kind, fail_at_op })
}

fn assert_poisoned<T: std::fmt::Debug>(result: &Result<T, LogError>, at: &str) {
    match result {
        Err(error @ LogError::Poisoned(_)) => assert_eq!(error.kafka_error_code(), 56, "{at}"),
        other => panic!("{at}: expected Poisoned, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// What the test knows about the batches it sent, and the standard check against it.

#[derive(Default)]
struct Ledger {
    /// Acknowledged batches (base offset → stored bytes): must be readable at that offset.
    acked: BTreeMap<i64, Vec<u8>>,
    /// Batches a failed truncation or deletion may or may not have removed.
    uncertain: BTreeMap<i64, Vec<u8>>,
    /// Batches whose append failed, as sent: each may be present, but only above every
    /// acknowledged offset.
    failed: Vec<Vec<u8>>,
    /// The log start offset must end up in `start_min..=start_max`.
    start_min: i64,
    start_max: i64,
}

impl Ledger {
    fn ack(&mut self, sent: &[u8], base_offset: i64) {
        self.acked.insert(base_offset, stamped(sent, base_offset));
    }

    fn highest_acked_offset(&self) -> i64 {
        self.acked
            .values()
            .next_back()
            .map_or(-1, |bytes| last_offset_of(bytes))
    }

    /// A truncation to `new_end` succeeded: those batches are gone for good.
    fn truncated(&mut self, new_end: i64) {
        self.acked.split_off(&new_end);
        self.uncertain.split_off(&new_end);
    }

    /// A truncation that would have cut at `new_end` failed part way.
    fn truncation_failed(&mut self, new_end: i64) {
        let cut = self.acked.split_off(&new_end);
        self.uncertain.extend(cut);
    }

    /// The standard check on a (reopened) log.
    fn verify(&self, log: &PartitionLog, at: &str) {
        let start = log.log_start_offset();
        let end = log.durable_end_offset();
        assert!(log.poisoned().is_none(), "{at}: reopened log is poisoned");
        assert_eq!(log.log_end_offset(), end, "{at}: log end vs durable end");
        assert!(
            (self.start_min..=self.start_max).contains(&start),
            "{at}: log start {start} outside {}..={}",
            self.start_min,
            self.start_max
        );
        let contents = try_read_all(log, start).unwrap_or_else(|error| {
            panic!("{at}: the recovered log does not read back: {error}");
        });
        let highest_acked = self.highest_acked_offset();
        let mut expected_next = None;
        for (base, bytes) in &contents {
            let last = last_offset_of(bytes);
            match expected_next {
                None => assert!(
                    *base <= start,
                    "{at}: first batch {base} after start {start}"
                ),
                Some(next) => assert_eq!(*base, next, "{at}: gap or overlap before {base}"),
            }
            expected_next = Some(last + 1);
            if self.acked.get(base) == Some(bytes) || self.uncertain.get(base) == Some(bytes) {
                continue;
            }
            assert!(
                !self.acked.contains_key(base),
                "{at}: offset {base} holds a different batch than the one acknowledged there"
            );
            let was_failed = self
                .failed
                .iter()
                .any(|sent| stamped(sent, *base) == *bytes);
            assert!(
                was_failed,
                "{at}: offset {base} holds a batch never sent there"
            );
            assert!(
                *base > highest_acked,
                "{at}: failed batch at {base} is not above acknowledged offset {highest_acked}"
            );
        }
        assert_eq!(expected_next.unwrap_or(start), end, "{at}: contents end");
        let present: BTreeMap<i64, &Vec<u8>> = contents
            .iter()
            .map(|(base, bytes)| (*base, bytes))
            .collect();
        for (base, bytes) in &self.acked {
            if last_offset_of(bytes) < start {
                continue; // deleted on request
            }
            assert!(
                present.get(base) == Some(&bytes),
                "{at}: acknowledged batch at {base} is missing after recovery"
            );
        }
    }
}

/// Drops the log without closing it, loses everything not synced, reopens without faults.
async fn crash_and_reopen(
    log: PartitionLog,
    path: &Path,
    storage: &FaultyStorage,
    context: &LogContext,
) -> PartitionLog {
    let config = log.config();
    drop(log);
    storage.power_loss().expect("power loss");
    open_log(path, &config, context).await
}

/// After verifying a recovered log: it takes a new append at its end, and that and everything
/// else survive a clean restart.
async fn append_after_recovery(
    log: PartitionLog,
    path: &Path,
    context: &LogContext,
    ledger: &mut Ledger,
    at: &str,
) {
    let end = log.log_end_offset();
    let batch = tagged_batch(1_000_000, 2, 100, 5_000);
    let sent = batch.to_vec();
    let result = log
        .append(batch)
        .await
        .unwrap_or_else(|error| panic!("{at}: append after recovery failed: {error}"));
    assert_eq!(result.base_offset, end, "{at}: first offset after recovery");
    // Whatever recovery kept is now below acknowledged data: part of the log for good.
    for (base, bytes) in read_all(&log, log.log_start_offset()) {
        ledger.acked.entry(base).or_insert(bytes);
    }
    ledger.uncertain.clear();
    ledger.ack(&sent, result.base_offset);
    let config = log.config();
    log.close().await.expect("close after recovery");
    drop(log);
    let log = open_log(path, &config, context).await;
    ledger.verify(&log, &format!("{at}, after a clean restart"));
    log.close().await.expect("final close");
}

// ---------------------------------------------------------------------------------------------
// (a), (b): one failed fdatasync or write poisons the log.

#[test]
fn failed_sync_poisons_the_log() {
    for fail_at_op in 1..=4 {
        for power_loss in [true, false] {
            poison_case(FaultKind::Sync, fail_at_op, power_loss);
        }
    }
}

#[test]
fn failed_write_poisons_the_log() {
    for fail_at_op in 1..=4 {
        for power_loss in [true, false] {
            poison_case(FaultKind::Write, fail_at_op, power_loss);
        }
    }
}

fn poison_case(kind: FaultKind, fail_at_op: u64, power_loss: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("topic-0");
    let at = format!("{kind:?} fault at op {fail_at_op}, power loss {power_loss}");
    run(async move {
        let (storage, context) = faulty_context(1 << 20);
        let log = open_log(&path, &fault_config(), &context).await;
        let mut ledger = Ledger::default();
        for tag in 0..10 {
            let batch = tagged_batch(tag, 3, 300, 1_000 + tag as i64);
            let sent = batch.to_vec();
            let result = log.append(batch).await.expect("append before the fault");
            ledger.ack(&sent, result.base_offset);
        }
        assert!(log.segment_count() > 1, "{at}: the setup must roll");
        storage.set_plan(fail_from(kind, fail_at_op));
        let mut tag = 100;
        let first_error = loop {
            let batch = tagged_batch(tag, 3, 300, 2_000 + tag as i64);
            tag += 1;
            let sent = batch.to_vec();
            let failures_before = storage.failures();
            match log.append(batch).await {
                Ok(result) => {
                    assert_eq!(failures_before, 0, "{at}: acknowledged after a failure");
                    assert!(
                        storage.failures() == 0,
                        "{at}: acknowledged a failed commit"
                    );
                    ledger.ack(&sent, result.base_offset);
                }
                Err(error) => {
                    ledger.failed.push(sent);
                    break error;
                }
            }
            assert!(tag < 120, "{at}: the fault never fired");
        };
        assert_poisoned(&Err::<(), _>(first_error), &at);
        assert!(storage.failures() >= 1, "{at}: an error without a fault");
        assert!(
            log.poisoned().is_some(),
            "{at}: poisoned() after the failure"
        );
        let durable_end = log.durable_end_offset();
        assert_eq!(
            durable_end,
            ledger.highest_acked_offset() + 1,
            "{at}: the failed batch must not become visible"
        );
        // Every later write is refused, and nothing becomes visible.
        for _ in 0..3 {
            let batch = tagged_batch(tag, 3, 300, 3_000);
            tag += 1;
            ledger.failed.push(batch.to_vec());
            assert_poisoned(&log.append(batch).await, &at);
        }
        assert_poisoned(&log.truncate_to(0).await, &at);
        assert_eq!(
            log.durable_end_offset(),
            durable_end,
            "{at}: durable end moved"
        );
        assert!(
            log.read(durable_end, 1 << 20)
                .expect("read at end")
                .is_empty(),
            "{at}: data past the durable end is readable"
        );
        ledger.start_max = log.log_start_offset();
        ledger.verify_visible_before_crash(&log, &at);
        let log = if power_loss {
            crash_and_reopen(log, &path, &storage, &context).await
        } else {
            // A process crash without power loss: written but unsynced bytes may survive.
            assert_poisoned(&log.close().await, &at);
            drop(log);
            storage.set_plan(None);
            open_log(&path, &fault_config(), &context).await
        };
        ledger.verify(&log, &at);
        append_after_recovery(log, &path, &context, &mut ledger, &at).await;
    });
}

impl Ledger {
    /// Before the crash, readers see exactly the acknowledged batches.
    fn verify_visible_before_crash(&self, log: &PartitionLog, at: &str) {
        let visible = read_all(log, log.log_start_offset());
        let acked: Vec<(i64, Vec<u8>)> = self
            .acked
            .iter()
            .map(|(base, bytes)| (*base, bytes.clone()))
            .collect();
        assert!(
            visible == acked,
            "{at}: visible batches differ from acknowledged ones"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (c): fail the Nth operation of a workload that appends, rolls, truncates, deletes, applies
// retention and closes; for every N until the workload runs without reaching the fault.

/// Appends in the workload; sizes are fixed so every N hits the same operation sequence.
const WORKLOAD_APPENDS: u64 = 20;
/// A bound on N: the workload has far fewer operations.
const WORKLOAD_OPS_MAX: u64 = 1_000;
/// Parallel iterations: each one mostly waits on fsyncs.
const WORKER_THREADS: u64 = 4;

#[test]
fn failing_any_operation_keeps_acknowledged_data() {
    let next = std::sync::atomic::AtomicU64::new(1);
    let clean_run = std::sync::atomic::AtomicU64::new(u64::MAX);
    std::thread::scope(|scope| {
        for _ in 0..WORKER_THREADS {
            scope.spawn(|| loop {
                let fail_at_op = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let first_clean = clean_run.load(std::sync::atomic::Ordering::Relaxed);
                if fail_at_op > first_clean {
                    break;
                }
                assert!(
                    fail_at_op <= WORKLOAD_OPS_MAX,
                    "the workload never completes"
                );
                if !nth_op_case(fail_at_op) {
                    clean_run.fetch_min(fail_at_op, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let ops = clean_run.into_inner();
    eprintln!("the workload ran {ops} counted operations");
    assert!(
        ops > 60,
        "the workload should span many operations, ran {ops}"
    );
}

/// Runs the workload failing operation `fail_at_op` onwards; returns whether the fault fired.
fn nth_op_case(fail_at_op: u64) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("topic-0");
    let at = format!("fail at op {fail_at_op}");
    run(async move {
        let (storage, context) = faulty_context(64 << 10);
        let log = open_log(&path, &fault_config(), &context).await;
        let mut ledger = Ledger::default();
        storage.set_plan(fail_from(FaultKind::Any, fail_at_op));
        run_workload(&log, &storage, &mut ledger, &at).await;
        let fired = storage.failures() > 0;
        let log = crash_and_reopen(log, &path, &storage, &context).await;
        ledger.verify(&log, &at);
        append_after_recovery(log, &path, &context, &mut ledger, &at).await;
        fired
    })
}

async fn run_workload(log: &PartitionLog, storage: &FaultyStorage, ledger: &mut Ledger, at: &str) {
    let mut rng = TestRng::new(0x5eed_f00d);
    let mut saw_error = false;
    for tag in 0..WORKLOAD_APPENDS {
        match tag {
            12 => truncate_step(log, storage, ledger, &mut saw_error, at).await,
            16 => delete_step(log, storage, ledger, &mut saw_error, at).await,
            18 => retention_step(log, storage, ledger, &mut saw_error, at).await,
            _ => {}
        }
        let records = rng.between(1, 4) as usize;
        let value_bytes = rng.between(200, 700) as usize;
        let batch = tagged_batch(tag, records, value_bytes, 1_000 + tag as i64);
        let sent = batch.to_vec();
        let failures_before = storage.failures();
        match log.append(batch).await {
            Ok(result) => {
                assert_eq!(
                    failures_before, 0,
                    "{at}: append acknowledged after a failure"
                );
                assert_eq!(storage.failures(), 0, "{at}: acknowledged a failed commit");
                assert!(!saw_error, "{at}: append acknowledged after an error");
                ledger.ack(&sent, result.base_offset);
            }
            Err(error) => {
                assert_poisoned(&Err::<(), _>(error), at);
                assert!(
                    storage.failures() > 0,
                    "{at}: append failed without a fault"
                );
                saw_error = true;
                ledger.failed.push(sent);
            }
        }
    }
    match log.close().await {
        Ok(()) => assert!(!saw_error, "{at}: a poisoned log closed cleanly"),
        Err(error) => {
            assert!(
                storage.failures() > 0,
                "{at}: close failed without a fault: {error}"
            );
            saw_error = true;
        }
    }
    assert_eq!(
        saw_error,
        storage.failures() > 0,
        "{at}: an injected failure must surface as an error"
    );
}

/// Truncates mid-batch into a segment a few segments back, so several later ones go.
async fn truncate_step(
    log: &PartitionLog,
    storage: &FaultyStorage,
    ledger: &mut Ledger,
    saw_error: &mut bool,
    at: &str,
) {
    let Some((&base, bytes)) = ledger.acked.iter().rev().nth(8) else {
        return;
    };
    let target = base + (last_offset_of(bytes) - base + 1) / 2;
    match log.truncate_to(target).await {
        Ok(new_end) => {
            assert!(!*saw_error, "{at}: truncation succeeded on a poisoned log");
            assert_eq!(new_end, base, "{at}: truncation cuts the whole batch");
            ledger.truncated(new_end);
        }
        Err(error) => {
            assert!(
                storage.failures() > 0,
                "{at}: truncation failed without a fault: {error}"
            );
            assert!(
                matches!(error, LogError::Io(_) | LogError::Poisoned(_)),
                "{at}: truncation error {error:?}"
            );
            assert!(
                log.poisoned().is_some(),
                "{at}: a failed truncation must poison"
            );
            *saw_error = true;
            ledger.truncation_failed(base);
        }
    }
}

/// DeleteRecords to the middle of a batch a few segments in.
async fn delete_step(
    log: &PartitionLog,
    storage: &FaultyStorage,
    ledger: &mut Ledger,
    saw_error: &mut bool,
    at: &str,
) {
    let Some((&base, _)) = ledger.acked.iter().nth(4) else {
        return;
    };
    let target = base + 1;
    ledger.start_max = ledger.start_max.max(target);
    match log.delete_before(target).await {
        Ok(new_start) => {
            assert_eq!(new_start, target, "{at}: new log start");
            ledger.start_min = ledger.start_min.max(target);
        }
        Err(error) => {
            assert!(
                storage.failures() > 0,
                "{at}: delete failed without a fault: {error}"
            );
            *saw_error = true;
        }
    }
}

/// retention.bytes small enough to delete the oldest segments.
async fn retention_step(
    log: &PartitionLog,
    storage: &FaultyStorage,
    ledger: &mut Ledger,
    saw_error: &mut bool,
    at: &str,
) {
    let mut config = log.config();
    config.retention_bytes = 6_000;
    log.set_config(config).expect("valid config");
    let result = log.apply_retention(0, usize::MAX).await;
    // The new start is a segment base; once the files are gone it cannot go back.
    let new_start = log.log_start_offset();
    ledger.start_max = ledger.start_max.max(new_start);
    match result {
        Ok(_) => ledger.start_min = ledger.start_min.max(new_start),
        Err(error) => {
            assert!(
                storage.failures() > 0,
                "{at}: retention failed without a fault: {error}"
            );
            *saw_error = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d): a failure while opening is an error, never a panic, and leaves the data intact.

#[test]
fn failing_the_first_operation_of_open_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("topic-0");
    run(async move {
        let (storage, context) = faulty_context(1 << 20);
        storage.set_plan(fail_from(FaultKind::Any, 1));
        let result = PartitionLog::open(&path, fault_config(), context.clone()).await;
        assert!(
            matches!(result, Err(LogError::Io(_))),
            "open with a failing first operation gave {:?}",
            result.as_ref().map(|_| ())
        );
        assert_eq!(storage.failures(), 1);
        storage.set_plan(None);
        let log = open_log(&path, &fault_config(), &context).await;
        assert_eq!(log.log_end_offset(), 0);
        log.close().await.expect("close");
    });
}

#[test]
fn failing_any_operation_of_recovery_is_an_error() {
    for clean in [false, true] {
        let pristine = tempfile::tempdir().expect("temp dir");
        let ledger = run(build_log_to_recover(pristine.path().to_path_buf(), clean));
        for fail_at_op in 1..=WORKLOAD_OPS_MAX {
            let copy = tempfile::tempdir().expect("temp dir");
            copy_dir(pristine.path(), copy.path());
            let at = format!("open (clean {clean}) failing op {fail_at_op}");
            let fired = run(open_with_fault(
                copy.path().to_path_buf(),
                fail_at_op,
                &ledger,
                &at,
            ));
            if !fired {
                assert!(fail_at_op > 1, "{at}: recovery does some I/O");
                break;
            }
        }
    }
}

/// A log with acknowledged data over several segments, left as after a crash (preallocated
/// zeros after the last batch, to be cut) or after a clean close.
async fn build_log_to_recover(path: std::path::PathBuf, clean: bool) -> Ledger {
    let context = LogContext::direct(1 << 20);
    let log = open_log(&path, &fault_config(), &context).await;
    let mut ledger = Ledger::default();
    for tag in 0..10 {
        let batch = tagged_batch(tag, 2, 500, 1_000 + tag as i64);
        let sent = batch.to_vec();
        let result = log.append(batch).await.expect("append");
        ledger.ack(&sent, result.base_offset);
    }
    if clean {
        log.close().await.expect("close");
    }
    drop(log);
    ledger
}

/// Opens with operation `fail_at_op` failing; returns whether the fault fired.
async fn open_with_fault(
    path: std::path::PathBuf,
    fail_at_op: u64,
    ledger: &Ledger,
    at: &str,
) -> bool {
    let (storage, context) = faulty_context(1 << 20);
    storage.set_plan(fail_from(FaultKind::Any, fail_at_op));
    let result = PartitionLog::open(&path, fault_config(), context.clone()).await;
    let fired = storage.failures() > 0;
    match result {
        Ok(log) => {
            assert!(!fired, "{at}: open succeeded although an operation failed");
            storage.set_plan(None);
            ledger.verify(&log, at);
            log.close().await.expect("close");
        }
        Err(error) => {
            assert!(fired, "{at}: open failed without a fault: {error}");
            assert!(
                matches!(error, LogError::Io(_)),
                "{at}: open error {error:?}"
            );
            storage.power_loss().expect("power loss");
            let log = open_log(&path, &fault_config(), &context).await;
            ledger.verify(&log, at);
            log.close().await.expect("close");
        }
    }
    fired
}

// ---------------------------------------------------------------------------------------------
// (e): concurrent appends sharing group commits, with a failed sync or write.

#[test]
fn concurrent_appends_are_acknowledged_only_when_durable() {
    // 1 KiB: every batch rolls; 4 KiB: a group spans a roll; 64 KiB: one write, one sync.
    for kind in [FaultKind::Sync, FaultKind::Write] {
        for fail_at_op in 1..=6 {
            for segment_bytes in [1024, 4096, 64 << 10] {
                concurrent_case(kind, fail_at_op, segment_bytes);
            }
        }
    }
}

const CONCURRENT_APPENDS: i64 = 8;
const RECORDS_PER_BATCH: i64 = 3;

fn concurrent_case(kind: FaultKind, fail_at_op: u64, segment_bytes: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("topic-0");
    let at = format!("{kind:?} fault at op {fail_at_op}, segment.bytes {segment_bytes}");
    run(async move {
        let (storage, context) = faulty_context(1 << 20);
        let config = LogConfig {
            segment_bytes,
            ..fault_config()
        };
        let log = open_log(&path, &config, &context).await;
        let mut ledger = Ledger::default();
        for tag in 0..2 {
            let batch = tagged_batch(tag, RECORDS_PER_BATCH as usize, 200, 1_000);
            let sent = batch.to_vec();
            let result = log.append(batch).await.expect("append before the fault");
            ledger.ack(&sent, result.base_offset);
        }
        let start = log.log_end_offset();
        storage.set_plan(fail_from(kind, fail_at_op));
        let tasks: Vec<_> = (0..CONCURRENT_APPENDS)
            .map(|index| {
                let log = log.clone();
                let batch =
                    tagged_batch(100 + index as u64, RECORDS_PER_BATCH as usize, 200, 2_000);
                let sent = batch.to_vec();
                glommio::spawn_local(async move { (sent, log.append(batch).await) })
            })
            .collect();
        let mut acked_bases = Vec::new();
        for task in tasks {
            let (sent, result) = task.await;
            match result {
                Ok(result) => {
                    acked_bases.push(result.base_offset);
                    ledger.ack(&sent, result.base_offset);
                }
                Err(error) => {
                    assert_poisoned(&Err::<(), _>(error), &at);
                    ledger.failed.push(sent);
                }
            }
        }
        let fired = storage.failures() > 0;
        // One group commit may take all eight: then a later sync or write is never reached.
        assert!(
            fired || fail_at_op > 1,
            "{at}: the first sync or write must fail"
        );
        assert_eq!(
            log.poisoned().is_some(),
            fired,
            "{at}: poisoned exactly when a fault fired"
        );
        if !fired {
            assert_eq!(
                acked_bases.len() as i64,
                CONCURRENT_APPENDS,
                "{at}: all acknowledged"
            );
        }
        // Acknowledged appends are a prefix: nothing after a failed one is acknowledged.
        acked_bases.sort_unstable();
        let prefix: Vec<i64> = (0..acked_bases.len() as i64)
            .map(|index| start + index * RECORDS_PER_BATCH)
            .collect();
        assert_eq!(acked_bases, prefix, "{at}: acknowledged offsets");
        assert_eq!(
            log.durable_end_offset(),
            start + acked_bases.len() as i64 * RECORDS_PER_BATCH,
            "{at}: durable end"
        );
        ledger.start_max = log.log_start_offset();
        let log = crash_and_reopen(log, &path, &storage, &context).await;
        ledger.verify(&log, &at);
        append_after_recovery(log, &path, &context, &mut ledger, &at).await;
    });
}
