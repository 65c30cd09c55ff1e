//! Writing a transaction's markers (Kafka's TransactionMarkerChannelManager): a COMMIT or ABORT control record to
//! every partition of the transaction, retried until each one is written, then the shard is told so it can persist
//! the completion. The partitions are this broker's, so markers go straight to the partition side
//! (`crate::txn_markers`) instead of over WriteTxnMarkers requests.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::mpsc;

use super::metadata::{TopicPartition, TxnTransit};
use super::shard::Request;
use super::BrokerRef;
use crate::txn_markers::{write_txn_markers, TransactionResult};

pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub partitions: BTreeSet<TopicPartition>,
    /// The completion to persist once every marker is written.
    pub transit: TxnTransit,
}

/// Kafka's retry backoff for marker requests (its inter-broker channel retries retriable errors).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

pub async fn run(broker: BrokerRef, shard: mpsc::WeakUnboundedSender<Request>, job: MarkerJob) {
    let mut pending: Vec<TopicPartition> = job.partitions.iter().cloned().collect();
    let result = if job.commit { TransactionResult::Commit } else { TransactionResult::Abort };
    while !pending.is_empty() {
        let Some(b) = broker.upgrade() else { return };
        let guard = b.txns.guard_markers(job.producer_id).await;
        let errors =
            write_txn_markers(&b, job.producer_id, job.producer_epoch, job.coordinator_epoch, result, pending.clone())
                .await;
        let image = b.image();
        let mut retry = Vec::new();
        for ((topic, partition), error) in errors {
            match error.err() {
                None => {}
                // The topic was deleted: there is nothing left to mark (Kafka drops such markers too).
                Some(ResponseError::UnknownTopicOrPartition)
                    if image.topic(&topic).is_none_or(|t| !t.partitions.contains_key(&partition)) =>
                {
                    tracing::info!(transactional_id = %job.transactional_id, topic = %topic, partition, "partition gone; its marker is dropped");
                }
                // A newer producer epoch or coordinator owns the partition's transaction state now: this marker is
                // moot, as in Kafka's TransactionMarkerRequestCompletionHandler.
                Some(
                    e @ (ResponseError::InvalidProducerEpoch
                    | ResponseError::ProducerFenced
                    | ResponseError::TransactionCoordinatorFenced),
                ) => {
                    tracing::warn!(transactional_id = %job.transactional_id, topic = %topic, partition, error = ?e, "marker not written; superseded");
                }
                Some(e) => {
                    tracing::debug!(transactional_id = %job.transactional_id, topic = %topic, partition, error = ?e, "marker write failed; retrying");
                    retry.push((topic, partition));
                }
            }
        }
        drop(guard);
        drop(b);
        pending = retry;
        if !pending.is_empty() {
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
    tracing::debug!(transactional_id = %job.transactional_id, commit = job.commit, partitions = job.partitions.len(), "transaction markers written");
    if let Some(tx) = shard.upgrade() {
        let _ = tx.send(Request::MarkersWritten { transactional_id: job.transactional_id, transit: job.transit });
    }
}
