//! DescribeCluster: this broker, the cluster id and the controller (itself, on one node).

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::dispatch::ConnectionContext;

/// Endpoint types of KIP-919.
const BROKERS: i8 = 1;

pub fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = &ctx.broker;
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_error_message(None);
    if version >= 1 && req.endpoint_type != BROKERS {
        // Controllers are not reachable as a separate endpoint type on this broker.
        resp.endpoint_type = req.endpoint_type;
        return resp
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str("The broker only serves the brokers endpoint type")));
    }
    let me = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.config.node_id))
        .with_host(StrBytes::from_string(ctx.advertised.host.clone()))
        .with_port(ctx.advertised.port as i32)
        .with_rack(broker.config.rack.clone().map(StrBytes::from_string));
    resp.brokers = vec![me];
    if !req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations = i32::MIN;
    }
    resp
}
