//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use bytes::BytesMut;
use runnel_engine::batch;
use runnel_engine::fault::FaultyStorage;
use runnel_engine::{CacheBudget, LogConfig, LogContext, PartitionLog, ReadPlan};
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

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

/// Runs `future` on a fresh glommio executor whose blocking pool (what `send_plan` uses) has
/// `threads` unpinned threads, so several plans can be sent at once.
pub fn run_with_blocking_threads<T>(threads: usize, future: impl Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::default()
        .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(threads))
        .make()
        .expect("make executor")
        .run(future)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A connected TCP loopback pair: (the end a plan is sent into, the end a reader drains).
pub fn loopback_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("listener address");
    let sender = std::net::TcpStream::connect(address).expect("connect loopback");
    let (receiver, _) = listener.accept().expect("accept loopback");
    (sender, receiver)
}

/// Spawns a thread that reads `stream` to end of file and returns every byte it read.
pub fn drain_to_end(mut stream: std::net::TcpStream) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut received = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut received).expect("read loopback");
        received
    })
}

/// One plan covering everything from `offset` to the durable end: the chunks of successive
/// reads of at most `max_bytes_per_read` each, concatenated (file ranges and cached batches
/// mixed, as a fetch spanning old and fresh data would see them).
pub fn plan_to_end(log: &PartitionLog, mut offset: i64, max_bytes_per_read: u64) -> ReadPlan {
    let end = log.durable_end_offset();
    let mut combined = ReadPlan {
        durable_end_offset: end,
        log_start_offset: log.log_start_offset(),
        ..ReadPlan::default()
    };
    while offset < end {
        let plan = log.read(offset, max_bytes_per_read).expect("read");
        let batches = split_batches(&plan.to_vec().expect("plan bytes"));
        let (last_base, last_bytes) = batches.last().expect("a non-empty plan below the end");
        let info = batch::scan_batch(last_bytes, 1 << 30).unwrap().unwrap();
        offset = last_base + i64::from(info.last_offset_delta) + 1;
        combined.chunks.extend(plan.chunks);
    }
    combined
}

/// Asserts that `result` is the out-of-range error a client sees as OFFSET_OUT_OF_RANGE (1).
pub fn assert_out_of_range<T: std::fmt::Debug>(result: Result<T, runnel_engine::LogError>) {
    match result {
        Err(error @ runnel_engine::LogError::OffsetOutOfRange { .. }) => {
            assert_eq!(error.kafka_error_code(), 1)
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

/// The file a clean close leaves in the log directory.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

/// Removes the clean-shutdown marker, so the next open recovers as after a crash.
pub fn remove_clean_marker(dir: &std::path::Path) {
    std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_MARKER)).expect("remove the clean marker");
}

/// A small deterministic generator (xorshift64*) for randomized tests. Seeded from
/// `RUNNEL_TEST_SEED` when set, else from the clock; the seed is printed so a failure can be
/// replayed.
pub struct TestRng(u64);

impl TestRng {
    pub fn from_env(test_name: &str) -> Self {
        let seed = std::env::var("RUNNEL_TEST_SEED")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| wall_clock_ms() as u64 ^ u64::from(std::process::id()) << 32);
        eprintln!("{test_name}: RUNNEL_TEST_SEED={seed}");
        Self::new(seed)
    }

    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for byte in bytes {
            *byte = self.next_u64() as u8;
        }
    }
}

/// The `.log` files of a log directory as (base offset, path), oldest first.
pub fn segment_logs(dir: &std::path::Path) -> Vec<(i64, std::path::PathBuf)> {
    let mut logs: Vec<(i64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .expect("list the log directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let base = runnel_engine::segment::SegmentPaths::parse_log_name(name)?;
            Some((base, path))
        })
        .collect();
    logs.sort();
    logs
}

/// One batch found in a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBatch {
    /// Byte position in the segment file.
    pub position: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The whole batch.
    pub bytes: Vec<u8>,
}

/// The valid batches at the start of a segment file, in order (stops at the first torn or
/// invalid one: zeros after the data end the list).
pub fn file_batches(path: &std::path::Path) -> Vec<FileBatch> {
    let data = std::fs::read(path).expect("read a segment file");
    let mut out = Vec::new();
    let mut position = 0usize;
    while let Ok(Some(info)) = batch::scan_batch(&data[position..], 1 << 30) {
        let bytes = data[position..position + info.total_len].to_vec();
        let base_offset = batch::read_base_offset(&bytes);
        out.push(FileBatch {
            position: position as u64,
            base_offset,
            last_offset: base_offset + i64::from(info.last_offset_delta),
            bytes,
        });
        position += info.total_len;
    }
    out
}

/// Copies every regular file of `from` into `to` (created if absent): a pristine log to corrupt.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("list the source directory") {
        let entry = entry.expect("directory entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
        }
    }
}

/// The value of the first record of an uncompressed batch (records start after the header).
pub fn first_record_value(batch_bytes: &[u8]) -> Vec<u8> {
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
    let mut cursor = batch::BATCH_HEADER_LEN;
    let _record_length = varint(batch_bytes, &mut cursor);
    cursor += 1; // attributes
    let _timestamp_delta = varint(batch_bytes, &mut cursor);
    let _offset_delta = varint(batch_bytes, &mut cursor);
    let key_length = varint(batch_bytes, &mut cursor);
    cursor += usize::try_from(key_length.max(0)).expect("key length");
    let value_length = usize::try_from(varint(batch_bytes, &mut cursor)).expect("non-null value");
    batch_bytes[cursor..cursor + value_length].to_vec()
}

/// The tag a batch built by [`tagged_batch`] carries.
pub fn batch_tag(batch_bytes: &[u8]) -> u64 {
    let value = first_record_value(batch_bytes);
    let text = std::str::from_utf8(&value).expect("tagged value is text");
    let (tag, _) = text.split_once(':').expect("tag:index: value");
    tag.parse().expect("numeric tag")
}

/// Helpers for model-style tests, on top of the generator above.
impl TestRng {
    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.below((high - low) as u64 + 1) as i64
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u64) as usize]
    }
}

/// A context whose storage is a fresh [`FaultyStorage`], returned alongside so the test can
/// inject faults and simulate power loss. Clones of the storage share its state.
pub fn faulty_context(cache_bytes: u64) -> (FaultyStorage, LogContext) {
    let storage = FaultyStorage::new();
    let context = LogContext {
        storage: Rc::new(storage.clone()),
        cache: CacheBudget::new(cache_bytes),
    };
    (storage, context)
}

/// The offset of the last record of a whole stored batch.
pub fn last_offset_of(batch_bytes: &[u8]) -> i64 {
    let info = batch::scan_batch(batch_bytes, 1 << 30)
        .expect("valid batch")
        .expect("whole batch");
    batch::read_base_offset(batch_bytes) + i64::from(info.last_offset_delta)
}

/// Opens the log at `path`, panicking with the error if it cannot.
pub async fn open_log(path: &Path, config: &LogConfig, context: &LogContext) -> PartitionLog {
    PartitionLog::open(path, config.clone(), context.clone())
        .await
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

/// The bytes the log stores for `batch` appended at `base_offset` (CreateTime: only the base
/// offset changes; it lies outside the CRC).
pub fn stamped(batch: &[u8], base_offset: i64) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    batch::stamp_base_offset(&mut bytes, base_offset);
    bytes
}

/// Like [`read_all`], but says what went wrong instead of panicking, so the caller can add its
/// own context (which fault, which step).
pub fn try_read_all(log: &PartitionLog, mut offset: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let end = log.durable_end_offset();
    while offset < end {
        let plan = log
            .read(offset, 256 * 1024)
            .map_err(|error| format!("read at {offset}: {error}"))?;
        let bytes = plan
            .to_vec()
            .map_err(|error| format!("plan bytes at {offset}: {error}"))?;
        let batches = split_batches(&bytes);
        if batches.is_empty() {
            return Err(format!(
                "empty plan at {offset} below the durable end {end}"
            ));
        }
        for (base, bytes) in batches {
            offset = last_offset_of(&bytes) + 1;
            out.push((base, bytes));
        }
    }
    Ok(out)
}
