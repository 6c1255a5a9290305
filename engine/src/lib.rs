//! runnel-engine: the durable partition log.
//!
//! Owns record-batch validation, segments, offset and time indexes, the per-shard tail cache,
//! retention, compaction (the cleaner) and crash recovery. Knows nothing about networking or the
//! cluster.
//!
//! Every [`PartitionLog`] lives on exactly one shard (one glommio executor thread) and is never
//! touched from another (it is `!Send`); the [`ReadPlan`]s it hands out are `Send`, so the shard
//! that owns a client connection can execute them. See `ARCHITECTURE.md` for the on-disk format.

pub mod batch;
pub mod cache;
mod checkpoint;
pub mod codec;
pub mod compact;
pub mod fault;
pub mod index;
pub mod io;
mod log;
pub mod notify;
pub mod plan;
pub mod producer_state;
mod recovery;
pub mod retention;
pub mod segment;
mod writer;

pub use cache::CacheBudget;
pub use checkpoint::{RecoveryMode, RecoveryStats};
pub use compact::{CleanSummary, CleanerConfig};
pub use log::{
    AppendResult, CleanupPolicy, FlushPolicy, LogConfig, LogContext, LogError, PartitionLog,
    TimestampMatch, TimestampType,
};
pub use plan::{send_plan, send_plan_blocking, FileRange, ReadChunk, ReadPlan};
