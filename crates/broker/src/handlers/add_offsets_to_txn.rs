//! AddOffsetsToTxn, as Kafka's KafkaApis.handleAddOffsetsToTxnRequest: the group's `__consumer_offsets` partition
//! joins the transaction, so that its TxnOffsetCommit is committed or aborted with it.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::ResponseError;

use crate::coordinator::group::GROUP_METADATA_TOPIC_NAME;
use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let broker = &ctx.broker;
    let partition = broker.groups.partition_of(broker, &req.group_id.0);
    let set = BTreeSet::from([(GROUP_METADATA_TOPIC_NAME.to_string(), partition)]);
    let mut e = broker
        .txns
        .add_partitions(broker, &req.transactional_id.0, req.producer_id.0, req.producer_epoch, set, 0, true)
        .await;
    if e == Some(ResponseError::ProducerFenced) && version < 2 {
        // PRODUCER_FENCED exists from v2 (KIP-588); older clients know it as INVALID_PRODUCER_EPOCH.
        e = Some(ResponseError::InvalidProducerEpoch);
    }
    AddOffsetsToTxnResponse::default().with_error_code(e.map_or(0, |e| e.code()))
}
