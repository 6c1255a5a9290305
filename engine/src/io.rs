//! The narrow storage trait all log I/O goes through, and its direct-I/O implementation.
//!
//! Writes go through [`WriteFile`] (O_DIRECT, aligned buffers, io_uring via glommio). Reads of
//! committed data use plain buffered read-only descriptors ([`Storage::open_read`]) so the network
//! layer can `sendfile` from them; the platform facts in DESIGN.md §7 (measured again by this
//! crate's stress test) say direct writes and buffered reads stay coherent as long as readers stop
//! at the durable position.
//!
//! Everything here runs on the shard that owns the log. A test swaps in
//! [`crate::fault::FaultyStorage`] to fail the Nth operation or to simulate power loss.

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

/// The block size all direct writes are aligned to.
pub const BLOCK_BYTES: u64 = 4096;

/// A boxed, shard-local I/O future. Boxing costs one allocation per group commit, which is noise
/// next to the write itself, and keeps the log free of storage type parameters.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

/// A file opened for aligned direct writes.
pub trait WriteFile {
    /// Allocates a buffer suitable for [`WriteFile::write_at`] (aligned to [`BLOCK_BYTES`]).
    fn alloc_buffer(&self, size_bytes: usize) -> DmaBuffer;
    /// Writes the whole buffer at `position` (both block aligned); returns bytes written.
    fn write_at(&self, buffer: DmaBuffer, position: u64) -> IoFuture<'_, usize>;
    /// `fdatasync`. A failure must never be retried by the caller: the log poisons itself.
    fn sync_data(&self) -> IoFuture<'_, ()>;
    /// Sets the file length.
    fn truncate(&self, length_bytes: u64) -> IoFuture<'_, ()>;
    /// Allocates blocks up to `length_bytes` (the file length grows; new space reads as zeros).
    fn preallocate(&self, length_bytes: u64) -> IoFuture<'_, ()>;
    /// Closes the descriptor.
    fn close(self: Box<Self>) -> IoFuture<'static, ()>;
}

/// Directory and file operations of one log. All paths are absolute or relative to the process.
pub trait Storage {
    /// Opens `path` for direct writes, creating it when absent (never truncating).
    fn open_write<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn WriteFile>>;
    /// Opens `path` read-only and buffered: the descriptor reads and `sendfile`s use.
    fn open_read(&self, path: &Path) -> io::Result<std::fs::File>;
    /// Writes a small file atomically: temp file, fsync, rename over `path`, fsync the directory.
    fn write_file_atomic<'a>(&'a self, path: &'a Path, contents: &'a [u8]) -> IoFuture<'a, ()>;
    /// Removes a file; a file that is already gone is not an error.
    fn remove_file<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;
    /// Makes directory entries (creations, removals, renames) durable.
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()>;
    /// Renames `from` to `to`, atomically replacing `to` if it exists; durable once the
    /// directory is synced. The default is a plain `rename(2)`; wrappers that track files
    /// (fault injection) override it.
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move { std::fs::rename(from, to) })
    }
}

/// The production storage: glommio `DmaFile`s.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectStorage;

impl DirectStorage {
    /// A shared handle, the form [`crate::LogContext`] takes.
    pub fn shared() -> Rc<dyn Storage> {
        Rc::new(DirectStorage)
    }
}

struct DirectFile {
    file: DmaFile,
}

impl WriteFile for DirectFile {
    fn alloc_buffer(&self, size_bytes: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(size_bytes)
    }

    fn write_at(&self, buffer: DmaBuffer, position: u64) -> IoFuture<'_, usize> {
        debug_assert_eq!(position % BLOCK_BYTES, 0);
        debug_assert_eq!(buffer.len() as u64 % BLOCK_BYTES, 0);
        Box::pin(async move { Ok(self.file.write_at(buffer, position).await?) })
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        Box::pin(async move { Ok(self.file.fdatasync().await?) })
    }

    fn truncate(&self, length_bytes: u64) -> IoFuture<'_, ()> {
        Box::pin(async move { Ok(self.file.truncate(length_bytes).await?) })
    }

    fn preallocate(&self, length_bytes: u64) -> IoFuture<'_, ()> {
        Box::pin(async move { Ok(self.file.pre_allocate(length_bytes, false).await?) })
    }

    fn close(self: Box<Self>) -> IoFuture<'static, ()> {
        Box::pin(async move { Ok(self.file.close().await?) })
    }
}

impl Storage for DirectStorage {
    fn open_write<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn WriteFile>> {
        Box::pin(async move {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .dma_open(path)
                .await?;
            Ok(Box::new(DirectFile { file }) as Box<dyn WriteFile>)
        })
    }

    fn open_read(&self, path: &Path) -> io::Result<std::fs::File> {
        std::fs::File::open(path)
    }

    fn write_file_atomic<'a>(&'a self, path: &'a Path, contents: &'a [u8]) -> IoFuture<'a, ()> {
        Box::pin(async move { write_file_atomic_blocking(path, contents) })
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            match std::fs::remove_file(path) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move { std::fs::File::open(dir)?.sync_all() })
    }
}

/// Small metadata files (index footers, checkpoints, markers) are written with plain blocking
/// calls: they are a few KiB, written at roll or shutdown, never on the append path.
pub(crate) fn write_file_atomic_blocking(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let temp_path = temp_path_for(path);
    {
        let mut file = std::fs::File::create(&temp_path)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp_path, path)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// The temporary name an atomic write uses; recovery removes leftovers ending in `.tmp`.
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Rounds `value` down to a block boundary.
pub const fn align_down(value: u64) -> u64 {
    value - value % BLOCK_BYTES
}

/// Rounds `value` up to a block boundary.
pub const fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_BYTES - 1)
}
