//! runnel-engine: the durable partition log.
//!
//! Owns record-batch validation, segments, offset and time indexes, the per-shard tail cache,
//! retention and crash recovery. Knows nothing about networking or the cluster.
//!
//! Every [`PartitionLog`] lives on exactly one shard (one glommio executor thread) and is never
//! touched from another; read plans it hands out are `Send` so another shard can execute them.

pub mod batch;
