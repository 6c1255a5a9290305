//! Crash under load: a child process appends from several tasks with every commit synced and
//! prints each acknowledged batch, while another task writes recovery checkpoints every few ms;
//! the parent kills it with SIGKILL at a random moment, recovers the log in-process and runs the
//! standard check, then restarts the child on the same directory.
//!
//! The child is this test binary run again with `--exact child_appender --ignored`: the ignored
//! test `child_appender` does nothing unless `RUNNEL_CRASH_DIR` is set. It prints two kinds of
//! lines on stdout (libtest's own `running 1 test` line, all `--quiet` leaves, is ignored):
//! - `start <offset>`: the log end it recovered, before its first append;
//! - `ack <base_offset> <last_offset> <tag>`: one acknowledged batch, printed after `append`
//!   returned. The batch's bytes are a pure function of its tag ([`batch_for_tag`]), so the parent
//!   can rebuild exactly what must be stored there.
mod common;

use bytes::BytesMut;
use common::*;
use runnel_engine::{FlushPolicy, LogConfig, PartitionLog, RecoveryMode};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CRASH_DIR_ENV: &str = "RUNNEL_CRASH_DIR";
const CRASH_CYCLE_ENV: &str = "RUNNEL_CRASH_CYCLE";
/// Kill-and-recover cycles in one test run, unless the time budget runs out first.
const KILL_CYCLES: u64 = 25;
/// Cycles that must complete even on a slow machine.
const KILL_CYCLES_MIN: u64 = 10;
/// The whole test stops starting new cycles after this.
const TEST_TIME_MAX: Duration = Duration::from_secs(45);
/// How long the parent lets the child append after its `start` line.
const KILL_AFTER_MS_MIN: u64 = 50;
const KILL_AFTER_MS_MAX: u64 = 400;
/// How long a child may take to open the log and print `start`.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent appending tasks in the child.
const CHILD_TASKS: u64 = 4;
/// A child that is never killed stops by itself after this long or this many batches per task.
const CHILD_RUN_TIME_MAX: Duration = Duration::from_secs(30);
const CHILD_BATCHES_PER_TASK_MAX: u64 = 1 << 20;
/// Small segments, so rolls happen during the run (and crashes land around them).
const SEGMENT_BYTES: u64 = 256 * 1024;
/// How often the child writes a recovery checkpoint (so kills land around those too).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(7);

fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        index_interval_bytes: 4096,
        preallocate_bytes: 64 * 1024,
        flush: FlushPolicy::EveryCommit,
        ..LogConfig::default()
    }
}

/// A unique tag per batch the child ever builds.
fn tag_for(cycle: u64, task: u64, sequence: u64) -> u64 {
    assert!(task < 256 && sequence < 1 << 32);
    cycle << 40 | task << 32 | sequence
}

/// The batch a child builds for `tag`: its shape (records, value size, timestamp) is derived from
/// the tag, so the parent rebuilds the exact bytes.
fn batch_for_tag(tag: u64) -> BytesMut {
    let records = 1 + (tag % 5) as usize;
    let value_bytes = 16 + (tag.wrapping_mul(7919) % 1500) as usize;
    let timestamp_ms = 1_700_000_000_000 + (tag % 1_000_000) as i64;
    tagged_batch(tag, records, value_bytes, timestamp_ms)
}

/// One acknowledged batch as the child reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    base_offset: i64,
    last_offset: i64,
    tag: u64,
}

// ---------------------------------------------------------------------------------------------
// The child.

#[test]
#[ignore = "child process of kill9_under_load_recovers_every_acknowledged_batch"]
fn child_appender() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return; // run by hand with --ignored: nothing to do
    };
    let cycle: u64 = std::env::var(CRASH_CYCLE_ENV)
        .expect("the parent sets the cycle")
        .parse()
        .expect("numeric cycle");
    run(child_loop(PathBuf::from(dir), cycle));
}

async fn child_loop(dir: PathBuf, cycle: u64) {
    let log = PartitionLog::open(&dir, crash_config(), context())
        .await
        .expect("child: open the log");
    print_line(&format!("start {}\n", log.log_end_offset()));
    let deadline = Instant::now() + CHILD_RUN_TIME_MAX;
    let checkpointer = log.clone();
    glommio::spawn_local(async move {
        while Instant::now() < deadline {
            glommio::timer::sleep(CHECKPOINT_INTERVAL).await;
            checkpointer.checkpoint().await.expect("child: checkpoint");
        }
    })
    .detach();
    let tasks: Vec<_> = (0..CHILD_TASKS)
        .map(|task| {
            let log = log.clone();
            glommio::spawn_local(async move {
                for sequence in 0..CHILD_BATCHES_PER_TASK_MAX {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let tag = tag_for(cycle, task, sequence);
                    let result = log.append(batch_for_tag(tag)).await.expect("child: append");
                    print_line(&format!(
                        "ack {} {} {tag}\n",
                        result.base_offset, result.last_offset
                    ));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    log.close().await.expect("child: close");
}

/// Writes one whole line with one `write` (shorter than PIPE_BUF, so never interleaved or torn
/// by the kill) and flushes it.
fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0); // the parent is gone
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

#[test]
fn kill9_under_load_recovers_every_acknowledged_batch() {
    let started = Instant::now();
    let mut rng = TestRng::from_env("kill9_under_load");
    let root = tempfile::tempdir().unwrap();
    let log_dir = root.path().join("topic-0");
    let mut acked: BTreeMap<i64, Ack> = BTreeMap::new();
    let mut recovered_end = 0i64;
    let mut cycles = 0u64;
    let mut recover_ms_max = 0u128;
    let mut checkpoint_recoveries = 0u64;
    while cycles < KILL_CYCLES && started.elapsed() < TEST_TIME_MAX {
        let kill_after_ms =
            KILL_AFTER_MS_MIN + rng.below(KILL_AFTER_MS_MAX - KILL_AFTER_MS_MIN + 1);
        let child = run_child_until_killed(&log_dir, cycles, Duration::from_millis(kill_after_ms));
        assert_eq!(
            child.start_offset, recovered_end,
            "cycle {cycles}: the child must continue at the recovered end"
        );
        for ack in &child.acks {
            assert!(
                ack.base_offset >= child.start_offset && ack.last_offset >= ack.base_offset,
                "cycle {cycles}: ack {ack:?} below the child's start {}",
                child.start_offset
            );
            let previous = acked.insert(ack.base_offset, *ack);
            assert!(
                previous.is_none(),
                "offset {} acknowledged twice: {previous:?} and {ack:?}",
                ack.base_offset
            );
        }
        // Alternate: a clean close (the next child trusts the indexes) or a drop (it scans).
        let close_cleanly = cycles.is_multiple_of(2);
        let recover_started = Instant::now();
        let mode;
        (recovered_end, mode) = run(recover_and_check(&log_dir, &acked, close_cleanly));
        checkpoint_recoveries += u64::from(mode == RecoveryMode::Checkpoint);
        recover_ms_max = recover_ms_max.max(recover_started.elapsed().as_millis());
        eprintln!(
            "cycle {cycles}: killed after {kill_after_ms} ms, {} acks (total {}), recovered end {recovered_end}",
            child.acks.len(),
            acked.len()
        );
        cycles += 1;
    }
    assert!(
        cycles >= KILL_CYCLES_MIN,
        "only {cycles} kill cycles fit in {TEST_TIME_MAX:?}"
    );
    assert!(
        acked.len() as u64 >= cycles,
        "too few acknowledged batches ({}) for {cycles} cycles: the child barely ran",
        acked.len()
    );
    let segments = segment_logs(&log_dir).len();
    assert!(segments > 1, "the run must have rolled segments");
    assert!(
        checkpoint_recoveries > 0,
        "no recovery used a checkpoint in {cycles} cycles"
    );
    eprintln!(
        "{cycles} kill cycles ({checkpoint_recoveries} recovered from a checkpoint), {} \
         acknowledged batches, log end {recovered_end}, {segments} segments, slowest \
         recovery+check {recover_ms_max} ms, {:?} total",
        acked.len(),
        started.elapsed()
    );
}

/// What one child run reported before it was killed.
struct ChildRun {
    start_offset: i64,
    acks: Vec<Ack>,
}

/// Starts a child appending into `log_dir`, lets it run `kill_after` past its `start` line, kills
/// it with SIGKILL and returns every line it printed (including those still in the pipe).
fn run_child_until_killed(log_dir: &Path, cycle: u64, kill_after: Duration) -> ChildRun {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "child_appender",
            "--nocapture",
            "--quiet",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, log_dir)
        .env(CRASH_CYCLE_ENV, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (line_sender, lines) = mpsc::channel::<String>();
    let stdout_reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                // A line without its newline was cut by the kill mid-print: not reported.
                Ok(_) if line.last() != Some(&b'\n') => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    if line_sender.send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let start_deadline = Instant::now() + CHILD_START_TIMEOUT;
    let start_offset = loop {
        let remaining = start_deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(offset) = line.strip_prefix("start ") {
                    break offset.parse::<i64>().expect("numeric start offset");
                }
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr_reader.join().unwrap_or_default();
                panic!("cycle {cycle}: no start line from the child ({error}); stderr:\n{stderr}");
            }
        }
    };
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    stdout_reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().unwrap_or_default();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "cycle {cycle}: the child ended before the kill ({status}); stderr:\n{stderr}"
    );
    let acks = lines
        .try_iter()
        .filter_map(|line| line.strip_prefix("ack ").map(parse_ack))
        .collect();
    ChildRun { start_offset, acks }
}

fn parse_ack(fields: &str) -> Ack {
    let numbers: Vec<&str> = fields.split(' ').collect();
    assert_eq!(numbers.len(), 3, "malformed ack line {fields:?}");
    Ack {
        base_offset: numbers[0].parse().expect("ack base offset"),
        last_offset: numbers[1].parse().expect("ack last offset"),
        tag: numbers[2].parse().expect("ack tag"),
    }
}

/// Opens the log after the crash and runs the standard check: offsets contiguous from 0, every
/// stored batch exactly one the child built (valid CRC, right shape) and stored once, every
/// acknowledged batch at its acknowledged offset, nothing acknowledged missing. Returns the
/// recovered end and how the newest segment was recovered, after closing the log cleanly or
/// dropping it as if crashed again.
async fn recover_and_check(
    log_dir: &Path,
    acked: &BTreeMap<i64, Ack>,
    close_cleanly: bool,
) -> (i64, RecoveryMode) {
    let log = PartitionLog::open(log_dir, crash_config(), context())
        .await
        .expect("recover after SIGKILL");
    let end = log.log_end_offset();
    assert_eq!(log.durable_end_offset(), end, "recovered data is durable");
    let stored = stored_batches_by_offset(&log);
    let stored_end = stored
        .values()
        .next_back()
        .map_or(0, |(last_offset, _)| last_offset + 1);
    assert_eq!(stored_end, end, "the log end is the end of the last batch");
    for ack in acked.values() {
        let Some(&(last_offset, tag)) = stored.get(&ack.base_offset) else {
            panic!("acknowledged batch {ack:?} is not at its offset after recovery (end {end})");
        };
        assert_eq!(
            (last_offset, tag),
            (ack.last_offset, ack.tag),
            "offset {} holds another batch than the acknowledged one",
            ack.base_offset
        );
    }
    if let Some(last_acked) = acked.values().map(|ack| ack.last_offset).max() {
        assert!(
            end > last_acked,
            "end {end} below acknowledged {last_acked}"
        );
    }
    let mode = log.recovery_stats().mode;
    if close_cleanly {
        log.close().await.expect("clean close after recovery");
    } else {
        drop(log);
    }
    (end, mode)
}

/// Reads the whole log (every CRC checked by `split_batches`) and checks each batch is exactly
/// the one its tag describes, offsets contiguous from 0, no tag twice. Returns
/// base offset -> (last offset, tag).
fn stored_batches_by_offset(log: &PartitionLog) -> BTreeMap<i64, (i64, u64)> {
    let mut stored = BTreeMap::new();
    let mut tags = HashSet::new();
    let mut next_offset = 0i64;
    for (base_offset, bytes) in read_all(log, 0) {
        assert_eq!(base_offset, next_offset, "gap or overlap at {base_offset}");
        let tag = batch_tag(&bytes);
        assert!(
            tags.insert(tag),
            "tag {tag} stored twice (again at {base_offset})"
        );
        let expected = stamped(&batch_for_tag(tag), base_offset);
        assert!(
            bytes == expected,
            "batch at {base_offset} (tag {tag}) is not the batch the child built"
        );
        let info = runnel_engine::batch::scan_batch(&bytes, 1 << 30)
            .expect("valid batch")
            .expect("whole batch");
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        stored.insert(base_offset, (last_offset, tag));
        next_offset = last_offset + 1;
    }
    stored
}
