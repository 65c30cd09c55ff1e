//! DeleteRecords (kafka-delete-records.sh, AdminClient.deleteRecords): advances each partition's log start offset,
//! deleting the segments that fall wholly below it; consumers behind it get OFFSET_OUT_OF_RANGE.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use crate::dispatch::ConnectionContext;
use crate::errors::log_error_code;
use crate::partition::Partition;
use crate::topic_name;

/// `offset = -1` asks for everything below the high watermark (DeleteRecordsRequest.HIGH_WATERMARK).
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let broker = ctx.broker.clone();
    let topics = tokio::task::spawn_blocking(move || {
        req.topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let partition = broker.replicas.get(&t.name.0, p.partition_index);
                        let (low_watermark, error) = match partition {
                            None => (-1, Some(ResponseError::UnknownTopicOrPartition)),
                            // Kafka's ReplicaManager: "Cannot delete records of internal topic".
                            Some(_) if topic_name::is_internal(&t.name.0) => {
                                (-1, Some(ResponseError::InvalidTopicException))
                            }
                            Some(part) => match delete_below(&part, p.offset) {
                                Ok(low) => (low, None),
                                Err(e) => (-1, Some(e)),
                            },
                        };
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(low_watermark)
                            .with_error_code(error.map_or(0, |e| e.code()))
                    })
                    .collect();
                DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
            })
            .collect::<Vec<_>>()
    })
    .await;
    match topics {
        Ok(t) => DeleteRecordsResponse::default().with_topics(t),
        Err(e) => {
            tracing::error!(error = %e, "delete records task failed");
            DeleteRecordsResponse::default()
        }
    }
}

/// Kafka's Partition.deleteRecordsOnLeader: compact-only logs refuse (their history is the table), offsets beyond
/// the high watermark are out of range, and the answer is the new low watermark. Blocking.
fn delete_below(partition: &Partition, offset: i64) -> Result<i64, ResponseError> {
    if !partition.config().log.cleanup_policy.delete {
        return Err(ResponseError::PolicyViolation);
    }
    let hw = partition.high_watermark();
    let target = if offset == HIGH_WATERMARK { hw } else { offset };
    if target < 0 || target > hw {
        return Err(ResponseError::OffsetOutOfRange);
    }
    partition.log().advance_log_start_offset(target).map_err(|e| log_error_code(&e))?;
    tracing::info!(topic = %partition.topic, partition = partition.index, log_start_offset = partition.log_start_offset(), "deleted records");
    Ok(partition.log_start_offset())
}
