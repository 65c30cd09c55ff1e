//! OffsetCommit: validated against the group (generation or KIP-848 member epoch) and stored in
//! `__consumer_offsets`; answered once durable.

use std::sync::Arc;

use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        return all_failed(&req, ResponseError::InvalidGroupId);
    }
    let shape = req.clone();
    let image = ctx.broker.image();
    match ctx.broker.groups.call(&ctx.broker, &group_id, |tx| Request::OffsetCommit { req, version, image, tx }).await {
        Ok(r) => r,
        Err(e) => all_failed(&shape, e),
    }
}

fn all_failed(req: &OffsetCommitRequest, e: ResponseError) -> OffsetCommitResponse {
    crate::coordinator::group::commit_response(req, |_, _| Some(e))
}
