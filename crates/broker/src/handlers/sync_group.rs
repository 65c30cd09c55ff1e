//! SyncGroup: members wait for the leader's assignment; the leader's request stores it.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.0.to_string();
    let mut resp = match ctx
        .broker
        .groups
        .call(&ctx.broker, &group_id, |tx| Request::Sync { req, image: ctx.broker.image(), tx })
        .await
    {
        Ok(r) => r,
        Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
    };
    if version < 5 {
        resp.protocol_type = None;
        resp.protocol_name = None;
    }
    resp
}
