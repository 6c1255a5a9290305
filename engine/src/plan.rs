//! Read plans: what a read of the log returns, and the code that sends one into a socket.
//!
//! A plan is built on the shard that owns the log and is `Send`, so the shard that owns the
//! client connection can execute it: memory chunks are written from the tail cache, file chunks
//! are `sendfile`d from the segment's read-only buffered descriptor. A file chunk holds an `Arc` of
//! that descriptor (its lease): deleting the segment unlinks the name, but the inode and its bytes
//! stay readable until the last lease is dropped.

use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A byte range of a segment file, below the log's durable position when the plan was made.
#[derive(Clone, Debug)]
pub struct FileRange {
    /// The segment's read-only descriptor; holding it keeps the bytes alive.
    pub file: Arc<File>,
    /// Start position in the file.
    pub position: u64,
    /// Length in bytes.
    pub length: u64,
}

/// One piece of a plan.
#[derive(Clone, Debug)]
pub enum ReadChunk {
    /// Batches still held in the shard's tail cache.
    Memory(Bytes),
    /// Batches on disk, to be sent with `sendfile`.
    File(FileRange),
}

impl ReadChunk {
    /// Bytes this chunk covers.
    pub fn len(&self) -> u64 {
        match self {
            ReadChunk::Memory(bytes) => bytes.len() as u64,
            ReadChunk::File(range) => range.length,
        }
    }

    /// True when the chunk covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer to [`crate::PartitionLog::read`]: whole batches, in offset order, starting with the
/// batch that contains the requested offset.
#[derive(Clone, Debug, Default)]
pub struct ReadPlan {
    /// The pieces, in order; their concatenation is a sequence of whole record batches.
    pub chunks: Vec<ReadChunk>,
    /// The log's durable end offset when the plan was made (the high watermark on one node).
    pub durable_end_offset: i64,
    /// The log start offset when the plan was made.
    pub log_start_offset: i64,
}

impl ReadPlan {
    /// Total bytes in the plan.
    pub fn len_bytes(&self) -> u64 {
        self.chunks.iter().map(ReadChunk::len).sum()
    }

    /// True when the plan holds no data.
    pub fn is_empty(&self) -> bool {
        self.len_bytes() == 0
    }

    /// Copies the plan's bytes into memory (for tests, small reads and index scans).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let total = usize::try_from(self.len_bytes()).map_err(io::Error::other)?;
        let mut out = Vec::with_capacity(total);
        for chunk in &self.chunks {
            match chunk {
                ReadChunk::Memory(bytes) => out.extend_from_slice(bytes),
                ReadChunk::File(range) => {
                    let start = out.len();
                    out.resize(start + range.length as usize, 0);
                    range
                        .file
                        .read_exact_at(&mut out[start..], range.position)?;
                }
            }
        }
        Ok(out)
    }
}

/// Sends the plan into `socket` (a stream socket, blocking or not), `sendfile` for file chunks and
/// `write` for memory chunks. Blocks the calling thread until all bytes are out: call it from a
/// blocking thread pool (see [`send_plan`]), never on a reactor. Returns the bytes sent.
///
/// The caller keeps `socket` open until this returns.
pub fn send_plan_blocking(plan: &ReadPlan, socket: RawFd) -> io::Result<u64> {
    let mut sent_total = 0u64;
    for chunk in &plan.chunks {
        match chunk {
            ReadChunk::Memory(bytes) => {
                write_all_fd(socket, bytes)?;
                sent_total += bytes.len() as u64;
            }
            ReadChunk::File(range) => {
                sendfile_all(socket, range)?;
                sent_total += range.length;
            }
        }
    }
    Ok(sent_total)
}

/// Sends the plan from glommio's blocking thread pool, so a page-cache miss in `sendfile` never
/// stalls the reactor (DESIGN.md §7). Must be called inside a glommio executor.
pub async fn send_plan(plan: ReadPlan, socket: RawFd) -> io::Result<u64> {
    glommio::executor()
        .spawn_blocking(move || send_plan_blocking(&plan, socket))
        .await
}

fn write_all_fd(socket: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable slice for its whole length.
        let written =
            unsafe { libc::write(socket, bytes.as_ptr().cast::<libc::c_void>(), bytes.len()) };
        if written < 0 {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => wait_writable(socket)?,
                _ => return Err(error),
            }
            continue;
        }
        bytes = &bytes[written as usize..];
    }
    Ok(())
}

fn sendfile_all(socket: RawFd, range: &FileRange) -> io::Result<()> {
    let mut offset = libc::off_t::try_from(range.position).map_err(io::Error::other)?;
    let mut remaining = range.length;
    while remaining > 0 {
        let count = usize::try_from(remaining.min(1 << 30)).map_err(io::Error::other)?;
        // SAFETY: both descriptors are open (the file is held by the plan's lease, the socket by
        // the caller) and `offset` is a valid pointer to a local.
        let sent = unsafe { libc::sendfile(socket, range.file.as_raw_fd(), &mut offset, count) };
        if sent < 0 {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => wait_writable(socket)?,
                _ => return Err(error),
            }
            continue;
        }
        if sent == 0 {
            // The file is shorter than the plan said: it was truncated under the lease.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than its read plan (truncated after the plan was made)",
            ));
        }
        remaining -= sent as u64;
    }
    Ok(())
}

fn wait_writable(socket: RawFd) -> io::Result<()> {
    let mut poll_fd = libc::pollfd {
        fd: socket,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll_fd, 1, 30_000) };
        if ready > 0 {
            return Ok(());
        }
        if ready == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "socket not writable for 30 s",
            ));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
