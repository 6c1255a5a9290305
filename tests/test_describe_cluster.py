"""DescribeCluster (60): the cluster id, the controller and the one broker. kafka-python (and
the Java admin) send DescribeCluster; librdkafka answers describe_cluster from Metadata, so it
checks that both agree. A request for the controller endpoint type is refused."""

from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient
from kafka.protocol.admin.cluster import DescribeClusterRequest, DescribeClusterResponse

from client_helpers import RawConnection

MISMATCHED_ENDPOINT_TYPE = 114


def test_cluster_id_controller_and_broker(broker):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    from_metadata = client.describe_cluster().result(30)
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = kp.describe_cluster()
    finally:
        kp.close()
    assert len(described["cluster_id"]) == 22
    assert described["cluster_id"] == from_metadata.cluster_id
    assert described["controller_id"] == 1 == from_metadata.controller.id
    assert described["brokers"] == [
        {"broker_id": 1, "host": "127.0.0.1", "port": broker.port, "rack": None}]
    # No authorizer: every operation Kafka defines on the cluster resource.
    assert sorted(described["authorized_operations"]) == sorted([
        "CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
        "IDEMPOTENT_WRITE"])
    # The id is persisted: the same after a restart.
    broker.restart(clean=True)
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    again = client.describe_cluster().result(30)
    assert again.cluster_id == described["cluster_id"]


def test_controller_endpoint_type_is_refused(broker):
    connection = RawConnection(broker)
    try:
        response = connection.call(
            DescribeClusterRequest(include_cluster_authorized_operations=False, endpoint_type=2),
            DescribeClusterResponse, 1)
    finally:
        connection.close()
    assert response.error_code == MISMATCHED_ENDPOINT_TYPE
    assert response.brokers == []
