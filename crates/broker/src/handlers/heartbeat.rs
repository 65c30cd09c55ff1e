//! Heartbeat: keeps a classic group member's session alive and tells it when a rebalance started.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    match ctx.broker.groups.call(&ctx.broker, &group_id, |tx| Request::Heartbeat { req, tx }).await {
        Ok(r) => r,
        Err(e) => HeartbeatResponse::default().with_error_code(e.code()),
    }
}
