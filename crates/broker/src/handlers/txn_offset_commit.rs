//! TxnOffsetCommit (v0-v5): a transactional producer's offsets for a consumer group, written to the group's
//! `__consumer_offsets` partition as part of the producer's transaction and made visible by its COMMIT marker
//! (see coordinator/group/txn_offsets.rs). v3+ carries the member id, generation and instance id, validated
//! against the group as Kafka does.

use std::sync::Arc;

use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use crate::coordinator::group::{txn_offset_commit_failed, Request, GROUP_METADATA_TOPIC_NAME};
use crate::coordinator::txn::{produce_error, AppendGuard, TRANSACTION_VERSION};
use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        return txn_offset_commit_failed(&req, ResponseError::InvalidGroupId);
    }
    // KIP-890: the group's __consumer_offsets partition must be in the producer's transaction (AddOffsetsToTxn), or,
    // from v5 under transactions v2, is added to it here; as Kafka's coordinator runtime verifies before the write.
    // The guard keeps this producer's markers out until the offsets are written.
    let (error, _guard) = verify_in_transaction(ctx, version, &req, &group_id).await;
    if let Some(e) = error {
        return txn_offset_commit_failed(&req, e);
    }
    let shape = req.clone();
    let image = ctx.broker.image();
    match ctx.broker.groups.call(&ctx.broker, &group_id, |tx| Request::TxnOffsetCommit { req, image, tx }).await {
        Ok(r) => r,
        Err(e) => txn_offset_commit_failed(&shape, e),
    }
}

async fn verify_in_transaction(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    req: &TxnOffsetCommitRequest,
    group_id: &str,
) -> (Option<ResponseError>, Vec<AppendGuard>) {
    let broker = &ctx.broker;
    let add = version >= 5 && TRANSACTION_VERSION >= 2;
    if !add && !broker.txns.partition_verification() {
        return (None, Vec::new());
    }
    let partition = (GROUP_METADATA_TOPIC_NAME.to_string(), broker.groups.partition_of(broker, group_id));
    let check = [(req.producer_id.0, req.producer_epoch, vec![partition])];
    let (results, guards) = broker.txns.verify_for_append(broker, &req.transactional_id.0, &check, add).await;
    let error = results.into_iter().flatten().find_map(|(_, e)| e);
    (error.map(|e| produce_error(e, version >= 4)), guards)
}
