//! The per-shard retention task: every interval it walks the shard's logs and deletes expired or
//! excess sealed segments, a bounded number per log per pass, so a pass never monopolises the
//! shard. The same set of logs feeds the shard's cleaner task (`compact.rs`). Runs on the shard
//! that owns the logs. The set also drives the shard's recovery checkpoints.

use crate::log::PartitionLog;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The logs of one shard that retention looks after. Remove a log before deleting it; a closed
/// log left in the set is skipped (its deletions fail harmlessly and are logged).
#[derive(Clone, Default)]
pub struct RetentionSet {
    logs: Rc<RefCell<Vec<PartitionLog>>>,
}

impl RetentionSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a log.
    pub fn add(&self, log: PartitionLog) {
        self.logs.borrow_mut().push(log);
    }

    /// Removes a log (by directory).
    pub fn remove(&self, log: &PartitionLog) {
        self.logs
            .borrow_mut()
            .retain(|candidate| candidate.dir() != log.dir());
    }

    /// One pass over every log, deleting at most `segments_per_log_max` segments from each.
    /// Returns the number of segments deleted. Errors are logged; a failing log does not stop
    /// the pass.
    pub async fn run_once(&self, now_ms: i64, segments_per_log_max: usize) -> usize {
        let logs: Vec<PartitionLog> = self.logs.borrow().clone();
        let mut deleted = 0;
        for log in logs {
            match log.apply_retention(now_ms, segments_per_log_max).await {
                Ok(count) => deleted += count,
                Err(error) => {
                    tracing::warn!(dir = %log.dir().display(), %error, "retention pass failed")
                }
            }
            glommio::yield_if_needed().await;
        }
        deleted
    }

    /// Spawns this shard's cleaner task over the set's compacted logs (`compact.rs`): it cleans
    /// one log at a time and sleeps `config.backoff_ms` when none needs it, until the set is
    /// dropped.
    pub fn spawn_cleaner(&self, config: crate::compact::CleanerConfig) {
        glommio::spawn_local(crate::compact::run_cleaner(
            Rc::downgrade(&self.logs),
            config,
        ))
        .detach();
    }

    /// Writes a recovery checkpoint of every log whose synced data grew since its last one
    /// ([`PartitionLog::checkpoint`]). Returns how many were written; failures are logged (the
    /// failing log is poisoned) and the pass goes on.
    pub async fn checkpoint_once(&self) -> usize {
        let logs: Vec<PartitionLog> = self.logs.borrow().clone();
        let mut written = 0;
        for log in logs {
            match log.checkpoint().await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(dir = %log.dir().display(), %error, "recovery checkpoint failed")
                }
            }
            glommio::yield_if_needed().await;
        }
        written
    }

    /// Spawns this shard's recovery checkpoint task (Kafka's
    /// `log.flush.offset.checkpoint.interval.ms`): a pass every `interval` until the set is
    /// dropped.
    pub fn spawn_checkpointer(&self, interval: Duration) {
        let weak: Weak<RefCell<Vec<PartitionLog>>> = Rc::downgrade(&self.logs);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                let Some(logs) = weak.upgrade() else { return };
                RetentionSet { logs }.checkpoint_once().await;
            }
        })
        .detach();
    }

    /// Spawns the background task: a pass every `interval` until the set is dropped.
    pub fn spawn(&self, interval: Duration, segments_per_log_max: usize) {
        let weak: Weak<RefCell<Vec<PartitionLog>>> = Rc::downgrade(&self.logs);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                let Some(logs) = weak.upgrade() else { return };
                let set = RetentionSet { logs };
                set.run_once(now_ms(), segments_per_log_max).await;
            }
        })
        .detach();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
