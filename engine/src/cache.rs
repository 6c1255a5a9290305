//! The tail cache: recently appended (durable) batches kept in memory so fresh data is served
//! without touching the disk. Direct-I/O writes bypass the page cache, so without this the first
//! read of fresh data would be a disk read (DESIGN.md §7).
//!
//! Each log keeps its own run of contiguous batches; all logs of a shard charge one
//! [`CacheBudget`], so the shard's cache memory is bounded by the budget. When a log cannot fit a
//! new batch it first evicts its own oldest batches; if it still cannot, it clears its run and
//! caches nothing until the budget has room again. Lives on the log's shard.

use bytes::Bytes;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

/// The memory bound shared by all tail caches of one shard.
#[derive(Clone, Debug)]
pub struct CacheBudget {
    used_bytes: Rc<Cell<u64>>,
    limit_bytes: u64,
}

impl CacheBudget {
    /// A budget of `limit_bytes` for one shard.
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            used_bytes: Rc::new(Cell::new(0)),
            limit_bytes,
        }
    }

    /// Bytes currently charged by all logs of the shard.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.get()
    }

    fn try_charge(&self, bytes: u64) -> bool {
        let used = self.used_bytes.get();
        if used + bytes > self.limit_bytes {
            return false;
        }
        self.used_bytes.set(used + bytes);
        true
    }

    fn release(&self, bytes: u64) {
        let used = self.used_bytes.get();
        debug_assert!(used >= bytes);
        self.used_bytes.set(used - bytes);
    }
}

/// One cached batch.
#[derive(Clone, Debug)]
pub struct CachedBatch {
    /// Base offset.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// The stamped batch bytes, exactly as on disk.
    pub bytes: Bytes,
}

/// One log's run of cached batches, contiguous in offsets.
#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    charged_bytes: u64,
    budget: CacheBudget,
}

impl TailCache {
    /// An empty cache charging `budget`.
    pub fn new(budget: CacheBudget) -> Self {
        Self {
            batches: VecDeque::new(),
            charged_bytes: 0,
            budget,
        }
    }

    /// Adds a batch that just became durable. Keeps the run contiguous.
    pub fn insert(&mut self, batch: CachedBatch) {
        if self
            .batches
            .back()
            .is_some_and(|last| last.last_offset + 1 != batch.base_offset)
        {
            self.clear();
        }
        let size = batch.bytes.len() as u64;
        while !self.budget.try_charge(size) {
            if !self.evict_oldest() {
                return;
            }
        }
        self.charged_bytes += size;
        self.batches.push_back(batch);
    }

    /// The cached batches from the one containing `offset`, whole, until `max_bytes` is reached
    /// (always at least one batch). `None` when `offset` is not cached.
    pub fn read(&self, offset: i64, max_bytes: u64) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        if start == self.batches.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut total = 0u64;
        for batch in self.batches.range(start..) {
            let size = batch.bytes.len() as u64;
            if !out.is_empty() && total + size > max_bytes {
                break;
            }
            total += size;
            out.push(batch.bytes.clone());
        }
        Some(out)
    }

    /// Drops batches whose last offset is at or after `offset` (log truncation).
    pub fn truncate(&mut self, offset: i64) {
        while self
            .batches
            .back()
            .is_some_and(|batch| batch.last_offset >= offset)
        {
            let batch = self.batches.pop_back().expect("checked non-empty");
            self.release(batch.bytes.len() as u64);
        }
    }

    /// Drops batches that begin below `offset` (the cleaner rewrote that part of the log, so
    /// the cached copies are stale).
    pub fn discard_below(&mut self, offset: i64) {
        while self
            .batches
            .front()
            .is_some_and(|batch| batch.base_offset < offset)
        {
            self.evict_oldest();
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        while self.evict_oldest() {}
    }

    fn evict_oldest(&mut self) -> bool {
        match self.batches.pop_front() {
            Some(batch) => {
                self.release(batch.bytes.len() as u64);
                true
            }
            None => false,
        }
    }

    fn release(&mut self, size: u64) {
        self.charged_bytes -= size;
        self.budget.release(size);
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.budget.release(self.charged_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base_offset: i64, records: i64, size: usize) -> CachedBatch {
        CachedBatch {
            base_offset,
            last_offset: base_offset + records - 1,
            bytes: Bytes::from(vec![base_offset as u8; size]),
        }
    }

    #[test]
    fn budget_is_shared_and_never_exceeded() {
        let budget = CacheBudget::new(1000);
        let mut first = TailCache::new(budget.clone());
        let mut second = TailCache::new(budget.clone());
        for index in 0..10 {
            first.insert(batch(index * 2, 2, 300));
            second.insert(batch(index * 2, 2, 300));
            assert!(budget.used_bytes() <= 1000);
        }
        drop(first);
        drop(second);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn read_returns_whole_batches_from_the_containing_one() {
        let mut cache = TailCache::new(CacheBudget::new(1 << 20));
        for index in 0..5 {
            cache.insert(batch(10 + index * 3, 3, 100));
        }
        assert!(cache.read(9, 1000).is_none());
        assert_eq!(cache.read(11, 1000).expect("cached").len(), 5);
        assert_eq!(cache.read(11, 250).expect("cached").len(), 2);
        assert_eq!(cache.read(11, 1).expect("cached").len(), 1);
        assert!(cache.read(25, 1000).is_none());
        cache.truncate(20);
        assert_eq!(cache.read(10, 10_000).expect("cached").len(), 3);
    }

    #[test]
    fn a_gap_restarts_the_run() {
        let mut cache = TailCache::new(CacheBudget::new(1 << 20));
        cache.insert(batch(0, 2, 10));
        cache.insert(batch(5, 2, 10));
        assert!(cache.read(0, 100).is_none());
        assert_eq!(cache.read(5, 100).expect("cached").len(), 1);
    }
}
