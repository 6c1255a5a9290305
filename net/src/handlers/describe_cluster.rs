//! DescribeCluster (60): the cluster id, the controller and the brokers, which on this single
//! node are all this broker. Version 1 asks for an endpoint type; we only are a broker endpoint.

use super::str_bytes;
use crate::shard::Shard;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
/// `EndpointType.BROKER`.
const ENDPOINT_BROKER: i8 = 1;

/// The `AclOperation` ids Kafka defines on the cluster resource, all allowed without an
/// authorizer: CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10,
/// ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12. Sent as a bit set (bit n = operation n).
const CLUSTER_OPERATIONS: &[i32] = &[5, 7, 8, 9, 10, 11, 12];

/// Handles the request.
pub fn handle(shard: &Shard, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default().with_error_message(None);
    if request.endpoint_type != ENDPOINT_BROKER {
        return response
            .with_error_code(MISMATCHED_ENDPOINT_TYPE)
            .with_error_message(Some(str_bytes(
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
            )));
    }
    let config = &shard.config;
    let node_id = BrokerId(config.node_id);
    let operations = if request.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
            .iter()
            .fold(0i32, |bits, operation| bits | (1 << operation))
    } else {
        i32::MIN
    };
    response
        .with_cluster_id(str_bytes(&shard.metadata().cluster_id))
        .with_controller_id(node_id)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node_id)
            .with_host(str_bytes(&config.advertised_host))
            .with_port(config.advertised_port)
            .with_rack(None)])
        .with_cluster_authorized_operations(operations)
}
