//! OffsetDelete: removes a group's committed offsets for partitions of topics it does not consume.

use std::sync::Arc;

use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    match ctx.broker.groups.call(&ctx.broker, &group_id, |tx| Request::OffsetDelete { req, tx }).await {
        Ok(r) => r,
        Err(e) => OffsetDeleteResponse::default().with_error_code(e.code()),
    }
}
