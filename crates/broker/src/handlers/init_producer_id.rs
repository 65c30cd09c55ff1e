//! InitProducerId for idempotent producers (transactional id null), as Kafka's KafkaApis.handleInitProducerIdRequest
//! and TransactionCoordinator.handleInitProducerId answer it: a fresh producer id with epoch 0 every time (an
//! idempotent producer that sends its current id and epoch to bump them, KIP-360, also gets a new id).
//!
//! Transactional ids need the transaction coordinator, which this broker does not run yet; they are answered with
//! COORDINATOR_NOT_AVAILABLE, Kafka's error when the `__transaction_state` coordinator cannot serve (the client retries
//! until its own timeout rather than failing on a misleading authorization or fencing error).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let error = |e: ResponseError| {
        InitProducerIdResponse::default().with_error_code(e.code()).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)
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
        tracing::debug!(transactional_id = %txn_id.0, "InitProducerId for a transactional id: no transaction coordinator");
        return error(ResponseError::CoordinatorNotAvailable);
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
