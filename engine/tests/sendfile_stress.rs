//! Read plans executed into real sockets: file ranges through `sendfile`, cached batches through
//! `write`, over blocking and non-blocking loopback sockets; then a stress run in which appenders
//! write with direct I/O while tailing readers `sendfile` the fresh bytes from buffered
//! descriptors, checking every batch (DESIGN.md §7: direct writes and buffered reads must stay
//! coherent as long as readers stop at the durable position).
mod common;

use common::*;
use runnel_engine::{batch, send_plan, send_plan_blocking, FlushPolicy};
use runnel_engine::{LogConfig, LogContext, PartitionLog, ReadChunk, ReadPlan};
use std::cell::Cell;
use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Producer timestamps are `TIMESTAMP_BASE_MS + tag`, so a reader can tell which batch it got.
const TIMESTAMP_BASE_MS: i64 = 1_700_000_000_000;

/// (records, value bytes) of the batch with `tag`: a deterministic mix of tiny batches (writes
/// end mid-block), medium ones and batches of 4 KiB to ~130 KiB (writes span blocks).
fn batch_shape(tag: u64) -> (usize, usize) {
    let hash = splitmix64(tag);
    let pick = hash >> 40;
    match hash % 20 {
        0..=7 => (1, 1 + (pick % 64) as usize),
        8..=14 => (1 + (pick % 4) as usize, 200 + (pick % 1800) as usize),
        _ => (2 + (pick % 7) as usize, 2000 + (pick % 14_000) as usize),
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The unstamped batch with `tag`, as its appender built it.
fn batch_for_tag(tag: u64) -> bytes::BytesMut {
    let (records, value_bytes) = batch_shape(tag);
    tagged_batch(tag, records, value_bytes, TIMESTAMP_BASE_MS + tag as i64)
}

/// Appends `count` batches (tags `first_tag..`) and returns their bytes as stored, in order.
async fn append_batches(log: &PartitionLog, first_tag: u64, count: u64) -> Vec<u8> {
    let mut expected = Vec::new();
    for tag in first_tag..first_tag + count {
        let batch = batch_for_tag(tag);
        let result = log.append(batch.clone()).await.expect("append");
        expected.extend_from_slice(&stamped(&batch, result.base_offset));
    }
    expected
}

fn count_chunks(plan: &ReadPlan) -> (usize, usize) {
    let files = plan
        .chunks
        .iter()
        .filter(|chunk| matches!(chunk, ReadChunk::File(_)))
        .count();
    (files, plan.chunks.len() - files)
}

/// A log of several small segments whose newest batches sit in a small tail cache, and a plan
/// over all of it mixing file ranges (from several segment files) and memory chunks.
fn mixed_plan(first_tag: u64) -> (ReadPlan, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed-0");
    run(async move {
        let log = PartitionLog::open(&path, small_config(), LogContext::direct(48 * 1024))
            .await
            .unwrap();
        let expected = append_batches(&log, first_tag, 120).await;
        assert!(log.segment_count() >= 3, "small segments must roll");
        let plan = plan_to_end(&log, 0, 16 * 1024);
        let (files, memories) = count_chunks(&plan);
        assert!(
            files >= 3 && memories >= 1,
            "{files} file, {memories} memory"
        );
        let distinct_files: std::collections::HashSet<i32> = plan
            .chunks
            .iter()
            .filter_map(|chunk| match chunk {
                ReadChunk::File(range) => Some(range.file.as_raw_fd()),
                ReadChunk::Memory(_) => None,
            })
            .collect();
        assert!(distinct_files.len() >= 2, "plan must span segment files");
        assert_eq!(plan.len_bytes(), expected.len() as u64);
        // Closing the log (and deleting its directory below) must not disturb the plan's leases.
        log.close().await.unwrap();
        (plan, expected)
    })
}

#[test]
fn mixed_plan_arrives_intact_through_a_blocking_socket() {
    let (plan, expected) = mixed_plan(0);
    let (sender, receiver) = loopback_pair();
    let reader = drain_to_end(receiver);
    let sent = send_plan_blocking(&plan, sender.as_raw_fd()).unwrap();
    drop(sender);
    let received = reader.join().unwrap();
    assert_eq!(sent, plan.len_bytes());
    assert_eq!(received, plan.to_vec().unwrap());
    assert_eq!(received, expected);
    let batches = split_batches(&received);
    assert_eq!(batches.len(), 120);
    assert_eq!(batches[0].0, 0);
}

fn set_buffer_bytes(socket: &TcpStream, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: a valid socket and a pointer to a local int of the size passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

#[test]
fn non_blocking_socket_with_a_slow_reader_waits_out_eagain() {
    let (plan, expected) = mixed_plan(1000);
    let (sender, receiver) = loopback_pair();
    // Small fixed buffers (no autotuning). Not tiny: with 4 KiB windows loopback TCP crawls
    // (~50 KB/s, measured with plain send(2) as well), which tests the kernel, not the engine.
    set_buffer_bytes(&sender, libc::SO_SNDBUF, 64 * 1024);
    set_buffer_bytes(&receiver, libc::SO_RCVBUF, 64 * 1024);
    sender.set_nonblocking(true).unwrap();
    // SAFETY: F_GETFL on an open descriptor.
    let flags = unsafe { libc::fcntl(sender.as_raw_fd(), libc::F_GETFL) };
    assert_ne!(flags & libc::O_NONBLOCK, 0);
    // The kernel doubles both buffers: at most ~256 KiB can be in flight.
    assert!(
        plan.len_bytes() > 1 << 20,
        "the plan must overflow the socket buffers several times"
    );
    let reader_start_delay = Duration::from_millis(150);
    let reader = std::thread::spawn(move || {
        let mut receiver = receiver;
        std::thread::sleep(reader_start_delay);
        let mut received = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let read = receiver.read(&mut buffer).expect("read loopback");
            if read == 0 {
                return received;
            }
            received.extend_from_slice(&buffer[..read]);
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let started = Instant::now();
    let sent = send_plan_blocking(&plan, sender.as_raw_fd()).unwrap();
    let elapsed = started.elapsed();
    drop(sender);
    let received = reader.join().unwrap();
    assert_eq!(sent, plan.len_bytes());
    // It could only finish after the reader started draining: the socket said EAGAIN meanwhile.
    assert!(elapsed >= reader_start_delay, "sent in {elapsed:?}");
    assert_eq!(received, plan.to_vec().unwrap());
    assert_eq!(received, expected);
}

#[test]
fn send_plan_from_glommio_into_a_glommio_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("glommio-0");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        drain_to_end(stream).join().unwrap()
    });
    let (plan, expected) = run_with_blocking_threads(2, async move {
        let log = PartitionLog::open(&path, small_config(), LogContext::direct(48 * 1024))
            .await
            .unwrap();
        let expected = append_batches(&log, 5000, 80).await;
        let plan = plan_to_end(&log, 0, 32 * 1024);
        let (files, memories) = count_chunks(&plan);
        assert!(
            files >= 1 && memories >= 1,
            "{files} file, {memories} memory"
        );
        let mut stream = glommio::net::TcpStream::connect(address).await.unwrap();
        let sent = send_plan(plan.clone(), stream.as_raw_fd()).await.unwrap();
        assert_eq!(sent, plan.len_bytes());
        futures_lite::AsyncWriteExt::close(&mut stream)
            .await
            .unwrap();
        log.close().await.unwrap();
        (plan, expected)
    });
    let received = reader.join().unwrap();
    assert_eq!(received, plan.to_vec().unwrap());
    assert_eq!(received, expected);
}

// ---------------------------------------------------------------------------------------------
// The stress run.

struct StressShape {
    appenders: u64,
    batches_per_appender: u64,
    segment_bytes: u64,
    cache_bytes: u64,
    /// (max bytes per read, non-blocking socket, start delay) of each tailing reader.
    readers: Vec<(u64, bool, Duration)>,
}

fn stress_shape() -> StressShape {
    // About 16 MB appended in debug builds and 64 MB in release (the mean batch is ~12 KB).
    let batches_per_appender = if cfg!(debug_assertions) { 340 } else { 1350 };
    StressShape {
        appenders: 4,
        batches_per_appender,
        segment_bytes: if cfg!(debug_assertions) {
            256 * 1024
        } else {
            1 << 20
        },
        cache_bytes: 48 * 1024,
        readers: vec![
            (16 * 1024, false, Duration::ZERO),
            (256 * 1024, true, Duration::ZERO),
            (1 << 20, false, Duration::from_millis(50)),
        ],
    }
}

/// What a drain thread has verified so far, shared with its reader task.
#[derive(Default)]
struct DrainProgress {
    consumed_bytes: AtomicU64,
    next_offset: AtomicI64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

/// Reads a socket to its end, checking each batch: valid CRC, base offset contiguous with the one
/// before, bytes equal to the batch its tag names stamped with that base offset. Returns the
/// (base offset, tag) of every batch, in order.
fn drain_and_verify(
    mut stream: TcpStream,
    progress: &DrainProgress,
) -> Result<Vec<(i64, u64)>, String> {
    let mut seen = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut next_offset = 0i64;
    loop {
        let read = stream
            .read(&mut buffer)
            .map_err(|error| format!("socket read: {error}"))?;
        if read == 0 {
            return match pending.is_empty() {
                true => Ok(seen),
                false => Err(format!(
                    "{} bytes of a torn batch at the end",
                    pending.len()
                )),
            };
        }
        pending.extend_from_slice(&buffer[..read]);
        let mut position = 0;
        while let Some(info) = batch::scan_batch(&pending[position..], 1 << 24)
            .map_err(|error| format!("batch at offset {next_offset}: {error}"))?
        {
            let bytes = &pending[position..position + info.total_len];
            let base_offset = batch::read_base_offset(bytes);
            if base_offset != next_offset {
                return Err(format!("base offset {base_offset}, expected {next_offset}"));
            }
            let tag = u64::try_from(info.base_timestamp - TIMESTAMP_BASE_MS)
                .map_err(|_| format!("batch at {base_offset} has a foreign timestamp"))?;
            if bytes != stamped(&batch_for_tag(tag), base_offset).as_slice() {
                return Err(format!("batch at {base_offset} differs from tag {tag}"));
            }
            seen.push((base_offset, tag));
            next_offset = base_offset + i64::from(info.last_offset_delta) + 1;
            position += info.total_len;
        }
        pending.drain(..position);
        progress.next_offset.store(next_offset, Ordering::Release);
        progress
            .consumed_bytes
            .fetch_add(position as u64, Ordering::AcqRel);
    }
}

#[derive(Default, Debug)]
struct ReaderStats {
    plans: u64,
    file_chunks: u64,
    memory_chunks: u64,
    /// File ranges that reached the durable end: the block the writer rewrites next was just read
    /// through the page cache.
    file_reads_at_tail: u64,
    sent_bytes: u64,
}

/// Waits (bounded) until the drain thread has verified `sent_bytes`; returns the next offset.
async fn wait_for_drain(progress: &DrainProgress, sent_bytes: u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if progress.failed.load(Ordering::Acquire) {
            panic!(
                "reader check failed: {:?}",
                progress.failure.lock().unwrap()
            );
        }
        if progress.consumed_bytes.load(Ordering::Acquire) >= sent_bytes {
            return progress.next_offset.load(Ordering::Acquire);
        }
        assert!(Instant::now() < deadline, "drain thread stuck");
        glommio::timer::sleep(Duration::from_micros(200)).await;
    }
}

/// Tails the log from offset 0 until `final_end` is known and reached, sending every plan through
/// `send_plan` into `socket`.
async fn tail_reader(
    log: PartitionLog,
    socket: TcpStream,
    progress: Arc<DrainProgress>,
    max_bytes: u64,
    final_end: Rc<Cell<Option<i64>>>,
) -> ReaderStats {
    let mut stats = ReaderStats::default();
    let mut position = 0i64;
    loop {
        if final_end.get().is_some_and(|end| position >= end) {
            return stats;
        }
        if position >= log.durable_end_offset() {
            let wait = log.wait_for_data(position);
            let tick = glommio::timer::sleep(Duration::from_millis(10));
            futures_lite::future::or(wait, tick).await;
            continue;
        }
        let plan = log.read(position, max_bytes).expect("read");
        assert!(!plan.is_empty(), "empty plan at {position}");
        let (files, memories) = count_chunks(&plan);
        let durable_end = plan.durable_end_offset;
        stats.plans += 1;
        stats.file_chunks += files as u64;
        stats.memory_chunks += memories as u64;
        stats.sent_bytes += send_plan(plan, socket.as_raw_fd()).await.expect("send");
        position = wait_for_drain(&progress, stats.sent_bytes).await;
        if files > 0 && position == durable_end {
            stats.file_reads_at_tail += 1;
        }
    }
}

/// Appends this appender's batches one after another; returns (tag, base, last) of each.
async fn appender(log: PartitionLog, id: u64, shape: Rc<StressShape>) -> Vec<(u64, i64, i64)> {
    let mut results = Vec::new();
    for sequence in 0..shape.batches_per_appender {
        let tag = sequence * shape.appenders + id;
        let (records, _) = batch_shape(tag);
        let result = log.append(batch_for_tag(tag)).await.expect("append");
        assert_eq!(result.last_offset - result.base_offset + 1, records as i64);
        results.push((tag, result.base_offset, result.last_offset));
    }
    results
}

/// A loopback connection whose far end a thread drains with [`drain_and_verify`]: returns the
/// near end, the progress the thread publishes, and the thread.
fn spawn_drain() -> (TcpStream, Arc<DrainProgress>, DrainThread) {
    let (sender, receiver) = loopback_pair();
    let progress = Arc::new(DrainProgress::default());
    let thread_progress = progress.clone();
    let thread = std::thread::spawn(move || {
        let result = drain_and_verify(receiver, &thread_progress);
        if let Err(reason) = &result {
            *thread_progress.failure.lock().unwrap() = Some(reason.clone());
            thread_progress.failed.store(true, Ordering::Release);
        }
        result
    });
    (sender, progress, thread)
}

type DrainThread = std::thread::JoinHandle<Result<Vec<(i64, u64)>, String>>;

/// What the executor part of the stress run hands back.
struct StressRun {
    /// (tag, base offset, last offset) of every appended batch, in offset order.
    appended: Vec<(u64, i64, i64)>,
    readers: Vec<ReaderStats>,
    segments: usize,
}

/// Appenders and tailing readers on one executor; `reader_ends` are the readers' sockets.
async fn stress_log(
    path: std::path::PathBuf,
    shape: Rc<StressShape>,
    reader_ends: Vec<(TcpStream, Arc<DrainProgress>)>,
) -> StressRun {
    let config = LogConfig {
        segment_bytes: shape.segment_bytes,
        index_interval_bytes: 4096,
        preallocate_bytes: 256 * 1024,
        flush: FlushPolicy::EveryCommit,
        ..LogConfig::default()
    };
    let context = LogContext::direct(shape.cache_bytes);
    let log = PartitionLog::open(&path, config, context).await.unwrap();
    let final_end = Rc::new(Cell::new(None));
    let mut readers = Vec::new();
    for (&(max_bytes, non_blocking, delay), (socket, progress)) in
        shape.readers.iter().zip(reader_ends)
    {
        socket.set_nonblocking(non_blocking).unwrap();
        let (log, final_end) = (log.clone(), final_end.clone());
        readers.push(glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            // The socket is dropped when the reader ends: its drain thread then sees the end.
            tail_reader(log, socket, progress, max_bytes, final_end).await
        }));
    }
    let appenders: Vec<_> = (0..shape.appenders)
        .map(|id| glommio::spawn_local(appender(log.clone(), id, shape.clone())))
        .collect();
    let mut appended = Vec::new();
    for task in appenders {
        appended.extend(task.await);
    }
    final_end.set(Some(log.log_end_offset()));
    let mut stats = Vec::new();
    for task in readers {
        stats.push(task.await);
    }
    assert_eq!(log.durable_end_offset(), log.log_end_offset());
    // The pread path agrees with what was appended too.
    let all = read_all(&log, 0);
    appended.sort_by_key(|(_, base, _)| *base);
    assert_eq!(all.len(), appended.len());
    for ((base, bytes), (tag, expected_base, _)) in all.iter().zip(&appended) {
        assert_eq!(base, expected_base);
        assert_eq!(*bytes, stamped(&batch_for_tag(*tag), *base));
    }
    let segments = log.segment_count();
    log.close().await.unwrap();
    StressRun {
        appended,
        readers: stats,
        segments,
    }
}

#[test]
fn concurrent_appenders_and_sendfile_tailers_stay_coherent() {
    let started = Instant::now();
    let shape = Rc::new(stress_shape());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stress-0");
    let (reader_ends, drains): (Vec<_>, Vec<_>) = shape
        .readers
        .iter()
        .map(|_| {
            let (sender, progress, thread) = spawn_drain();
            ((sender, progress), thread)
        })
        .unzip();
    let readers_count = shape.readers.len();
    let StressRun {
        appended,
        readers: stats,
        segments,
    } = run_with_blocking_threads(readers_count + 1, stress_log(path, shape, reader_ends));
    // Offsets are contiguous across the appenders' batches.
    let mut next = 0;
    for (_, base, last) in &appended {
        assert_eq!(*base, next);
        next = last + 1;
    }
    let expected: Vec<(i64, u64)> = appended
        .iter()
        .map(|(tag, base, _)| (*base, *tag))
        .collect();
    for drain in drains {
        assert_eq!(drain.join().unwrap().expect("reader checks"), expected);
    }
    let appended_bytes: u64 = expected
        .iter()
        .map(|(_, tag)| batch_for_tag(*tag).len() as u64)
        .sum();
    let sent_bytes: u64 = stats.iter().map(|reader| reader.sent_bytes).sum();
    assert_eq!(sent_bytes, appended_bytes * readers_count as u64);
    let file_chunks: u64 = stats.iter().map(|reader| reader.file_chunks).sum();
    let memory_chunks: u64 = stats.iter().map(|reader| reader.memory_chunks).sum();
    let tail_file_reads: u64 = stats.iter().map(|reader| reader.file_reads_at_tail).sum();
    assert!(segments >= 8, "only {segments} segments: rolls must happen");
    assert!(file_chunks >= 100 && memory_chunks >= 100, "{stats:?}");
    assert!(tail_file_reads >= 10, "{stats:?}");
    println!(
        "stress: {} batches, {appended_bytes} bytes appended, {sent_bytes} bytes sent to {readers_count} \
         readers, {segments} segments, {file_chunks} file / {memory_chunks} memory chunks, \
         {tail_file_reads} file reads at the tail, {:?}",
        expected.len(),
        started.elapsed()
    );
    for reader in &stats {
        println!("  {reader:?}");
    }
}
