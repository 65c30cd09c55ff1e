//! InitProducerId, as Kafka's KafkaApis.handleInitProducerIdRequest and TransactionCoordinator.handleInitProducerId
//! answer it. Idempotent producers (transactional id null) get a fresh producer id with epoch 0 every time (one that
//! sends its current id and epoch to bump them, KIP-360, also gets a new id). A transactional id goes to the
//! transaction coordinator, which bumps its epoch and fences the previous producer.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let error = |e: ResponseError| {
        // PRODUCER_FENCED exists from v4 (KIP-588); older clients know the same condition as INVALID_PRODUCER_EPOCH.
        let e = if e == ResponseError::ProducerFenced && version < 4 { ResponseError::InvalidProducerEpoch } else { e };
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    // Kafka: both set (an epoch bump) or both -1; anything else is malformed.
    if (req.producer_id.0 == -1) != (req.producer_epoch == -1) {
        return error(ResponseError::InvalidRequest);
    }
    if let Some(txn_id) = &req.transactional_id {
        if txn_id.0.is_empty() {
            // TransactionCoordinator.handleInitProducerId: an empty transactional id is malformed.
            return error(ResponseError::InvalidRequest);
        }
        let expected = (req.producer_id.0 != -1).then_some((req.producer_id.0, req.producer_epoch));
        let broker = &ctx.broker;
        return match broker.txns.init_producer_id(broker, &txn_id.0, req.transaction_timeout_ms, expected).await {
            Ok((id, epoch)) => {
                InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
            }
            Err(e) => error(e),
        };
    }
    let broker = ctx.broker.clone();
    match tokio::task::spawn_blocking(move || broker.producer_ids.generate(&broker)).await {
        Ok(Ok(id)) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "producer id allocation failed");
            error(e.error)
        }
        Err(e) => {
            tracing::error!(error = %e, "producer id allocation task failed");
            error(ResponseError::UnknownServerError)
        }
    }
}
