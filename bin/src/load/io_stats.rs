//! A [`Storage`] wrapper that counts direct writes, their bytes, `fdatasync`s and the time each
//! takes, so the load
//! generator can report the average group-commit size and the device bytes per logical byte
//! without the engine exposing counters.
//!
//! Shard-local (`Rc`, `Cell`): each shard wraps its own storage and reads its own counters.

use glommio::io::DmaBuffer;
use runnel_engine::io::{DirectStorage, IoFuture, Storage, WriteFile};
use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

/// Counters of one shard's storage.
#[derive(Debug, Default)]
pub struct IoCounters {
    writes: Cell<u64>,
    write_bytes: Cell<u64>,
    syncs: Cell<u64>,
    /// Time from submitting a write (or sync) to its completion being seen by the shard.
    write_busy_ns: Cell<u64>,
    sync_busy_ns: Cell<u64>,
    /// Time with no write or sync of this shard in flight, between one completing and the next
    /// being submitted: what the engine (and this load generator) add between commits.
    idle_ns: Cell<u64>,
    in_flight: Cell<u32>,
    idle_since: Cell<Option<Instant>>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    /// Direct writes issued.
    pub writes: u64,
    /// Bytes those writes covered (block-aligned: includes the rewritten tail block and padding).
    pub write_bytes: u64,
    /// `fdatasync`s issued.
    pub syncs: u64,
    /// Summed write and sync latencies (the engine has one of them in flight per log).
    pub write_busy_ns: u64,
    pub sync_busy_ns: u64,
    /// Summed time between an I/O completing and the next being submitted, with none in flight.
    pub idle_ns: u64,
}

impl IoSnapshot {
    /// Counts from `earlier` to `self`.
    pub fn since(&self, earlier: &IoSnapshot) -> IoSnapshot {
        IoSnapshot {
            writes: self.writes - earlier.writes,
            write_bytes: self.write_bytes - earlier.write_bytes,
            syncs: self.syncs - earlier.syncs,
            write_busy_ns: self.write_busy_ns - earlier.write_busy_ns,
            sync_busy_ns: self.sync_busy_ns - earlier.sync_busy_ns,
            idle_ns: self.idle_ns - earlier.idle_ns,
        }
    }

    /// Sums two shards' counts.
    pub fn plus(&self, other: &IoSnapshot) -> IoSnapshot {
        IoSnapshot {
            writes: self.writes + other.writes,
            write_bytes: self.write_bytes + other.write_bytes,
            syncs: self.syncs + other.syncs,
            write_busy_ns: self.write_busy_ns + other.write_busy_ns,
            sync_busy_ns: self.sync_busy_ns + other.sync_busy_ns,
            idle_ns: self.idle_ns + other.idle_ns,
        }
    }
}

impl IoCounters {
    /// The current counts.
    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            writes: self.writes.get(),
            write_bytes: self.write_bytes.get(),
            syncs: self.syncs.get(),
            write_busy_ns: self.write_busy_ns.get(),
            sync_busy_ns: self.sync_busy_ns.get(),
            idle_ns: self.idle_ns.get(),
        }
    }

    /// An I/O is submitted: ends an idle stretch.
    fn begin(&self) -> Instant {
        let now = Instant::now();
        if let Some(since) = self.idle_since.take() {
            self.idle_ns
                .set(self.idle_ns.get() + now.duration_since(since).as_nanos() as u64);
        }
        self.in_flight.set(self.in_flight.get() + 1);
        now
    }

    /// An I/O completed: adds its latency to `busy_ns` and may start an idle stretch.
    fn end(&self, busy_ns: &Cell<u64>, started: Instant) {
        let now = Instant::now();
        busy_ns.set(busy_ns.get() + now.duration_since(started).as_nanos() as u64);
        self.in_flight.set(self.in_flight.get() - 1);
        if self.in_flight.get() == 0 {
            self.idle_since.set(Some(now));
        }
    }
}

/// [`DirectStorage`] with counters; see the module doc.
pub struct CountingStorage {
    inner: DirectStorage,
    counters: Rc<IoCounters>,
    null_io: bool,
}

impl CountingStorage {
    /// Direct storage counting into `counters`. With `null_io`, writes and syncs of segment data
    /// complete at once without touching the disk: what is left is the engine's own CPU cost.
    pub fn new(counters: Rc<IoCounters>, null_io: bool) -> Self {
        Self {
            inner: DirectStorage,
            counters,
            null_io,
        }
    }
}

struct CountingFile {
    inner: Box<dyn WriteFile>,
    counters: Rc<IoCounters>,
    null_io: bool,
}

impl WriteFile for CountingFile {
    fn alloc_buffer(&self, size_bytes: usize) -> DmaBuffer {
        self.inner.alloc_buffer(size_bytes)
    }

    fn write_at(&self, buffer: DmaBuffer, position: u64) -> IoFuture<'_, usize> {
        let counters = &self.counters;
        counters.writes.set(counters.writes.get() + 1);
        counters
            .write_bytes
            .set(counters.write_bytes.get() + buffer.len() as u64);
        if self.null_io {
            let length = buffer.len();
            return Box::pin(async move { Ok(length) });
        }
        let write = self.inner.write_at(buffer, position);
        Box::pin(async move {
            let started = self.counters.begin();
            let result = write.await;
            self.counters.end(&self.counters.write_busy_ns, started);
            result
        })
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        self.counters.syncs.set(self.counters.syncs.get() + 1);
        if self.null_io {
            return Box::pin(async { Ok(()) });
        }
        let sync = self.inner.sync_data();
        Box::pin(async move {
            let started = self.counters.begin();
            let result = sync.await;
            self.counters.end(&self.counters.sync_busy_ns, started);
            result
        })
    }

    fn truncate(&self, length_bytes: u64) -> IoFuture<'_, ()> {
        self.inner.truncate(length_bytes)
    }

    fn preallocate(&self, length_bytes: u64) -> IoFuture<'_, ()> {
        self.inner.preallocate(length_bytes)
    }

    fn close(self: Box<Self>) -> IoFuture<'static, ()> {
        self.inner.close()
    }
}

impl Storage for CountingStorage {
    fn open_write<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn WriteFile>> {
        let (counters, null_io) = (self.counters.clone(), self.null_io);
        Box::pin(async move {
            let inner = self.inner.open_write(path).await?;
            Ok(Box::new(CountingFile {
                inner,
                counters,
                null_io,
            }) as Box<dyn WriteFile>)
        })
    }

    fn open_read(&self, path: &Path) -> std::io::Result<std::fs::File> {
        self.inner.open_read(path)
    }

    fn write_file_atomic<'a>(&'a self, path: &'a Path, contents: &'a [u8]) -> IoFuture<'a, ()> {
        self.inner.write_file_atomic(path, contents)
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        self.inner.remove_file(path)
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        self.inner.sync_dir(dir)
    }
}
