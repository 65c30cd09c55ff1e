//! Writing transaction markers: what the transaction coordinator does (in process, or through the WriteTxnMarkers
//! API) when a transaction ends. For every partition of the transaction a COMMIT or ABORT control batch is appended
//! with the producer's id and epoch and the coordinator's epoch; the log checks the epochs, ends the producer's
//! open transaction there (moving the last stable offset) and indexes an aborted one. The result of a partition is
//! known once its marker is durable, as Kafka appends markers with acks=all.
//!
//! Markers on `__consumer_offsets` also settle the transactional offset commits of that producer: the group
//! coordinator makes them committed offsets (COMMIT) or drops them (ABORT).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use strom_log::{ControlType, EndTxnMarker};

use crate::broker::Broker;
use crate::coordinator::group::GROUP_METADATA_TOPIC_NAME;
use crate::errors::log_error_code;
use crate::partition::Partition;

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionResult {
    Commit,
    Abort,
}

impl TransactionResult {
    /// WriteTxnMarkers' `transaction_result`: true commits.
    pub fn from_wire(commit: bool) -> TransactionResult {
        if commit {
            TransactionResult::Commit
        } else {
            TransactionResult::Abort
        }
    }

    fn control_type(self) -> ControlType {
        match self {
            TransactionResult::Commit => ControlType::Commit,
            TransactionResult::Abort => ControlType::Abort,
        }
    }
}

type TopicPartition = (String, i32);

/// How long a marker may wait for its fsync (Kafka writes markers with the request timeout, 30 s by default).
const DURABLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Appends the marker for `producer_id`/`producer_epoch` to each partition and waits until each is durable.
/// Returns every partition asked for with its outcome: `Ok` once the marker is on disk; otherwise Kafka's error
/// (UNKNOWN_TOPIC_OR_PARTITION, INVALID_PRODUCER_EPOCH for an older producer epoch, TRANSACTION_COORDINATOR_FENCED
/// for an older coordinator epoch, KAFKA_STORAGE_ERROR, REQUEST_TIMED_OUT).
pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    result: TransactionResult,
    partitions: Vec<(String, i32)>,
) -> Vec<((String, i32), Result<(), ResponseError>)> {
    let marker = EndTxnMarker { control_type: result.control_type(), coordinator_epoch };
    let resolved: Vec<(TopicPartition, Option<Arc<Partition>>)> = partitions
        .into_iter()
        .map(|(t, p)| {
            let part = broker.replicas.get(&t, p);
            ((t, p), part)
        })
        .collect();
    let appended = tokio::task::spawn_blocking(move || {
        resolved
            .into_iter()
            .map(|(tp, part)| {
                let outcome = match part {
                    None => Err(ResponseError::UnknownTopicOrPartition),
                    Some(part) => match part.append_marker(producer_id, producer_epoch, marker) {
                        Ok(info) => Ok((part, info.last_offset + 1)),
                        Err(e) => {
                            tracing::debug!(topic = %tp.0, partition = tp.1, producer_id, error = %e, "transaction marker refused");
                            Err(log_error_code(&e))
                        }
                    },
                };
                (tp, outcome)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let appended = match appended {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "transaction marker task failed");
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(appended.len());
    let mut settled_offsets_partitions = Vec::new();
    for (tp, outcome) in appended {
        let r = match outcome {
            Err(e) => Err(e),
            Ok((part, end)) => match tokio::time::timeout(DURABLE_TIMEOUT, part.wait_durable(end)).await {
                Ok(()) => {
                    if tp.0 == GROUP_METADATA_TOPIC_NAME {
                        settled_offsets_partitions.push(tp.1);
                    }
                    Ok(())
                }
                Err(_) => Err(ResponseError::RequestTimedOut),
            },
        };
        out.push((tp, r));
    }
    if !settled_offsets_partitions.is_empty() {
        broker.groups.on_transaction_completed(broker, producer_id, &settled_offsets_partitions, result).await;
    }
    out
}
