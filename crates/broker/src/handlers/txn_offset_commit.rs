//! TxnOffsetCommit (v0-v5): a transactional producer's offsets for a consumer group, written to the group's
//! `__consumer_offsets` partition as part of the producer's transaction and made visible by its COMMIT marker
//! (see coordinator/group/txn_offsets.rs). v3+ carries the member id, generation and instance id, validated
//! against the group as Kafka does.

use std::sync::Arc;

use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use crate::coordinator::group::{txn_offset_commit_failed, Request};
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        return txn_offset_commit_failed(&req, ResponseError::InvalidGroupId);
    }
    let shape = req.clone();
    let image = ctx.broker.image();
    match ctx.broker.groups.call(&ctx.broker, &group_id, |tx| Request::TxnOffsetCommit { req, image, tx }).await {
        Ok(r) => r,
        Err(e) => txn_offset_commit_failed(&shape, e),
    }
}
