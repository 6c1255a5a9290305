//! A fault-injecting [`Storage`] for tests: fail the Nth operation, or drop every write that was
//! not yet made durable by a sync (simulated power loss).
//!
//! It wraps [`DirectStorage`] and keeps an undo log per file: before each write, preallocation or
//! truncation it saves the bytes and length it is about to change; a `sync_data` of that file
//! clears its undo log. [`FaultyStorage::power_loss`] replays the undo logs backwards, so every
//! file holds exactly what it held at its last sync. Directory entries and atomically written small
//! files are treated as durable at once (the log syncs the directory right after changing it).
//!
//! Shard-local (`Rc`); used only by tests, but public so integration tests can use it.

use crate::io::{DirectStorage, IoFuture, Storage, WriteFile};
use glommio::io::DmaBuffer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Which operations count towards [`FaultPlan::fail_at_op`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Every write, sync, truncate, preallocate and metadata operation.
    Any,
    /// Only `write_at`.
    Write,
    /// Only `sync_data`.
    Sync,
}

/// When to fail.
#[derive(Clone, Copy, Debug)]
pub struct FaultPlan {
    /// Which operations are counted.
    pub kind: FaultKind,
    /// The 1-based number of the counted operation that fails; every later one fails too.
    pub fail_at_op: u64,
}

struct UndoRecord {
    position: u64,
    old_bytes: Vec<u8>,
    old_length: u64,
}

#[derive(Default)]
struct FaultState {
    plan: Option<FaultPlan>,
    counted_ops: u64,
    failures: u64,
    undo: HashMap<PathBuf, Vec<UndoRecord>>,
}

impl FaultState {
    fn check(&mut self, kind: FaultKind) -> io::Result<()> {
        let Some(plan) = self.plan else { return Ok(()) };
        if plan.kind != FaultKind::Any && plan.kind != kind {
            return Ok(());
        }
        self.counted_ops += 1;
        if self.counted_ops >= plan.fail_at_op {
            self.failures += 1;
            return Err(io::Error::other("injected I/O fault"));
        }
        Ok(())
    }
}

/// See the module doc.
#[derive(Clone, Default)]
pub struct FaultyStorage {
    inner: DirectStorage,
    state: Rc<RefCell<FaultState>>,
}

impl FaultyStorage {
    /// A storage that injects nothing until [`FaultyStorage::set_plan`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts failing according to `plan` (counting from now).
    pub fn set_plan(&self, plan: Option<FaultPlan>) {
        let mut state = self.state.borrow_mut();
        state.plan = plan;
        state.counted_ops = 0;
    }

    /// How many operations have been failed so far.
    pub fn failures(&self) -> u64 {
        self.state.borrow().failures
    }

    /// Reverts every file to its content at its last successful sync. Call it after the log using
    /// this storage was dropped (not closed), as if the machine lost power.
    pub fn power_loss(&self) -> io::Result<()> {
        let undo = std::mem::take(&mut self.state.borrow_mut().undo);
        for (path, records) in undo {
            let file = match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            for record in records.iter().rev() {
                file.set_len(record.old_length.max(record.position))?;
                file.write_all_at(&record.old_bytes, record.position)?;
                file.set_len(record.old_length)?;
            }
            file.sync_all()?;
        }
        self.state.borrow_mut().plan = None;
        Ok(())
    }

    fn record_undo(&self, path: &Path, position: u64, length: u64) -> io::Result<()> {
        let file = std::fs::File::open(path)?;
        let old_length = file.metadata()?.len();
        let end = (position + length).min(old_length);
        let mut old_bytes = vec![0u8; end.saturating_sub(position) as usize];
        file.read_exact_at(&mut old_bytes, position)?;
        self.state
            .borrow_mut()
            .undo
            .entry(path.to_path_buf())
            .or_default()
            .push(UndoRecord {
                position,
                old_bytes,
                old_length,
            });
        Ok(())
    }
}

struct FaultyFile {
    inner: Box<dyn WriteFile>,
    path: PathBuf,
    storage: FaultyStorage,
}

impl WriteFile for FaultyFile {
    fn alloc_buffer(&self, size_bytes: usize) -> DmaBuffer {
        self.inner.alloc_buffer(size_bytes)
    }

    fn write_at(&self, buffer: DmaBuffer, position: u64) -> IoFuture<'_, usize> {
        Box::pin(async move {
            self.storage.state.borrow_mut().check(FaultKind::Write)?;
            self.storage
                .record_undo(&self.path, position, buffer.len() as u64)?;
            self.inner.write_at(buffer, position).await
        })
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.storage.state.borrow_mut().check(FaultKind::Sync)?;
            self.inner.sync_data().await?;
            self.storage.state.borrow_mut().undo.remove(&self.path);
            Ok(())
        })
    }

    fn truncate(&self, length_bytes: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.storage.state.borrow_mut().check(FaultKind::Any)?;
            self.storage
                .record_undo(&self.path, length_bytes, u64::MAX - length_bytes)?;
            self.inner.truncate(length_bytes).await
        })
    }

    fn preallocate(&self, length_bytes: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.storage.state.borrow_mut().check(FaultKind::Any)?;
            self.storage.record_undo(&self.path, length_bytes, 0)?;
            self.inner.preallocate(length_bytes).await
        })
    }

    fn close(self: Box<Self>) -> IoFuture<'static, ()> {
        self.inner.close()
    }
}

impl Storage for FaultyStorage {
    fn open_write<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn WriteFile>> {
        Box::pin(async move {
            self.state.borrow_mut().check(FaultKind::Any)?;
            let inner = self.inner.open_write(path).await?;
            Ok(Box::new(FaultyFile {
                inner,
                path: path.to_path_buf(),
                storage: self.clone(),
            }) as Box<dyn WriteFile>)
        })
    }

    fn open_read(&self, path: &Path) -> io::Result<std::fs::File> {
        self.inner.open_read(path)
    }

    fn write_file_atomic<'a>(&'a self, path: &'a Path, contents: &'a [u8]) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.state.borrow_mut().check(FaultKind::Any)?;
            self.inner.write_file_atomic(path, contents).await
        })
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.state.borrow_mut().check(FaultKind::Any)?;
            self.state.borrow_mut().undo.remove(path);
            self.inner.remove_file(path).await
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.state.borrow_mut().check(FaultKind::Sync)?;
            self.inner.sync_dir(dir).await
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.state.borrow_mut().check(FaultKind::Any)?;
            self.inner.rename(from, to).await?;
            // The file's unsynced changes move with it; whatever `to` held is gone.
            let mut state = self.state.borrow_mut();
            state.undo.remove(to);
            if let Some(records) = state.undo.remove(from) {
                state.undo.insert(to.to_path_buf(), records);
            }
            Ok(())
        })
    }
}
