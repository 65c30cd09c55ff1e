//! EndTxn, as Kafka's KafkaApis.handleEndTxnRequest: commit or abort the producer's transaction. v5 speaks
//! transactions version 2 (KIP-890): the epoch moves on with every transaction and the response carries the producer
//! id and epoch to continue with. Older versions keep the epoch (transactions v1).

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: EndTxnRequest) -> EndTxnResponse {
    let broker = &ctx.broker;
    let tv = if version >= 5 { 2 } else { 0 };
    let result = broker
        .txns
        .end_txn(broker, &req.transactional_id.0, req.producer_id.0, req.producer_epoch, req.committed, tv)
        .await;
    match result {
        Ok((producer_id, epoch)) => {
            EndTxnResponse::default().with_producer_id(ProducerId(producer_id)).with_producer_epoch(epoch)
        }
        Err(e) => {
            // PRODUCER_FENCED exists from v2 (KIP-588); older clients know it as INVALID_PRODUCER_EPOCH.
            let e =
                if e == ResponseError::ProducerFenced && version < 2 { ResponseError::InvalidProducerEpoch } else { e };
            EndTxnResponse::default().with_error_code(e.code()).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)
        }
    }
}
