//! runnel-replication: cluster metadata (topics, partitions, leaders, ISR), the controller,
//! follower fetchers, high-watermark logic, and coordinator state that must replicate.
//!
//! **Stub.** Nothing is implemented yet; the cluster issues fill this crate. A single-node
//! implementation of `runnel-net`'s metadata traits will live here first.
