//! ListOffsets: earliest, latest, max timestamp, and the first offset at or after a timestamp (through the log's
//! time index, then the records of the one batch found).

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use strom_log::{validate_batches, ReadResult, RecordWalker, TimestampType};

use crate::dispatch::ConnectionContext;
use crate::errors::log_error_code;
use crate::partition::Partition;

pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
pub const LATEST_TIERED_TIMESTAMP: i64 = -5;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let broker = ctx.broker.clone();
    let read_committed = req.isolation_level == 1;
    let topics = req.topics;
    let result = tokio::task::spawn_blocking(move || {
        topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut resp = match broker.replicas.get(&name, p.partition_index) {
                            None => ListOffsetsPartitionResponse::default()
                                .with_error_code(broker.replicas.not_served_error(&name, p.partition_index).code()),
                            Some(_) if !timestamp_allowed(p.timestamp, version) => {
                                ListOffsetsPartitionResponse::default()
                                    .with_error_code(ResponseError::UnsupportedVersion.code())
                            }
                            Some(part) => lookup(&part, p.timestamp, p.current_leader_epoch, read_committed),
                        };
                        resp.partition_index = p.partition_index;
                        if version < 4 {
                            resp.leader_epoch = -1;
                        }
                        resp
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
            })
            .collect::<Vec<_>>()
    })
    .await;
    match result {
        Ok(topics) => ListOffsetsResponse::default().with_topics(topics),
        Err(e) => {
            tracing::error!(error = %e, "list offsets task failed");
            ListOffsetsResponse::default()
        }
    }
}

/// Special timestamps exist from the request version that introduced them (KIP-734 max timestamp v7, KIP-405
/// earliest local v8, latest tiered v9); Kafka answers UNSUPPORTED_VERSION below that and for unknown ones.
fn timestamp_allowed(timestamp: i64, version: i16) -> bool {
    match timestamp {
        t if t >= 0 => true,
        LATEST_TIMESTAMP | EARLIEST_TIMESTAMP => true,
        MAX_TIMESTAMP => version >= 7,
        EARLIEST_LOCAL_TIMESTAMP => version >= 8,
        LATEST_TIERED_TIMESTAMP => version >= 9,
        _ => false,
    }
}

/// Blocking: one partition's answer.
fn lookup(
    p: &Partition,
    timestamp: i64,
    current_leader_epoch: i32,
    read_committed: bool,
) -> ListOffsetsPartitionResponse {
    let resp = ListOffsetsPartitionResponse::default();
    let epoch = p.leader_epoch();
    if let Some(e) = crate::handlers::leader_epoch_error(current_leader_epoch, epoch) {
        return resp.with_error_code(e.code());
    }
    // read_committed sees nothing at or beyond the LSO, timestamp lookups included (Kafka's lastFetchableOffset).
    let hw = if read_committed { p.last_stable_offset() } else { p.high_watermark() };
    let max_message_bytes = p.config().log.max_message_bytes;
    let found = |offset: i64, ts: i64| resp.clone().with_offset(offset).with_timestamp(ts).with_leader_epoch(epoch);
    match timestamp {
        LATEST_TIMESTAMP => found(hw, -1),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => found(p.log_start_offset(), -1),
        // No tiered storage: nothing is tiered.
        LATEST_TIERED_TIMESTAMP => resp.with_offset(-1).with_timestamp(-1),
        // As Kafka: the record with the log's max timestamp, answered only if it is below the fetchable end (a
        // read_committed client asking while that record's transaction is open gets no offset, not an older one).
        MAX_TIMESTAMP => match p.log().max_timestamp_batch(p.log().log_end_offset()) {
            Ok(Some(batch)) => match record_at_or_after(&batch, None, max_message_bytes) {
                Some((offset, ts)) if offset < hw => found(offset, ts),
                Some(_) => resp.with_offset(-1).with_timestamp(-1),
                None => resp.with_error_code(ResponseError::CorruptMessage.code()),
            },
            Ok(None) => resp.with_offset(-1).with_timestamp(-1),
            Err(e) => resp.with_error_code(log_error_code(&e).code()),
        },
        ts => match p.log().find_batch_by_timestamp(ts, hw) {
            Ok(Some(batch)) => match record_at_or_after(&batch, Some(ts), max_message_bytes) {
                Some((offset, ts)) => found(offset, ts),
                None => resp.with_error_code(ResponseError::CorruptMessage.code()),
            },
            Ok(None) => resp.with_offset(-1).with_timestamp(-1),
            Err(e) => resp.with_error_code(log_error_code(&e).code()),
        },
    }
}

/// Within one stored batch: the first record with timestamp >= `target`, or (no target) the first record holding
/// the batch's max timestamp. LogAppendTime batches give every record the batch's max timestamp.
fn record_at_or_after(batch: &ReadResult, target: Option<i64>, max_message_bytes: u32) -> Option<(i64, i64)> {
    let header = validate_batches(&batch.records, u32::MAX).ok()?.into_iter().next()?;
    if header.timestamp_type() == TimestampType::LogAppendTime {
        return Some((header.base_offset, header.max_timestamp));
    }
    let wanted = target.unwrap_or(header.max_timestamp);
    // Streamed and bounded as produce validation is: a stored batch is never inflated whole.
    let size = u32::try_from(header.total_size()).unwrap_or(u32::MAX);
    let limit = strom_log::decompressed_limit(header.record_count, max_message_bytes.max(size));
    let mut records = RecordWalker::new(&batch.records, &header, limit).ok()?;
    while let Some(r) = records.next().ok()? {
        // Wrapping, as Kafka's long arithmetic; the offset checked, as it comes from a file.
        let ts = header.base_timestamp.wrapping_add(r.timestamp_delta);
        if ts >= wanted {
            return Some((header.base_offset.checked_add(i64::from(r.offset_delta))?, ts));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    /// A stored batch of three records at `base_offset` with timestamps `ts`, `ts + 1`, `ts + 2`, zstd-compressed.
    fn stored(base_offset: i64, ts: i64) -> ReadResult {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: ts + i,
                key: None,
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let opts = RecordEncodeOptions { version: 2, compression: Compression::Zstd };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &opts).unwrap();
        buf[..8].copy_from_slice(&base_offset.to_be_bytes());
        ReadResult { records: buf.freeze(), first_offset: base_offset, last_offset: base_offset + 2 }
    }

    #[test]
    fn finds_the_first_record_at_or_after_a_timestamp() {
        let batch = stored(100, 1_000);
        assert_eq!(record_at_or_after(&batch, Some(1_001), 1 << 20), Some((101, 1_001)));
        assert_eq!(record_at_or_after(&batch, None, 1 << 20), Some((102, 1_002)));
        assert_eq!(record_at_or_after(&batch, Some(5_000), 1 << 20), None);
    }

    #[test]
    fn offsets_past_i64_max_are_corrupt_not_wrapped() {
        // A stored base offset near i64::MAX (only a corrupt file holds one): the record's offset would overflow,
        // which is refused (None: CORRUPT_MESSAGE) instead of wrapping or panicking.
        let batch = stored(i64::MAX - 1, 1_000);
        assert_eq!(record_at_or_after(&batch, Some(1_001), 1 << 20), Some((i64::MAX, 1_001)));
        assert_eq!(record_at_or_after(&batch, Some(1_002), 1 << 20), None);
    }
}
