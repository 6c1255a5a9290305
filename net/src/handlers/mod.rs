//! One module per Kafka API. Each handler turns a decoded request into its response; `dispatch`
//! encodes it. Handlers run on the connection's shard and reach other shards through [`Shard`].

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use crate::codec::{self, Request};
use crate::fetch_response::ResponseParts;
use crate::shard::Shard;
use bytes::BytesMut;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

/// A response ready to write.
pub enum Reply {
    /// A whole encoded frame.
    Frame(BytesMut),
    /// A frame in pieces, some of them file ranges to `sendfile` (Fetch).
    Parts(ResponseParts),
}

/// Handles one request from the client at `peer`; `None` when no response is due (Produce with
/// acks=0) or the request cannot be answered (logged).
pub async fn dispatch(
    shard: &Rc<Shard>,
    peer: Option<std::net::IpAddr>,
    request: Request,
) -> Option<Reply> {
    let Request {
        api_key,
        api_version: version,
        header,
        body,
    } = request;
    let response = match body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle(0)),
        RequestKind::Metadata(request) => {
            ResponseKind::Metadata(metadata::handle(shard, version, request).await)
        }
        RequestKind::CreateTopics(request) => {
            ResponseKind::CreateTopics(create_topics::handle(shard, version, request).await)
        }
        RequestKind::DeleteTopics(request) => {
            ResponseKind::DeleteTopics(delete_topics::handle(shard, request).await)
        }
        RequestKind::InitProducerId(request) => {
            ResponseKind::InitProducerId(init_producer_id::handle(shard, request))
        }
        RequestKind::Produce(request) => {
            let acks = request.acks;
            let response = produce::handle(shard, version, request).await;
            if acks == 0 {
                return None;
            }
            ResponseKind::Produce(response)
        }
        RequestKind::Fetch(request) => {
            let parts = fetch::handle(shard, version, header.correlation_id, request).await;
            return Some(Reply::Parts(parts));
        }
        RequestKind::DescribeConfigs(request) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(shard, request).await)
        }
        RequestKind::AlterConfigs(request) => {
            ResponseKind::AlterConfigs(alter_configs::handle(shard, request).await)
        }
        RequestKind::IncrementalAlterConfigs(request) => ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs::handle(shard, request).await,
        ),
        RequestKind::DescribeCluster(request) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(shard, request))
        }
        RequestKind::CreatePartitions(request) => {
            ResponseKind::CreatePartitions(create_partitions::handle(shard, request).await)
        }
        RequestKind::DeleteRecords(request) => {
            ResponseKind::DeleteRecords(delete_records::handle(shard, request).await)
        }
        RequestKind::OffsetForLeaderEpoch(request) => ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(shard, request).await,
        ),
        RequestKind::ListOffsets(request) => {
            ResponseKind::ListOffsets(list_offsets::handle(shard, request).await)
        }
        RequestKind::FindCoordinator(request) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(shard, version, request))
        }
        RequestKind::JoinGroup(request) => {
            let client_id = header.client_id.as_deref().unwrap_or("").to_string();
            // Kafka reports a member's host as `/<address>` (Java's InetAddress.toString()).
            let client_host = peer.map_or_else(String::new, |ip| format!("/{ip}"));
            let client = (client_id, client_host);
            ResponseKind::JoinGroup(join_group::handle(shard, version, client, request).await)
        }
        RequestKind::SyncGroup(request) => {
            ResponseKind::SyncGroup(sync_group::handle(shard, request).await)
        }
        RequestKind::Heartbeat(request) => {
            ResponseKind::Heartbeat(heartbeat::handle(shard, request).await)
        }
        RequestKind::LeaveGroup(request) => {
            ResponseKind::LeaveGroup(leave_group::handle(shard, version, request).await)
        }
        RequestKind::OffsetCommit(request) => {
            ResponseKind::OffsetCommit(offset_commit::handle(shard, request).await)
        }
        RequestKind::OffsetFetch(request) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(shard, version, request).await)
        }
        RequestKind::DescribeGroups(request) => {
            ResponseKind::DescribeGroups(describe_groups::handle(shard, request).await)
        }
        RequestKind::ListGroups(request) => {
            ResponseKind::ListGroups(list_groups::handle(shard, request).await)
        }
        RequestKind::DeleteGroups(request) => {
            ResponseKind::DeleteGroups(delete_groups::handle(shard, request).await)
        }
        RequestKind::OffsetDelete(request) => {
            ResponseKind::OffsetDelete(offset_delete::handle(shard, request).await)
        }
        other => {
            tracing::warn!(
                ?api_key,
                "no handler for {:?}",
                std::mem::discriminant(&other)
            );
            return None;
        }
    };
    match codec::encode_response(api_key, version, header.correlation_id, &response) {
        Ok(bytes) => Some(Reply::Frame(bytes)),
        Err(error) => {
            tracing::error!(?api_key, version, %error, "encoding a response failed");
            None
        }
    }
}

/// A `StrBytes` from a `&str`.
pub(crate) fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}
