//! runnel-net: the Kafka wire protocol and the broker's serving loop.
//!
//! Owns framing, request decoding and response encoding (on the `kafka-protocol` structs), the
//! advertised version table, one handler module per API, the per-shard connection loop and the
//! cross-shard routing of partition work over bounded flume channels. Storage is `runnel-engine`;
//! cluster membership will come from `runnel-replication` (today the metadata store here is the
//! single-node controller, living on shard 0).
//!
//! Also the client side of the same protocol ([`client`]): one small async client that the
//! `runnel` CLI (and later the load generator) uses, so the protocol code exists once.

pub mod client;
pub mod codec;
pub mod configs;
pub mod fetch_response;
pub mod frame;
pub mod group;
pub mod group_service;
pub mod handlers;
pub mod metadata;
pub mod server;
pub mod shard;
pub mod versions;
