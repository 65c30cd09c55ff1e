//! ConsumerGroupHeartbeat (KIP-848): join, heartbeat and leave for consumer-protocol groups, with the
//! assignment computed by the broker.

use std::sync::Arc;

use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    client_id: String,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    let client_host = super::join_group::client_host(ctx);
    let image = ctx.broker.image();
    match ctx
        .broker
        .groups
        .call(&ctx.broker, &group_id, |tx| Request::ConsumerHeartbeat {
            req,
            version,
            client_id,
            client_host,
            image,
            tx,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => ConsumerGroupHeartbeatResponse::default().with_error_code(e.code()),
    }
}
