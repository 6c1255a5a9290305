//! runnel-net: the Kafka wire protocol (framing, request/response headers, API handlers,
//! connection loop, cross-shard routing) and the small async client used by the CLI and the
//! load generator.
//!
//! **Stub.** Nothing is implemented yet; the broker issue fills this crate. It depends only on
//! `runnel-engine` and must not know about cluster membership (that is `runnel-replication`).
